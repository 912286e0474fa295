// libmicrohttpd (Debian's libmicrohttpd-dev, 0.9.75 with CVE-2023-27371 patched; its
// POST processor, where that defect was, is not used) carries the requests. It was
// chosen over cpp-httplib, which bookworm ships without limits on bodies, chunks or
// headers and with a thread per connection, and over Boost.Beast, which would leave the
// limits and the connection handling to us: libmicrohttpd limits connections in all and
// per client, bounds a connection's memory (request line and headers) and its idle
// time, and reads nothing of a body until the application says so. One event thread
// reads and writes every connection (a slow client costs a descriptor, not a thread);
// the routes that ask the storage run on worker lanes, their connections suspended
// meanwhile. What it does not do, a whole-request deadline, is a sweeper here that
// shuts the socket of a request that has not arrived whole in time.
#include "http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdarg>
#include <deque>
#include <fstream>
#include <mutex>
#include <regex>
#include <thread>
#include <unordered_map>

#include "disk/permissions.h"
#include "http_routes.h"
#include "slimta/ascii.h"
#include "slimta/host_port.h"
#include "slimta/ip_networks.h"

namespace slimta::daemon {

namespace {

std::string read_token(const std::string& path) {
  disk::check_permissions(path, "--http-token-file", disk::FileUse::secret);
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

// The status page's check: the token as Bearer, or as a browser sends it: Basic, any
// user name, the token as password.
bool page_allowed(const std::string& token, const std::string& auth) {
  if (auth.starts_with("Basic ")) {
    std::string decoded = base64_decode(auth.substr(6));
    size_t colon = decoded.find(':');
    return colon != std::string::npos && same(decoded.substr(colon + 1), token);
  }
  return same(auth, "Bearer " + token);
}

// A few threads running jobs, with at most `waiting` queued: a full lane says no at
// once rather than letting requests pile up. Destroyed, it runs what is queued first
// (each job resumes a suspended connection).
class Lane {
 public:
  Lane(size_t threads, size_t waiting) : waiting_(waiting) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Lane() { close(); }
  // Takes no more jobs, and returns once those it holds are done.
  void close() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  bool submit(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      if (stop_ || jobs_.size() >= waiting_) return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

 private:
  void work() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }
  size_t waiting_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

enum class Access { open, page, api };
enum class Where { network, monitor, work };

struct RouteEntry {
  std::string method;
  std::regex pattern;
  routes::Route route;
  Access access;
  Where where;
  bool takes_body = false;
};

// One request, from its head to its completion.
struct Exchange {
  HttpRequest req;
  HttpResponse res;
  const RouteEntry* route = nullptr;
  size_t body = 0;                 // bytes announced by Content-Length
  size_t held = 0;                 // bytes counted in the door's budget
  bool suspended = false;          // handed to a lane
  bool answered = false;           // a response is queued
  std::atomic<bool> ready{false};  // res is final (set by a lane's thread)
};

std::string client_address(MHD_Connection* c) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (!info || !info->client_addr) return "";
  char buf[INET6_ADDRSTRLEN] = {};
  const sockaddr* sa = info->client_addr;
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  }
  std::string ip = buf;
  if (ip.starts_with("::ffff:") && ip.find('.') != std::string::npos) ip = ip.substr(7);
  return ip;
}

MHD_Result collect(void* out, MHD_ValueKind, const char* key, const char* value) {
  if (key) {
    static_cast<std::vector<std::pair<std::string, std::string>>*>(out)->emplace_back(
        key, value ? value : "");
  }
  return MHD_YES;
}

std::optional<std::string_view> lookup(MHD_Connection* c, const char* name) {
  const char* v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
  if (!v) return std::nullopt;
  return std::string_view(v);
}

// A listening socket on `host`:`port` (an IP address, or a name that resolves to one).
int listen_on(const std::string& host, uint16_t port, uint16_t& bound) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    return -1;
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(fd, found->ai_addr, found->ai_addrlen) == 0 && ::listen(fd, 128) == 0;
  freeaddrinfo(found);
  sockaddr_storage at{};
  socklen_t len = sizeof at;
  if (ok && getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len) == 0) {
    bound = ntohs(at.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&at)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&at)->sin_port);
    return fd;
  }
  if (fd >= 0) ::close(fd);
  return -1;
}

}  // namespace

