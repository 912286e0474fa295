#include "redis/connection.h"

#include "core/hex.h"

#include <openssl/evp.h>
#include <sys/time.h>

#include <charconv>
#include <cmath>
#include <cstring>

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
  return where + " db " + std::to_string(o.db) + (o.username ? " user " + *o.username : "");
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

Connection::Connection(const RedisOptions& o) : where_(describe(o)) {
  // Connecting with no socket_timeout still gives up after 10 s: an unreachable host
  // must not hang a caller forever.
  timeval tv = to_timeval(o.socket_timeout.value_or(10.0));
  redisContext* c = o.unix_socket.empty() ? redisConnectWithTimeout(o.host.c_str(), o.port, tv)
                                          : redisConnectUnixWithTimeout(o.unix_socket.c_str(), tv);
  if (!c) throw ConnectionFailed(where_ + ": cannot allocate a connection");
  ctx_.reset(c);
  if (ctx_->err) throw_connection_error();
  set_timeout(o.socket_timeout);
  if (o.unix_socket.empty()) redisEnableKeepAlive(ctx_.get());
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
  // MISCONF: the server cannot persist (its disk); an operator's fix makes it work again.
  bool retryable = starts_with_any(msg, {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY",
                                         "CLUSTERDOWN", "MISCONF", "NOREPLICAS"});
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
  if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv.data(), lens.data()) !=
      REDIS_OK) {
    throw_connection_error();
  }
}

Reply Connection::read_reply(bool allow_error) {
  void* raw = nullptr;
  if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw) throw_connection_error();
  Reply reply(static_cast<redisReply*>(raw));
  if (!allow_error) check_reply(reply.get());
  return reply;
}

Reply Connection::eval(const Script& script, const std::vector<std::string_view>& keys,
                       const std::vector<std::string_view>& args) {
  std::string nkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv{"EVALSHA", script.sha1, nkeys};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  Reply r = command(argv, /*allow_error=*/true);
  if (r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).starts_with("NOSCRIPT")) {
    argv[0] = "EVAL";
    argv[1] = script.source;
    r = command(argv, /*allow_error=*/true);
  }
  check_reply(r.get());
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

void Connection::set_timeout(std::optional<double> seconds) {
  if (redisSetTimeout(ctx_.get(), to_timeval(seconds.value_or(0))) != REDIS_OK)
    throw_connection_error();
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
  return std::make_unique<Connection>(options_);
}

void Pool::release(std::unique_ptr<Connection> conn) {
  if (!conn || conn->broken()) return;
  std::lock_guard lock(mu_);
  if (idle_.size() < options_.max_idle_connections) idle_.push_back(std::move(conn));
}

std::string reply_string(const redisReply* r, std::string_view what) {
  if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
    return std::string(r->str, r->len);
  throw QueueError("unexpected redis reply for " + std::string(what), false);
}

std::string format_timestamp(double ts) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), ts);
  return std::string(buf, res.ptr);
}

std::optional<double> parse_timestamp(std::string_view s) {
  double v = 0;
  auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

}  // namespace slimta::redis
