// cpp-httplib (Debian's libcpp-httplib-dev) serves the requests: a small, well-kept
// HTTP/1.1 server with a thread pool, enough for a scrape every few seconds and an
// operator's curl; Boost.Beast would bring Boost and coroutine plumbing for no gain here.
#include "http.h"

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "format.h"
#include "serve.h"
#include "slimta/ascii.h"
#include "slimta/host_port.h"
#include "slimta/ip_networks.h"
#include "status_page.h"

namespace slimta::cli {

QueueGauges::QueueGauges(QueueStorage& storage) : storage_(storage), thread_([this] { scan(); }) {}

QueueGauges::~QueueGauges() {
  stop_ = true;
  thread_.join();
}

double QueueGauges::messages() const {
  std::lock_guard lock(mu_);
  return snapshot_.messages;
}

double QueueGauges::held() const {
  std::lock_guard lock(mu_);
  return snapshot_.held;
}

double QueueGauges::scan_seconds() const {
  std::lock_guard lock(mu_);
  return snapshot_.scan_seconds;
}

double QueueGauges::oldest_age() const {
  std::lock_guard lock(mu_);
  double oldest = snapshot_.oldest;
  return oldest > 0 ? std::max(0.0, now() - oldest) : 0;
}

QueueSnapshot QueueGauges::snapshot() const {
  std::lock_guard lock(mu_);
  return snapshot_;
}

void QueueGauges::scan() {
  while (!stop_) {
    auto began = std::chrono::steady_clock::now();
    try {
      QueueSnapshot next;
      ShapeBuilder shape(now());
      auto stream = storage_.load();
      while (auto entry = stream->next()) {
        if (stop_) return;
        try {
          QueuedMessage msg = storage_.get(entry->id);
          ++next.messages;
          shape.add(msg);
          if (msg.hold) {
            ++next.held;
            if (next.held_messages.size() < 50)
              next.held_messages.push_back(message_json(entry->id, msg));
          }
          double received = msg.envelope.timestamp;
          if (received > 0 && (next.oldest == 0 || received < next.oldest)) next.oldest = received;
        } catch (const KeyError&) {
          // delivered since the listing
        }
      }
      next.shape = shape.finish();
      next.taken = now();
      next.scan_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
      std::lock_guard lock(mu_);
      snapshot_ = std::move(next);
    } catch (const QueueError& e) {
      spdlog::warn("http: the queue gauges could not scan the storage: {}", e.what());
    }
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    auto pause = std::chrono::duration<double>(std::max(5.0, 10 * took));
    for (auto until = std::chrono::steady_clock::now() + pause;
         !stop_ && std::chrono::steady_clock::now() < until;)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

StorageProbe::StorageProbe(QueueStorage& storage)
    : storage_(storage), thread_([this] {
        std::unique_lock lock(mu_);
        while (true) {
          cv_.wait(lock, [this] { return stop_ || asked_; });
          if (stop_) return;
          lock.unlock();
          std::string answer;
          try {
            storage_.get("slimta-readyz-probe");
          } catch (const KeyError&) {
            // the storage answered
          } catch (const QueueError& e) {
            answer = std::string("the storage is not reachable: ") + e.what();
          }
          lock.lock();
          answer_ = std::move(answer);
          asked_ = false;
          ++round_;
          cv_.notify_all();
        }
      }) {}

StorageProbe::~StorageProbe() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::string StorageProbe::check(std::chrono::milliseconds limit) {
  std::unique_lock lock(mu_);
  uint64_t round = round_;
  if (!asked_) {  // else join the question under way
    asked_ = true;
    cv_.notify_all();
  }
  if (!cv_.wait_for(lock, limit, [&] { return round_ != round; })) {
    return fmt::format("the storage did not answer within {} ms", limit.count());
  }
  return answer_;
}

// Each minute is closed within a second of its end, by a thread of its own.
Activity::Activity(metrics::Registry& registry)
    : counters_(delivery_counters(registry)), thread_([this] {
        std::unique_lock lock(mu_);
        while (!stop_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; }))
          roll(now());
      }) {}

Activity::~Activity() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

std::array<uint64_t, 4> Activity::totals() const {
  return {counters_.delivered.value(), counters_.deferred.value(), counters_.failed.value(),
          counters_.bounced.value()};
}

// Closes the minutes that ended: what the counters gained during each.
void Activity::roll(Timestamp t) {
  Timestamp minute = std::floor(t / 60) * 60;
  if (minutes_.empty()) {
    minutes_.push_back(Minute{minute});
    base_ = totals();
    return;
  }
  if (minutes_.back().start == minute) return;
  std::array<uint64_t, 4> now_totals = totals();
  Minute& closing = minutes_.back();
  closing.delivered = now_totals[0] - base_[0];
  closing.deferred = now_totals[1] - base_[1];
  closing.failed = now_totals[2] - base_[2];
  closing.bounced = now_totals[3] - base_[3];
  base_ = now_totals;
  for (Timestamp m = closing.start + 60; m <= minute; m += 60) minutes_.push_back(Minute{m});
  while (minutes_.size() > 60) minutes_.pop_front();
}

void Activity::deferred(const std::string& reply) {
  std::lock_guard lock(mu_);
  std::string reason = reply.substr(0, 120);
  if (!reasons_.count(reason) && reasons_.size() >= 100) reason = "(other replies)";
  ++reasons_[reason];
}

std::vector<Activity::Minute> Activity::last_hour() {
  std::lock_guard lock(mu_);
  roll(now());
  std::vector<Minute> out(minutes_.begin(), minutes_.end());
  std::array<uint64_t, 4> t = totals();  // the minute under way, so far
  out.back().delivered = t[0] - base_[0];
  out.back().deferred = t[1] - base_[1];
  out.back().failed = t[2] - base_[2];
  out.back().bounced = t[3] - base_[3];
  return out;
}

std::vector<std::pair<std::string, uint64_t>> Activity::top_deferrals(size_t n) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, uint64_t>> out(reasons_.begin(), reasons_.end());
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (out.size() > n) out.resize(n);
  return out;
}

