// cpp-httplib (Debian's libcpp-httplib-dev) serves the requests: a small, well-kept
// HTTP/1.1 server with a thread pool, enough for a scrape every few seconds and an
// operator's curl; Boost.Beast would bring Boost and coroutine plumbing for no gain here.
#include "http.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "format.h"
#include "serve.h"
#include "slimta/ip_networks.h"

namespace slimta::cli {

QueueGauges::QueueGauges(QueueStorage& storage) : storage_(storage), thread_([this] { scan(); }) {}

QueueGauges::~QueueGauges() {
  stop_ = true;
  thread_.join();
}

double QueueGauges::oldest_age() const {
  double oldest = oldest_.load();
  return oldest > 0 ? std::max(0.0, now() - oldest) : 0;
}

void QueueGauges::scan() {
  while (!stop_) {
    auto began = std::chrono::steady_clock::now();
    try {
      double messages = 0, held = 0, oldest = 0;
      auto stream = storage_.load();
      while (auto entry = stream->next()) {
        if (stop_) return;
        try {
          QueuedMessage msg = storage_.get(entry->id);
          ++messages;
          if (msg.hold) ++held;
          double received = msg.envelope.timestamp;
          if (received > 0 && (oldest == 0 || received < oldest)) oldest = received;
        } catch (const KeyError&) {
          // delivered since the listing
        }
      }
      messages_ = messages;
      held_ = held;
      oldest_ = oldest;
    } catch (const QueueError& e) {
      spdlog::warn("http: the queue gauges could not scan the storage: {}", e.what());
    }
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    scan_seconds_ = took;
    auto pause = std::chrono::duration<double>(std::max(5.0, 10 * took));
    for (auto until = std::chrono::steady_clock::now() + pause;
         !stop_ && std::chrono::steady_clock::now() < until;)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

struct HttpServer::Impl {
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

}  // namespace

HttpServer::HttpServer(const HttpOptions& options, metrics::Registry& registry,
                       const QueueGauges& gauges, Readiness ready)
    : impl_(std::make_unique<Impl>()) {
  auto [host, port] = parse_host_port(options.listen, "--http", /*port_zero=*/true);
  std::string token;
  if (!options.token_file.empty()) {
    token = read_token(options.token_file);
  } else if (!IpNetworks::parse("127.0.0.0/8,::1/128").contains(host)) {
    throw InvalidArgument("--http " + options.listen +
                          ": without --http-token-file the HTTP listener may only bind a "
                          "loopback address (127.0.0.1, ::1)");
  }
  httplib::Server& server = impl_->server;
  server.set_default_headers({{"Cache-Control", "no-store"},
                              {"X-Content-Type-Options", "nosniff"},
                              {"Content-Security-Policy", "default-src 'none'"}});
  server.Get("/metrics", [&registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  server.Get("/readyz", [ready](const httplib::Request&, httplib::Response& res) {
    std::string why = ready();
    res.status = why.empty() ? 200 : 503;
    res.set_content(why.empty() ? "ready\n" : why + "\n", "text/plain");
  });
  server.Get("/api/v1/info", [token, &gauges](const httplib::Request& req, httplib::Response& res) {
    if (!token.empty() && !same(req.get_header_value("Authorization"), "Bearer " + token)) {
      res.set_header("WWW-Authenticate", "Bearer");
      return json_reply(res, 401, {{"error", "a bearer token is required (--http-token-file)"}});
    }
    json_reply(res, 200,
               {{"messages", static_cast<uint64_t>(gauges.messages())},
                {"held", static_cast<uint64_t>(gauges.held())},
                {"oldest_message_age_seconds", gauges.oldest_age()},
                {"scan_seconds", gauges.scan_seconds()}});
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) json_reply(res, res.status, {{"error", "no such resource"}});
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