HttpBinding http_binding(const HttpOptions& options) {
  HttpBinding b;
  b.listen = options.listen;
  HostPort at = parse_host_port(options.listen, "--http", std::nullopt, /*port_zero=*/true);
  b.host = at.host;
  b.port = at.port;
  b.limits = options.limits;
  if (!options.token_file.empty()) {
    b.token = read_token(options.token_file);
  } else if (!IpNetworks::parse("127.0.0.0/8,::1/128").contains(b.host)) {
    throw InvalidArgument("--http " + options.listen +
                          ": without --http-token-file the HTTP listener may only bind a "
                          "loopback address (127.0.0.1, ::1)");
  }
  return b;
}

struct HttpServer::Impl {
  Impl(const HttpBinding& b, HttpContext c)
      : context(std::move(c)),
        token(b.token),
        limits(b.limits),
        monitor(2, 16),
        work(std::max<size_t>(1, b.limits.workers), b.limits.waiting) {
    listener.bound = b.host;
    std::string name = to_lower(context.reception.options()->hostname);
    if (name.empty()) name = to_lower(host_name());
    listener.names = {name};
    if (!b.host.empty() && std::isalpha(static_cast<unsigned char>(b.host[0])))
      listener.names.push_back(to_lower(b.host));
    routes();
  }
  void routes();
  void admit(MHD_Connection* c, Exchange& x);
  void run(Exchange& x);
  MHD_Result respond(MHD_Connection* c, Exchange& x);
  void finished(MHD_Connection* c, Exchange& x);
  void sweep();

  static MHD_Result on_request(void* cls, MHD_Connection* c, const char* url, const char* method,
                               const char* version, const char* upload, size_t* upload_size,
                               void** con_cls);
  static void on_completed(void* cls, MHD_Connection* c, void** con_cls,
                           MHD_RequestTerminationCode toe);
  static void on_connection(void* cls, MHD_Connection* c, void** socket_context,
                            MHD_ConnectionNotificationCode code);
  static void on_log(void* cls, const char* fmt, va_list ap);

  HttpContext context;
  std::string token;
  HttpLimits limits;
  ListenerNames listener;
  std::vector<RouteEntry> table;
  Lane monitor, work;
  MHD_Daemon* daemon = nullptr;

  // Connections whose request is still arriving, for the whole-request deadline.
  struct Arriving {
    int fd = -1;
    std::chrono::steady_clock::time_point since;
    bool reading = true;
  };
  std::mutex conns_mu;
  std::unordered_map<MHD_Connection*, Arriving> conns;
  std::condition_variable sweeper_cv;
  bool sweeper_stop = false;
  std::thread sweeper;
};

void HttpServer::Impl::routes() {
  const std::string message = R"(/api/v1/messages/([A-Za-z0-9_-]+))";
  auto add = [this](const char* method, const std::string& pattern, routes::Route route,
                    Access access, Where where, bool body = false) {
    table.push_back({method, std::regex(pattern), route, access, where, body});
  };
  add("GET", "/", routes::status_page, Access::page, Where::work);
  add("GET", "/metrics", routes::metrics, Access::open, Where::monitor);
  add("GET", "/healthz", routes::healthz, Access::open, Where::network);
  add("GET", "/readyz", routes::readyz, Access::open, Where::monitor);
  add("GET", "/api/v1/info", routes::info, Access::api, Where::work);
  add("GET", "/api/v1/shape", routes::shape, Access::api, Where::work);
  add("GET", "/api/v1/destinations", routes::list_destinations, Access::api, Where::work);
  add("POST", R"(/api/v1/destinations/([^/]+)/(suspend|resume))", routes::suspend_destination,
      Access::api, Where::work);
  add("GET", "/api/v1/messages", routes::list_messages, Access::api, Where::work);
  add("GET", message, routes::show_message, Access::api, Where::work);
  add("DELETE", message, routes::remove_message, Access::api, Where::work);
  add("POST", message + "/(retry|hold|release|bounce)", routes::act_on_message, Access::api,
      Where::work);
  add("POST", R"(/api/v1/messages/(retry|hold|release|remove|bounce))", routes::act_on_matching,
      Access::api, Where::work);
  add("POST", "/api/v1/messages", routes::inject, Access::api, Where::work, /*body=*/true);
}

