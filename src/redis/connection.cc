#include "redis/connection.h"

#include "core/hex.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <map>

namespace slimta::redis {
namespace {

timeval to_timeval(double seconds) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
  return tv;
}

std::string describe(const RedisOptions& o) {
  std::string where = o.unix_socket.empty() ? "redis " + o.host + ":" + std::to_string(o.port)
                                            : "redis unix:" + o.unix_socket;
  return (o.tls ? "rediss " + where.substr(6) : where) + " db " + std::to_string(o.db) +
         (o.username ? " user " + *o.username : "") +
         (o.sentinels.empty() ? "" : " (master " + o.sentinel_master + ")");
}

bool starts_with_any(std::string_view s, std::initializer_list<std::string_view> prefixes) {
  for (auto p : prefixes) {
    if (s.starts_with(p)) return true;
  }
  return false;
}

}  // namespace

Script::Script(std::string src) : source(std::move(src)) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(source.data(), source.size(), digest, &len, EVP_sha1(), nullptr);
  sha1 = to_hex(std::string_view(reinterpret_cast<const char*>(digest), len));
}

struct Connection::Tls {
  int fd = -1;
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  redisReader* reader = redisReaderCreate();
  std::string out;  // commands formatted, not yet sent
  std::optional<double> timeout;
  ~Tls() {
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
    if (reader) redisReaderFree(reader);
  }
  // Waits for `events` on the socket within the timeout; false when it ran out.
  bool wait(short events) const {
    pollfd p{fd, events, 0};
    int ms = timeout ? static_cast<int>(std::ceil(*timeout * 1000)) : -1;
    int n;
    do {
      n = ::poll(&p, 1, ms);
    } while (n < 0 && errno == EINTR);
    return n > 0;
  }
};

namespace {
// OpenSSL's last error, or `fallback`.
std::string ssl_error(const char* fallback) {
  unsigned long e = ERR_get_error();
  if (e == 0) return fallback;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}
}  // namespace

void Connection::tls_fail(const std::string& what, bool retryable) {
  broken_ = true;
  if (retryable) throw ConnectionFailed(where_ + ": " + what);
  throw QueueError(where_ + ": " + what, false);
}

