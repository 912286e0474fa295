// cpp-httplib (Debian's libcpp-httplib-dev) serves the requests: a small, well-kept
// HTTP/1.1 server with a thread pool, enough for a scrape every few seconds and an
// operator's curl; Boost.Beast would bring Boost and coroutine plumbing for no gain here.
#include "http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <thread>

#include "http_routes.h"
#include "slimta/host_port.h"
#include "slimta/ip_networks.h"

namespace slimta::daemon {

struct HttpServer::Impl {
  explicit Impl(HttpContext c) : context(std::move(c)) {}
  void routes();
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

// The status page's check: with a token, the token as Bearer, or as a browser sends it:
// Basic, any user name, the token as password.
bool page_allowed(const std::string& token, const httplib::Request& req) {
  if (token.empty()) return true;
  std::string auth = req.get_header_value("Authorization");
  if (auth.starts_with("Basic ")) {
    std::string decoded = base64_decode(auth.substr(6));
    size_t colon = decoded.find(':');
    return colon != std::string::npos && same(decoded.substr(colon + 1), token);
  }
  return same(auth, "Bearer " + token);
}

}  // namespace

HttpBinding http_binding(const HttpOptions& options) {
  HttpBinding b;
  b.listen = options.listen;
  HostPort at = parse_host_port(options.listen, "--http", std::nullopt, /*port_zero=*/true);
  b.host = at.host;
  b.port = at.port;
  if (!options.token_file.empty()) {
    b.token = read_token(options.token_file);
  } else if (!IpNetworks::parse("127.0.0.0/8,::1/128").contains(b.host)) {
    throw InvalidArgument("--http " + options.listen +
                          ": without --http-token-file the HTTP listener may only bind a "
                          "loopback address (127.0.0.1, ::1)");
  }
  return b;
}

HttpServer::HttpServer(const HttpBinding& binding, HttpContext context)
    : impl_(std::make_unique<Impl>(std::move(context))) {
  const auto& [listen, host, port, token] = binding;
  impl_->token = token;
  impl_->context.api_token = !impl_->token.empty();
  impl_->routes();
  httplib::Server& server = impl_->server;
  int bound =
      port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) throw QueueError("cannot listen on " + listen + " (--http)");
  address_ =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(bound);
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
}

// Each route's function (http_routes.h) behind its check: the page's token (Bearer or
// Basic), /api/'s (Bearer), whose mistakes are 400s and 404s and whose storage faults
// 503s (details to the log, not to the client).
void HttpServer::Impl::routes() {
  server.set_default_headers({{"Cache-Control", "no-store"},
                              {"X-Content-Type-Options", "nosniff"},
                              {"Content-Security-Policy", "default-src 'none'"}});
  // What a client may send: a body over the door's limit is read no further.
  size_t max_size = context.reception.options()->max_message_size;
  server.set_payload_max_length(max_size ? max_size + 1 : size_t{1} << 30);
  auto open = [this](routes::Route route) {
    return [this, route](const httplib::Request& req, httplib::Response& res) {
      route(context, req, res);
    };
  };
  auto page = [this](routes::Route route) {
    return [this, route](const httplib::Request& req, httplib::Response& res) {
      if (!page_allowed(token, req)) {
        res.set_header("WWW-Authenticate", "Basic realm=\"slimta-queue\"");
        res.status = 401;
        return res.set_content("the token is required (as the password)\n", "text/plain");
      }
      route(context, req, res);
    };
  };
  auto api = [this](routes::Route route) {
    return [this, route](const httplib::Request& req, httplib::Response& res) {
      if (!token.empty() && !same(req.get_header_value("Authorization"), "Bearer " + token)) {
        res.set_header("WWW-Authenticate", "Bearer");
        return routes::error_reply(res, 401, "a bearer token is required (--http-token-file)");
      }
      try {
        route(context, req, res);
      } catch (const KeyError&) {
        routes::error_reply(res, 404, "no such message");
      } catch (const InvalidArgument& e) {
        routes::error_reply(res, 400, e.what());
      } catch (const QueueError& e) {
        spdlog::error("http: {} {}: {}", req.method, req.path, e.what());
        routes::error_reply(res, 503, "the storage failed; try again");
      }
    };
  };
  const std::string message = R"(/api/v1/messages/([A-Za-z0-9_-]+))";
  server.Get("/", page(routes::status_page));
  server.Get("/metrics", open(routes::metrics));
  server.Get("/healthz", open(routes::healthz));
  server.Get("/readyz", open(routes::readyz));
  server.Get("/api/v1/info", api(routes::info));
  server.Get("/api/v1/shape", api(routes::shape));
  server.Get("/api/v1/messages", api(routes::list_messages));
  server.Get(message, api(routes::show_message));
  server.Delete(message, api(routes::remove_message));
  server.Post(message + "/(retry|hold|release|bounce)", api(routes::act_on_message));
  server.Post(R"(/api/v1/messages/(retry|hold|release|remove|bounce))",
              api(routes::act_on_matching));
  server.Post("/api/v1/messages", api(routes::inject));
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      routes::error_reply(res, res.status, res.status == 413 ? "too large" : "no such resource");
  });
}

HttpServer::~HttpServer() {
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace slimta::daemon