// The head's checks, in order; a refusal fills x.res and leaves x.route null.
void HttpServer::Impl::admit(MHD_Connection* c, Exchange& x) {
  auto refuse = [&](int status, const std::string& message) {
    routes::error_reply(x.res, status, message);
    x.route = nullptr;
  };
  RequestHead head{x.req.method,
                   x.req.path,
                   lookup(c, "Host"),
                   lookup(c, "Content-Length"),
                   lookup(c, "Transfer-Encoding"),
                   lookup(c, "Content-Encoding")};
  if (head.host && !host_allowed(*head.host, listener))
    return refuse(421, "this listener does not answer to that Host");
  std::string method = x.req.method == "HEAD" ? "GET" : x.req.method;
  bool path_known = false;
  for (const RouteEntry& r : table) {
    std::smatch m;
    if (!std::regex_match(x.req.path, m, r.pattern)) continue;
    path_known = true;
    if (r.method != method) continue;
    x.route = &r;
    x.req.matches.assign(m.begin(), m.end());
    break;
  }
  if (!x.route) return refuse(path_known ? 405 : 404, "no such resource");
  const RouteEntry& route = *x.route;
  std::string auth = x.req.header("Authorization");
  if (route.access == Access::page && !token.empty() && !page_allowed(token, auth)) {
    x.res.set_header("WWW-Authenticate", "Basic realm=\"slimta-queue\"");
    refuse(401, "the token is required (as the password)");
    return;
  }
  if (route.access == Access::api) {
    if (token.empty())
      return refuse(403, "the API is off: serve needs --http-token-file to open it");
    if (!same(auth, "Bearer " + token)) {
      x.res.set_header("WWW-Authenticate", "Bearer");
      spdlog::warn("http: [{}] {} {}: a wrong or missing bearer token", x.req.remote_addr,
                   x.req.method, printable(x.req.path.substr(0, 200)));
      return refuse(401, "a bearer token is required (--http-token-file)");
    }
  }
  size_t max_body = 0;
  if (route.takes_body) {
    size_t limit = context.reception.options()->max_message_size;
    max_body = limit ? limit : size_t{1} << 30;
  }
  HeadVerdict v = check_framing(head, max_body);
  if (v.status) return refuse(v.status, v.message);
  if (route.takes_body && v.body == 0) return refuse(411, "a body with Content-Length is required");
  x.body = v.body;
  if (x.body) {  // the door's budget for messages in memory, shared with SMTP
    auto& in_flight = context.reception.bytes_in_flight();
    size_t budget = context.reception.options()->max_bytes_in_flight;
    if (in_flight.fetch_add(x.body) + x.body > budget) {
      in_flight -= x.body;
      x.res.set_header("Retry-After", "60");
      spdlog::warn("http: [{}] message refused: {} bytes of messages in flight (the limit)",
                   x.req.remote_addr, budget);
      return refuse(503, "insufficient system resources, try again later");
    }
    x.held = x.body;
    x.req.body.reserve(x.body);
  }
}

// The route, with its errors mapped: details to the log, not to the client.
void HttpServer::Impl::run(Exchange& x) {
  try {
    x.route->route(context, x.req, x.res);
  } catch (const KeyError&) {
    routes::error_reply(x.res, 404, "no such message");
  } catch (const InvalidArgument& e) {
    routes::error_reply(x.res, 400, e.what());
  } catch (const QueueError& e) {
    spdlog::error("http: {} {}: {}", x.req.method, printable(x.req.path), e.what());
    routes::error_reply(x.res, 503, "the storage failed; try again");
  } catch (const std::exception& e) {
    spdlog::error("http: {} {}: {}", x.req.method, printable(x.req.path), e.what());
    routes::error_reply(x.res, 500, "internal error");
  }
}