void Connection::tls_connect(const RedisOptions& o) {
  tls_ = std::make_unique<Tls>();
  Tls& t = *tls_;
  // Connecting with no socket_timeout still gives up after 10 s.
  t.timeout = o.socket_timeout.value_or(10.0);
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  std::string port = std::to_string(o.port);
  if (int rc = ::getaddrinfo(o.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    tls_fail(std::string("cannot resolve the host: ") + gai_strerror(rc));
  std::string failure = "connect failed";
  for (addrinfo* a = found; a && t.fd < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int err = 0;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        t.fd = fd;
        bool ready = t.wait(POLLOUT);
        t.fd = -1;
        socklen_t len = sizeof err;
        if (!ready)
          err = ETIMEDOUT;
        else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
          err = errno;
      }
    }
    if (err == 0) {
      t.fd = fd;
    } else {
      failure = std::string("connect failed: ") + std::strerror(err);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (t.fd < 0) tls_fail(failure);
  int one = 1;
  ::setsockopt(t.fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(t.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  t.ctx = SSL_CTX_new(TLS_client_method());
  if (!t.ctx) tls_fail("TLS: " + ssl_error("cannot make a context"), false);
  SSL_CTX_set_min_proto_version(t.ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(t.ctx, SSL_VERIFY_PEER, nullptr);
  if (o.tls_ca_file.empty()
          ? SSL_CTX_set_default_verify_paths(t.ctx) != 1
          : SSL_CTX_load_verify_locations(t.ctx, o.tls_ca_file.c_str(), nullptr) != 1)
    tls_fail("TLS: cannot read the CA file '" + o.tls_ca_file + "': " + ssl_error("?"), false);
  if (!o.tls_cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(t.ctx, o.tls_cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(t.ctx, o.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(t.ctx) != 1))
    tls_fail("TLS: cannot use the client certificate '" + o.tls_cert_file + "' and key '" +
                 o.tls_key_file + "': " + ssl_error("?"),
             false);
  t.ssl = SSL_new(t.ctx);
  SSL_set_fd(t.ssl, t.fd);
  const std::string& name = o.tls_server_name.empty() ? o.host : o.tls_server_name;
  in6_addr ip;
  bool is_ip =
      ::inet_pton(AF_INET, name.c_str(), &ip) == 1 || ::inet_pton(AF_INET6, name.c_str(), &ip) == 1;
  if (is_ip) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t.ssl), name.c_str());
  } else {
    SSL_set_tlsext_host_name(t.ssl, name.c_str());
    SSL_set1_host(t.ssl, name.c_str());
  }
  while (true) {
    ERR_clear_error();
    int rc = SSL_connect(t.ssl);
    if (rc == 1) break;
    int e = SSL_get_error(t.ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (!t.wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
        tls_fail("TLS handshake timed out (is it a TLS port?)");
      continue;
    }
    long verify = SSL_get_verify_result(t.ssl);
    if (verify != X509_V_OK)
      tls_fail(std::string("TLS: the server's certificate was refused: ") +
                   X509_verify_cert_error_string(verify),
               false);
    tls_fail("TLS handshake failed: " +
             ssl_error("the server closed the connection (not a TLS port?)"));
  }
}

void Connection::tls_flush() {
  Tls& t = *tls_;
  size_t sent = 0;
  while (sent < t.out.size()) {
    ERR_clear_error();
    int n = SSL_write(t.ssl, t.out.data() + sent, static_cast<int>(t.out.size() - sent));
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    int e = SSL_get_error(t.ssl, n);
    if ((e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) &&
        t.wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
      continue;
    tls_fail(e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ
                 ? "timed out"
                 : "TLS write failed: " + ssl_error("?"));
  }
  t.out.clear();
}

Connection::~Connection() = default;

Connection::Connection(const RedisOptions& o)
    : where_(describe(o)),
      wait_replicas_(o.min_replicas_ack),
      wait_ms_(std::to_string(static_cast<long long>(std::ceil(o.ack_timeout * 1000)))) {
  if (o.tls) {
    tls_connect(o);
  } else {
    // Connecting with no socket_timeout still gives up after 10 s: an unreachable host
    // must not hang a caller forever.
    timeval tv = to_timeval(o.socket_timeout.value_or(10.0));
    redisContext* c = o.unix_socket.empty()
                          ? redisConnectWithTimeout(o.host.c_str(), o.port, tv)
                          : redisConnectUnixWithTimeout(o.unix_socket.c_str(), tv);
    if (!c) throw ConnectionFailed(where_ + ": cannot allocate a connection");
    ctx_.reset(c);
    if (ctx_->err) throw_connection_error();
    if (o.unix_socket.empty()) redisEnableKeepAlive(ctx_.get());
  }
  set_timeout(o.socket_timeout);
  if (o.username && o.password) {
    command({"AUTH", *o.username, *o.password});
  } else if (o.password) {
    command({"AUTH", *o.password});
  }
  if (o.db != 0) command({"SELECT", std::to_string(o.db)});
}

void Connection::throw_connection_error() {
  broken_ = true;
  std::string detail = ctx_->errstr;
  if (ctx_->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    detail = "timed out";  // hiredis 0.14 reports a socket timeout as an I/O error with EAGAIN
  } else if (ctx_->err == REDIS_ERR_EOF) {
    detail = "connection closed by the server";
  }
  // Closed or reset before any reply: a TLS port answers a plain client so.
  if (!answered_ &&
      (ctx_->err == REDIS_ERR_EOF || (ctx_->err == REDIS_ERR_IO && errno == ECONNRESET)))
    detail += " (a TLS port? then the URL is rediss://)";
  throw ConnectionFailed(where_ + ": " + detail);
}

void Connection::check_reply(const redisReply* r) const {
  if (r->type != REDIS_REPLY_ERROR) return;
  std::string_view msg(r->str, r->len);
  std::string what = where_ + ": " + std::string(msg);
  // Redis 7 refuses a command of more than 10 arguments from an unauthenticated client
  // with a protocol error rather than NOAUTH: the same mistake, a missing password.
  if (starts_with_any(msg, {"NOAUTH", "WRONGPASS", "ERR invalid password", "ERR AUTH",
                            "ERR Client sent AUTH", "ERR Protocol error: unauthenticated"})) {
    throw QueueError(where_ + ": authentication failed (" + std::string(msg) + ")", false);
  }
  if (msg.find("NOPERM") != std::string_view::npos) {
    throw QueueError(where_ + ": the Redis user may not do this (" + std::string(msg) +
                         "); it needs RedisStorage::acl_rule(prefix), see doc/redis.md",
                     false);
  }
  if (msg.find("DB index is out of range") != std::string_view::npos) {
    throw QueueError(where_ + ": cannot select the db (" + std::string(msg) + ")", false);
  }
  if (starts_with_any(msg, {"OOM"})) throw StorageFull(what);
  if (starts_with_any(msg, {"READONLY", "MASTERDOWN"})) throw NotMaster(what);
  bool ask = false;
  std::string node;
  if (parse_redirect(msg, ask, node)) throw Redirect(what, ask, node);
  if (starts_with_any(msg, {"TRYAGAIN"})) throw TryAgain(what);
  // MISCONF: the server cannot persist (its disk); an operator's fix makes it work again.
  bool retryable =
      starts_with_any(msg, {"LOADING", "BUSY", "CLUSTERDOWN", "MISCONF", "NOREPLICAS"});
  throw QueueError(what, retryable);
}

Reply Connection::command(const std::vector<std::string_view>& args, bool allow_error) {
  append(args);
  return read_reply(allow_error);
}

void Connection::append(const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (auto a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  ++unread_;
  if (tls_) {
    char* cmd = nullptr;
    int len = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
    if (len < 0) tls_fail("cannot format a command", false);
    tls_->out.append(cmd, static_cast<size_t>(len));
    redisFreeCommand(cmd);
    return;
  }
  if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv.data(), lens.data()) !=
      REDIS_OK) {
    throw_connection_error();
  }
}

Reply Connection::read_reply(bool allow_error) {
  void* raw = nullptr;
  if (tls_) {
    Tls& t = *tls_;
    if (!t.out.empty()) tls_flush();
    while (true) {
      if (redisReaderGetReply(t.reader, &raw) != REDIS_OK)
        tls_fail(std::string("protocol error: ") + t.reader->errstr, false);
      if (raw) break;
      char buf[16384];
      ERR_clear_error();
      int n = SSL_read(t.ssl, buf, sizeof buf);
      if (n > 0) {
        redisReaderFeed(t.reader, buf, static_cast<size_t>(n));
        continue;
      }
      int e = SSL_get_error(t.ssl, n);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        if (!t.wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT)) tls_fail("timed out");
        continue;
      }
      tls_fail(e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL
                   ? "connection closed by the server"
                   : "TLS read failed: " + ssl_error("?"));
    }
  } else if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw) {
    throw_connection_error();
  }
  answered_ = true;
  --unread_;
  Reply reply(static_cast<redisReply*>(raw));
  if (!allow_error) check_reply(reply.get());
  return reply;
}

Reply Connection::eval(const Script& script, const std::vector<std::string_view>& keys,
                       const std::vector<std::string_view>& args, bool acked) {
  std::string nkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv{"EVALSHA", script.sha1, nkeys};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  append(argv);
  if (acked) append_wait();
  Reply r = read_reply(/*allow_error=*/true);
  if (r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).starts_with("NOSCRIPT")) {
    if (acked && wait_replicas_ > 0) read_reply(/*allow_error=*/true);  // nothing was changed
    argv[0] = "EVAL";
    argv[1] = script.source;
    append(argv);
    if (acked) append_wait();
    r = read_reply(/*allow_error=*/true);
  }
  Reply wait = acked ? read_wait() : Reply();
  check_reply(r.get());
  check_wait(wait);
  return r;
}