struct HttpServer::Impl {
  explicit Impl(HttpContext c) : context(std::move(c)) {}
  HttpContext context;
  std::string token;
  httplib::Server server;
  std::thread thread;
};

namespace {

std::string read_token(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  if (!in || !std::getline(in, token)) {
    throw InvalidArgument("--http-token-file '" + path + "': cannot read a token from it");
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.size() < 16) {
    throw InvalidArgument("--http-token-file '" + path +
                          "': the token must have at least 16 characters");
  }
  return token;
}

// RFC 4648 base64 (Basic authentication); "" for anything that is not.
std::string base64_decode(std::string_view in) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : in) {
    if (c == '=') break;
    size_t v = kAlphabet.find(c);
    if (v == std::string_view::npos) return "";
    bits = (bits << 6) | static_cast<uint32_t>(v);
    if ((count += 6) >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xff);
    }
  }
  return out;
}

// A comparison that takes as long whatever the bytes: no timing hint to a guesser.
bool same(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

void json_reply(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(dump(body) + "\n", "application/json");
}

void error_reply(httplib::Response& res, int status, const std::string& message) {
  json_reply(res, status, {{"error", message}});
}

// The API's filters: a recipient domain, a state, a minimum age since receipt.
struct Filter {
  std::string domain;
  std::string state;  // queued | held | active
  double older_than = -1;

  static Filter parse(const httplib::Request& req) {
    Filter f;
    f.domain = to_lower(req.get_param_value("domain"));
    f.state = req.get_param_value("state");
    if (!f.state.empty() && f.state != "queued" && f.state != "held" && f.state != "active")
      throw InvalidArgument("state='" + f.state + "': queued, held or active");
    if (req.has_param("older-than")) {
      std::string v = req.get_param_value("older-than");
      char* end = nullptr;
      f.older_than = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(f.older_than >= 0))
        throw InvalidArgument("older-than='" + v + "': a number of seconds");
    }
    return f;
  }
  bool matches(const QueuedMessage& m, Timestamp t) const {
    if (!state.empty() && message_state(m, t) != state) return false;
    if (older_than >= 0 && t - m.envelope.timestamp < older_than) return false;
    if (domain.empty()) return true;
    return std::any_of(m.envelope.recipients.begin(), m.envelope.recipients.end(),
                       [&](const std::string& r) { return domain_of(r) == domain; });
  }
};