MHD_Result HttpServer::Impl::respond(MHD_Connection* c, Exchange& x) {
  x.answered = true;
  MHD_Response* r =
      MHD_create_response_from_buffer(x.res.body.size(), x.res.body.data(), MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  std::vector<std::pair<std::string, std::string>> headers = {
      {"Cache-Control", "no-store"},
      {"X-Content-Type-Options", "nosniff"},
      {"Content-Security-Policy", "default-src 'none'"}};
  for (const auto& header : x.res.headers) {
    std::erase_if(headers, [&](const auto& h) { return iequals(h.first, header.first); });
    headers.push_back(header);
  }
  headers.emplace_back("Content-Type", x.res.content_type);
  for (const auto& [name, value] : headers) MHD_add_response_header(r, name.c_str(), value.c_str());
  MHD_Result ok = MHD_queue_response(c, static_cast<unsigned>(x.res.status), r);
  MHD_destroy_response(r);
  return ok;
}

MHD_Result HttpServer::Impl::on_request(void* cls, MHD_Connection* c, const char* url,
                                        const char* method, const char*, const char* upload,
                                        size_t* upload_size, void** con_cls) {
  auto* self = static_cast<Impl*>(cls);
  if (!*con_cls) {  // the head: checked before a byte of the body is read
    auto x = std::make_unique<Exchange>();
    x->req.method = method;
    x->req.path = url;
    x->req.remote_addr = client_address(c);
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect, &x->req.headers);
    for (auto& h : x->req.headers) h.first = to_lower(h.first);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect, &x->req.params);
    self->admit(c, *x);
    Exchange& ref = *x;
    *con_cls = x.release();
    if (!ref.route) return self->respond(c, ref);
    return MHD_YES;
  }
  Exchange& x = *static_cast<Exchange*>(*con_cls);
  if (*upload_size) {
    // More than announced, or a body after a refusal: the connection is dropped.
    if (x.answered || x.req.body.size() + *upload_size > x.body) return MHD_NO;
    x.req.body.append(upload, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  if (x.answered) return MHD_YES;
  if (x.ready) return self->respond(c, x);
  {
    std::lock_guard lock(self->conns_mu);  // arrived whole: the deadline is off
    if (auto it = self->conns.find(c); it != self->conns.end()) it->second.reading = false;
  }
  if (x.route->where == Where::network) {
    self->run(x);
    return self->respond(c, x);
  }
  if (x.suspended) return MHD_YES;  // resumed without an answer: cannot happen
  Lane& lane = x.route->where == Where::monitor ? self->monitor : self->work;
  x.suspended = true;
  MHD_suspend_connection(c);
  bool taken = lane.submit([self, c, &x] {
    self->run(x);
    x.ready = true;
    MHD_resume_connection(c);
  });
  if (!taken) {
    x.res.set_header("Retry-After", "1");
    routes::error_reply(x.res, 503, "busy; try again");
    x.ready = true;
    MHD_resume_connection(c);
  }
  return MHD_YES;
}

// Each API call is logged with its caller: actions as info, reads as debug.
void HttpServer::Impl::finished(MHD_Connection*, Exchange& x) {
  if (!x.req.path.starts_with("/api/") || !x.route) return;
  auto level = x.req.method == "GET" ? spdlog::level::debug : spdlog::level::info;
  std::string query;
  for (const auto& [k, v] : x.req.params) query += (query.empty() ? "?" : "&") + k + "=" + v;
  spdlog::log(level, "http: [{}] {} {}{} {}", x.req.remote_addr, x.req.method,
              printable(x.req.path), printable(query.substr(0, 500)), x.res.status);
}

void HttpServer::Impl::on_completed(void* cls, MHD_Connection* c, void** con_cls,
                                    MHD_RequestTerminationCode) {
  auto* self = static_cast<Impl*>(cls);
  std::unique_ptr<Exchange> x(static_cast<Exchange*>(*con_cls));
  *con_cls = nullptr;
  if (x) {
    if (x->answered) self->finished(c, *x);
    self->context.reception.bytes_in_flight() -= x->held;
  }
  std::lock_guard lock(self->conns_mu);  // the next request on it has its own deadline
  if (auto it = self->conns.find(c); it != self->conns.end()) {
    it->second.reading = true;
    it->second.since = std::chrono::steady_clock::now();
  }
}

// libmicrohttpd calls this before it closes the socket: under conns_mu, the sweeper
// never shuts a descriptor that was closed and reused.
void HttpServer::Impl::on_connection(void* cls, MHD_Connection* c, void**,
                                     MHD_ConnectionNotificationCode code) {
  auto* self = static_cast<Impl*>(cls);
  std::lock_guard lock(self->conns_mu);
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const MHD_ConnectionInfo* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    self->conns[c] = {info ? info->connect_fd : -1, std::chrono::steady_clock::now(), true};
  } else {
    self->conns.erase(c);
  }
}