void Connection::check_transaction(const redisReply* exec,
                                   std::initializer_list<const redisReply*> queued) const {
  for (const redisReply* r : queued) check_reply(r);
  check_reply(exec);
  if (exec->type != REDIS_REPLY_ARRAY)
    throw QueueError(where_ + ": transaction was not executed", true);
  for (size_t i = 0; i < exec->elements; ++i) check_reply(exec->element[i]);
}

void Connection::append_wait() {
  if (wait_replicas_ > 0) append({"WAIT", std::to_string(wait_replicas_), wait_ms_});
}

Reply Connection::read_wait() {
  return wait_replicas_ > 0 ? read_reply(/*allow_error=*/true) : Reply();
}

void Connection::check_wait(const Reply& r) const {
  if (!r) return;
  check_reply(r.get());
  if (r->type != REDIS_REPLY_INTEGER)
    throw QueueError(where_ + ": unexpected reply to WAIT", false);
  if (r->integer < wait_replicas_)
    throw NotReplicated(where_ + ": " + std::to_string(r->integer) + " of the " +
                        std::to_string(wait_replicas_) +
                        " replicas wanted (min-replicas-ack) had it within " + wait_ms_ + " ms");
}

void Connection::set_timeout(std::optional<double> seconds) {
  if (tls_) {
    tls_->timeout = seconds;
    return;
  }
  if (redisSetTimeout(ctx_.get(), to_timeval(seconds.value_or(0))) != REDIS_OK)
    throw_connection_error();
}