// Every stored id, sorted: the order pages follow.
std::vector<std::string> sorted_ids(QueueStorage& storage) {
  std::vector<std::string> ids;
  auto stream = storage.load();
  while (auto e = stream->next()) ids.push_back(std::move(e->id));
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

HttpServer::HttpServer(const HttpOptions& options, HttpContext context)
    : impl_(std::make_unique<Impl>(std::move(context))) {
  auto [host, port] = parse_host_port(options.listen, "--http", std::nullopt, /*port_zero=*/true);
  if (!options.token_file.empty()) {
    impl_->token = read_token(options.token_file);
  } else if (!IpNetworks::parse("127.0.0.0/8,::1/128").contains(host)) {
    throw InvalidArgument("--http " + options.listen +
                          ": without --http-token-file the HTTP listener may only bind a "
                          "loopback address (127.0.0.1, ::1)");
  }
  Impl& impl = *impl_;
  HttpContext& ctx = impl.context;
  httplib::Server& server = impl.server;
  server.set_default_headers({{"Cache-Control", "no-store"},
                              {"X-Content-Type-Options", "nosniff"},
                              {"Content-Security-Policy", "default-src 'none'"}});
  // What a client may send: a body over the door's limit is read no further.
  size_t max_size = ctx.reception.options()->max_message_size;
  server.set_payload_max_length(max_size ? max_size + 1 : size_t{1} << 30);
  // The page: with a token, the token as Bearer, or as a browser sends it: Basic, any
  // user name, the token as password.
  server.Get("/", [&impl, &ctx](const httplib::Request& req, httplib::Response& res) {
    if (!impl.token.empty()) {
      std::string auth = req.get_header_value("Authorization");
      bool basic = auth.starts_with("Basic ") && [&] {
        std::string decoded = base64_decode(auth.substr(6));
        size_t colon = decoded.find(':');
        return colon != std::string::npos && same(decoded.substr(colon + 1), impl.token);
      }();
      if (!basic && !same(auth, "Bearer " + impl.token)) {
        res.set_header("WWW-Authenticate", "Basic realm=\"slimta-queue\"");
        res.status = 401;
        res.set_content("the token is required (as the password)\n", "text/plain");
        return;
      }
    }
    res.headers.erase("Content-Security-Policy");  // the default one forbids its style
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
                   "frame-ancestors 'none'; base-uri 'none'");
    res.set_content(
        status_page(ctx.gauges.snapshot(), ctx.activity, ctx.reception.options()->hostname),
        "text/html; charset=utf-8");
  });
  server.Get("/metrics", [&ctx](const httplib::Request&, httplib::Response& res) {
    res.set_content(ctx.registry.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  server.Get("/readyz", [&ctx](const httplib::Request&, httplib::Response& res) {
    std::string why = ctx.ready();
    res.status = why.empty() ? 200 : 503;
    res.set_content(why.empty() ? "ready\n" : why + "\n", "text/plain");
  });

  // /api/: the token first, then the handler; its mistakes are 400s and 404s, storage
  // faults 503s (details to the log, not to the client).
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  auto api = [&impl](Handler handler) {
    return [&impl, handler](const httplib::Request& req, httplib::Response& res) {
      if (!impl.token.empty() &&
          !same(req.get_header_value("Authorization"), "Bearer " + impl.token)) {
        res.set_header("WWW-Authenticate", "Bearer");
        return error_reply(res, 401, "a bearer token is required (--http-token-file)");
      }
      try {
        handler(req, res);
      } catch (const KeyError&) {
        error_reply(res, 404, "no such message");
      } catch (const InvalidArgument& e) {
        error_reply(res, 400, e.what());
      } catch (const QueueError& e) {
        spdlog::error("http: {} {}: {}", req.method, req.path, e.what());
        error_reply(res, 503, "the storage failed; try again");
      }
    };
  };
  server.Get("/api/v1/info", api([&ctx](const httplib::Request&, httplib::Response& res) {
               json_reply(res, 200,
                          {{"messages", static_cast<uint64_t>(ctx.gauges.messages())},
                           {"held", static_cast<uint64_t>(ctx.gauges.held())},
                           {"oldest_message_age_seconds", ctx.gauges.oldest_age()},
                           {"scan_seconds", ctx.gauges.scan_seconds()}});
             }));
  server.Get("/api/v1/shape", api([&ctx](const httplib::Request&, httplib::Response& res) {
               std::ostringstream ignored;
               json_reply(res, 200, shape_json(compute_shape(ctx.storage, ignored)));
             }));
  server.Get("/api/v1/messages", api([&ctx](const httplib::Request& req, httplib::Response& res) {
               Filter filter = Filter::parse(req);
               size_t limit = 100;
               if (req.has_param("limit")) {
                 std::string v = req.get_param_value("limit");
                 char* end = nullptr;
                 long n = std::strtol(v.c_str(), &end, 10);
                 if (v.empty() || *end != '\0' || n < 1 || n > 1000)
                   throw InvalidArgument("limit='" + v + "': 1 to 1000");
                 limit = static_cast<size_t>(n);
               }
               std::string cursor = req.get_param_value("cursor");
               std::vector<std::string> ids = sorted_ids(ctx.storage);
               auto it = std::upper_bound(ids.begin(), ids.end(), cursor);
               nlohmann::json page = nlohmann::json::array();
               Timestamp t = now();
               std::string last;
               for (; it != ids.end() && page.size() < limit; ++it) {
                 try {
                   QueuedMessage msg = ctx.storage.get(*it);
                   last = *it;
                   if (filter.matches(msg, t)) page.push_back(message_json(*it, msg));
                 } catch (const KeyError&) {
                   // delivered since the listing
                 }
               }
               bool more = it != ids.end();
               json_reply(res, 200,
                          {{"messages", page},
                           {"next_cursor", more ? nlohmann::json(last) : nlohmann::json()}});
             }));
  server.Get(R"(/api/v1/messages/([A-Za-z0-9_-]+))",
             api([&ctx](const httplib::Request& req, httplib::Response& res) {
               std::string id = req.matches[1];
               json_reply(res, 200, show_json(id, ctx.storage.get(id)));
             }));
  server.Delete(R"(/api/v1/messages/([A-Za-z0-9_-]+))",
                api([&ctx](const httplib::Request& req, httplib::Response& res) {
                  std::string id = req.matches[1];
                  ctx.storage.get(id);  // 404 if it is not there
                  json_reply(res, 200, {{"id", id}, {"done", act_on(ctx.storage, "remove", id)}});
                }));
  server.Post(R"(/api/v1/messages/([A-Za-z0-9_-]+)/(retry|hold|release|bounce))",
              api([&ctx](const httplib::Request& req, httplib::Response& res) {
                std::string id = req.matches[1];
                std::optional<std::string> reason;
                if (req.has_param("reason")) reason = req.get_param_value("reason");
                json_reply(
                    res, 200,
                    {{"id", id}, {"done", act_on(ctx.storage, req.matches[2].str(), id, reason)}});
              }));
  server.Post(R"(/api/v1/messages/(retry|hold|release|remove|bounce))",
              api([&ctx](const httplib::Request& req, httplib::Response& res) {
                Filter filter = Filter::parse(req);
                std::optional<std::string> reason;
                if (req.has_param("reason")) reason = req.get_param_value("reason");
                std::string action = req.matches[1];
                nlohmann::json done = nlohmann::json::object();
                Timestamp t = now();
                for (const std::string& id : sorted_ids(ctx.storage)) {
                  try {
                    if (!filter.matches(ctx.storage.get(id), t)) continue;
                    done[act_on(ctx.storage, action, id, reason)].push_back(id);
                  } catch (const KeyError&) {
                    // delivered since the listing
                  }
                }
                json_reply(res, 200, done);
              }));
  // Injection, as python-slimta's EdgeWsgi: the envelope in headers, the message as body.
  server.Post(
      "/api/v1/messages", api([&ctx, &impl](const httplib::Request& req, httplib::Response& res) {
        if (req.get_header_value("Content-Type").rfind("message/rfc822", 0) != 0)
          return error_reply(res, 415, "the body must be message/rfc822");
        if (!req.has_header("X-Envelope-Sender"))
          throw InvalidArgument("X-Envelope-Sender is missing (empty for the null sender)");
        Envelope env;
        env.sender = req.get_header_value("X-Envelope-Sender");
        for (size_t i = 0; i < req.get_header_value_count("X-Envelope-Recipient"); ++i) {
          std::string v = req.get_header_value("X-Envelope-Recipient", i);
          for (size_t at = 0; at <= v.size();) {
            size_t comma = std::min(v.find(',', at), v.size());
            std::string r = v.substr(at, comma - at);
            r.erase(0, r.find_first_not_of(' '));
            r.erase(r.find_last_not_of(' ') + 1);
            if (!r.empty()) env.recipients.push_back(r);
            at = comma + 1;
          }
        }
        if (env.recipients.empty()) throw InvalidArgument("X-Envelope-Recipient is missing");
        if (std::string why = ctx.relay_refusal(req.remote_addr, env, !impl.token.empty());
            !why.empty())
          return error_reply(res, 403, why);
        env.parse(req.body);
        env.client.ip = req.remote_addr;
        env.client.protocol = "HTTP";
        ReceptionResult result = ctx.reception.receive(std::move(env));
        if (result.queued()) return json_reply(res, 201, {{"id", result.id}});
        // The door's SMTP reply, as SMTP would have said it; a 4xx may be sent again.
        bool again = result.outcome == ReceptionResult::Outcome::deferred;
        if (again) res.set_header("Retry-After", "60");
        json_reply(res,
                   again                             ? 503
                   : result.reply.starts_with("552") ? 413
                                                     : 400,
                   {{"error", "message not accepted: " + result.reply}, {"reply", result.reply}});
      }));
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      error_reply(res, res.status, res.status == 413 ? "too large" : "no such resource");
  });
  int bound =
      port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) throw QueueError("cannot listen on " + options.listen + " (--http)");
  address_ =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(bound);
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
}

HttpServer::~HttpServer() {
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace slimta::cli