void HttpServer::Impl::on_log(void*, const char* fmt, va_list ap) {
  char buf[512];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string text = buf;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  spdlog::debug("http: {}", printable(text));
}

// A request still arriving after the deadline: its socket is shut, and libmicrohttpd
// closes the connection as a peer's.
void HttpServer::Impl::sweep() {
  std::unique_lock lock(conns_mu);
  while (!sweeper_stop) {
    sweeper_cv.wait_for(lock, std::chrono::seconds(1));
    auto now = std::chrono::steady_clock::now();
    for (auto& [c, a] : conns) {
      if (!a.reading || a.fd < 0 || now - a.since < limits.request_deadline) continue;
      spdlog::debug("http: a request not whole after {} s: cut", limits.request_deadline.count());
      ::shutdown(a.fd, SHUT_RDWR);
      a.reading = false;
    }
  }
}

HttpServer::HttpServer(const HttpBinding& binding, HttpContext context)
    : impl_(std::make_unique<Impl>(binding, std::move(context))) {
  uint16_t bound = 0;
  int fd = listen_on(binding.host, binding.port, bound);
  if (fd < 0) throw QueueError("cannot listen on " + binding.listen + " (--http)");
  const HttpLimits& l = binding.limits;
  impl_->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
          MHD_USE_ERROR_LOG,
      0, nullptr, nullptr, &Impl::on_request, impl_.get(), MHD_OPTION_LISTEN_SOCKET, fd,
      MHD_OPTION_CONNECTION_LIMIT, static_cast<unsigned>(l.max_connections),
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, static_cast<unsigned>(l.max_per_client),
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, l.header_memory, MHD_OPTION_CONNECTION_TIMEOUT,
      static_cast<unsigned>(l.idle_timeout.count()), MHD_OPTION_STRICT_FOR_CLIENT, 1,
      MHD_OPTION_NOTIFY_COMPLETED, &Impl::on_completed, impl_.get(), MHD_OPTION_NOTIFY_CONNECTION,
      &Impl::on_connection, impl_.get(), MHD_OPTION_EXTERNAL_LOGGER, &Impl::on_log, impl_.get(),
      MHD_OPTION_END);
  if (!impl_->daemon) {
    ::close(fd);
    throw QueueError("cannot serve HTTP on " + binding.listen + " (--http)");
  }
  impl_->sweeper = std::thread([this] { impl_->sweep(); });
  const std::string& host = binding.host;
  address_ =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(bound);
}

// New work is refused, the lanes run what they hold (resuming its connections), then
// the daemon closes every connection.
HttpServer::~HttpServer() {
  impl_->monitor.close();
  impl_->work.close();
  MHD_stop_daemon(impl_->daemon);
  {
    std::lock_guard lock(impl_->conns_mu);
    impl_->sweeper_stop = true;
  }
  impl_->sweeper_cv.notify_all();
  impl_->sweeper.join();
}

}  // namespace slimta::daemon