struct Pool::Cluster {
  std::mutex mu;
  std::map<std::string, std::unique_ptr<Pool>> nodes;  // by "HOST:PORT"
  std::vector<std::string> slots;                      // the master of each; empty: ask
  std::vector<std::string> masters;
};

Pool::Pool(RedisOptions options) : options_(std::move(options)) {
  if (!options_.cluster_nodes.empty()) cluster_ = std::make_unique<Cluster>();
}

Pool::~Pool() = default;

Pool& Pool::node(const std::string& name) {
  std::lock_guard lock(cluster_->mu);
  auto& p = cluster_->nodes[name];
  if (!p) {
    RedisOptions o = options_;
    o.cluster_nodes.clear();
    size_t colon = name.rfind(':');
    o.host = name.substr(0, colon);
    o.port = std::atoi(name.c_str() + colon + 1);
    p = std::make_unique<Pool>(std::move(o));
  }
  return *p;
}

void Pool::refresh_slots() {
  std::vector<std::string> seeds;
  {
    std::lock_guard lock(cluster_->mu);
    seeds = cluster_->masters;
  }
  for (const auto& n : options_.cluster_nodes)
    seeds.push_back(n.host + ":" + std::to_string(n.port));
  std::string errors;
  for (const auto& seed : seeds) {
    try {
      Reply r = node(seed).run(true, [](Connection& c) { return c.command({"CLUSTER", "SLOTS"}); });
      auto [slots, masters] =
          parse_cluster_slots(r.get(), seed.substr(0, seed.rfind(':')), "redis " + seed);
      if (masters.empty()) {
        errors += "; " + seed + ": no slots served (is the cluster made?)";
        continue;
      }
      std::lock_guard lock(cluster_->mu);
      cluster_->slots = std::move(slots);
      cluster_->masters = std::move(masters);
      return;
    } catch (const QueueError& e) {
      errors += std::string("; ") + e.what();
    }
  }
  throw ConnectionFailed("redis cluster: no node gave its slots" + errors);
}

std::string Pool::master_of(uint16_t slot) {
  {
    std::lock_guard lock(cluster_->mu);
    if (!cluster_->slots.empty() && !cluster_->slots[slot].empty()) return cluster_->slots[slot];
  }
  refresh_slots();
  std::lock_guard lock(cluster_->mu);
  if (cluster_->slots[slot].empty())
    throw QueueError("redis cluster: no master serves slot " + std::to_string(slot), true);
  return cluster_->slots[slot];
}

std::string Pool::any_master() { return masters().front(); }

std::string Pool::refreshed_master_of(uint16_t slot) {
  try {
    refresh_slots();
    return master_of(slot);
  } catch (const QueueError&) {
    return "";
  }
}

std::vector<std::string> Pool::masters(bool fresh) {
  if (!cluster_) return {""};
  if (!fresh) {
    std::lock_guard lock(cluster_->mu);
    if (!cluster_->masters.empty()) return cluster_->masters;
  }
  refresh_slots();
  std::lock_guard lock(cluster_->mu);
  return cluster_->masters;
}

bool Pool::listed(const std::string& name, bool fresh) {
  if (fresh) {
    try {
      refresh_slots();
    } catch (const QueueError&) {
      return false;
    }
  }
  std::lock_guard lock(cluster_->mu);
  return std::find(cluster_->masters.begin(), cluster_->masters.end(), name) !=
         cluster_->masters.end();
}

void Pool::moved(uint16_t slot, const std::string& name) {
  std::lock_guard lock(cluster_->mu);
  if (cluster_->slots.empty()) return;
  cluster_->slots[slot] = name;
  if (std::find(cluster_->masters.begin(), cluster_->masters.end(), name) ==
      cluster_->masters.end()) {
    cluster_->masters.push_back(name);
    std::sort(cluster_->masters.begin(), cluster_->masters.end());
  }
}

void Pool::forget_slots() {
  std::lock_guard lock(cluster_->mu);
  cluster_->slots.clear();
}

std::unique_ptr<Connection> Pool::acquire(bool& reused) {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      reused = true;
      return conn;
    }
  }
  reused = false;
  return connect();
}

void Pool::release(std::unique_ptr<Connection> conn) {
  if (!conn || conn->broken()) return;
  std::lock_guard lock(mu_);
  if (conn->generation == generation_ && idle_.size() < options_.max_idle_connections)
    idle_.push_back(std::move(conn));
}

void Pool::lost_master(uint64_t generation) {
  std::lock_guard lock(mu_);
  if (generation != generation_) return;  // already known
  ++generation_;
  idle_.clear();
  master_.reset();
}

std::unique_ptr<Connection> Pool::connect() {
  uint64_t generation;
  std::optional<RedisOptions::Address> cached;
  size_t first;
  {
    std::lock_guard lock(mu_);
    generation = generation_;
    if (options_.sentinels.empty()) {
      auto conn = std::make_unique<Connection>(options_);
      conn->generation = generation;
      return conn;
    }
    cached = master_;
    first = first_sentinel_;
  }
  std::string errors;
  if (cached) {
    try {
      return connect_master(*cached, generation);
    } catch (const ConnectionFailed& e) {
      lost_master(generation);
      errors += std::string("; ") + e.what();
      std::lock_guard lock(mu_);
      generation = generation_;
    }
  }
  // Every sentinel is asked: just after a failover some still name the old master, which
  // may be back, empty, and say it is a master until they make it a replica. The newest
  // configuration (the highest epoch) wins; a tie goes to the one that answered first.
  struct Named {
    RedisOptions::Address master;
    long long epoch;
    size_t sentinel;
  };
  std::vector<Named> named;
  size_t n = options_.sentinels.size();
  for (size_t i = 0; i < n; ++i) {
    size_t index = (first + i) % n;
    try {
      auto [master, epoch] = ask_sentinel(options_.sentinels[index]);
      named.push_back({master, epoch, index});
    } catch (const QueueError& e) {
      errors += std::string("; ") + e.what();
    }
  }
  std::stable_sort(named.begin(), named.end(),
                   [](const Named& a, const Named& b) { return a.epoch > b.epoch; });
  std::vector<std::pair<std::string, int>> tried;
  for (const Named& candidate : named) {
    auto address = std::pair(candidate.master.host, candidate.master.port);
    if (std::find(tried.begin(), tried.end(), address) != tried.end()) continue;
    tried.push_back(address);
    try {
      auto conn = connect_master(candidate.master, generation);
      std::lock_guard lock(mu_);
      if (generation == generation_) master_ = candidate.master;
      first_sentinel_ = candidate.sentinel;
      return conn;
    } catch (const ConnectionFailed& e) {
      errors += std::string("; ") + e.what();
    }
  }
  throw ConnectionFailed("redis master '" + options_.sentinel_master + "': " +
                         (tried.empty() ? "no sentinel named it" : "not reachable") + errors);
}

std::unique_ptr<Connection> Pool::connect_master(const RedisOptions::Address& master,
                                                 uint64_t generation) {
  RedisOptions o = options_;
  o.host = master.host;
  o.port = master.port;
  auto conn = std::make_unique<Connection>(o);
  conn->generation = generation;
  Reply role = conn->command({"ROLE"});
  if (role->type != REDIS_REPLY_ARRAY || role->elements == 0 ||
      reply_string(role->element[0], "ROLE") != "master") {
    throw ConnectionFailed(conn->where() +
                           ": named the master but a replica (a failover under way)");
  }
  return conn;
}

std::pair<RedisOptions::Address, long long> Pool::ask_sentinel(
    const RedisOptions::Address& sentinel) const {
  RedisOptions so;
  so.host = sentinel.host;
  so.port = sentinel.port;
  so.password = options_.sentinel_password;
  // A sentinel's answer is small: one that does not give it in 2 s is skipped.
  so.socket_timeout = std::min(options_.socket_timeout.value_or(2.0), 2.0);
  Connection c(so);
  // The address as get-master-addr-by-name gives it (it names the promoted replica
  // already while the failover is under way), the epoch of the configuration from
  // SENTINEL MASTER (config-epoch); pipelined.
  c.append({"SENTINEL", "get-master-addr-by-name", options_.sentinel_master});
  c.append({"SENTINEL", "MASTER", options_.sentinel_master});
  Reply addr = c.read_reply(/*allow_error=*/true);
  Reply info = c.read_reply(/*allow_error=*/true);
  std::string where = "sentinel " + sentinel.host + ":" + std::to_string(sentinel.port);
  if (addr->type != REDIS_REPLY_ARRAY || addr->elements != 2)
    throw QueueError(where + " does not know a master '" + options_.sentinel_master + "'", true);
  RedisOptions::Address master{reply_string(addr->element[0], "SENTINEL"), 0};
  std::string port = reply_string(addr->element[1], "SENTINEL");
  std::from_chars(port.data(), port.data() + port.size(), master.port);
  long long epoch = 0;
  for (size_t i = 0; info->type == REDIS_REPLY_ARRAY && i + 1 < info->elements; i += 2) {
    if (reply_string(info->element[i], "SENTINEL MASTER") == "config-epoch") {
      std::string value = reply_string(info->element[i + 1], "SENTINEL MASTER");
      std::from_chars(value.data(), value.data() + value.size(), epoch);
    }
  }
  return {master, epoch};
}

std::string reply_string(const redisReply* r, std::string_view what) {
  if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
    return std::string(r->str, r->len);
  throw QueueError("unexpected redis reply for " + std::string(what), false);
}

}  // namespace slimta::redis
