// hiredis, wrapped: RAII over redisContext and redisReply, all hiredis error
// translation in one place (throw_connection_error / check_reply), and a pool of
// connections. Internal: hiredis never appears in a public header.
#pragma once

#include <hiredis/hiredis.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/errors.h"
#include "slimta/redis_storage.h"

namespace slimta::redis {

// The connection failed (refused, reset, timed out, closed by the server). Retryable.
// The connection it happened on is unusable afterwards.
class ConnectionFailed : public QueueError {
 public:
  explicit ConnectionFailed(const std::string& what) : QueueError(what, true) {}
};

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};

// A Lua script run with EVALSHA, falling back to EVAL when the server does not know it.
struct Script {
  explicit Script(std::string source);
  std::string source;
  std::string sha1;  // hex
};

class Connection {
 public:
  // Connects, authenticates and selects the db. Throws ConnectionFailed if the server
  // cannot be reached, QueueError (not retryable) for bad credentials or db.
  explicit Connection(const RedisOptions& options);
  ~Connection();

  // One command, one reply. Throws ConnectionFailed on I/O failure and QueueError for
  // an error reply (see check_reply), except that error replies are returned when
  // `allow_error` (the caller inspects them).
  Reply command(const std::vector<std::string_view>& args, bool allow_error = false);
  // Pipelining: queue commands, then read their replies in order.
  void append(const std::vector<std::string_view>& args);
  Reply read_reply(bool allow_error = false);

  // EVALSHA, or EVAL if the server has not cached the script.
  Reply eval(const Script& script, const std::vector<std::string_view>& keys,
             const std::vector<std::string_view>& args);

  // Checks the replies of a pipelined MULTI, commands..., EXEC: throws QueueError for an
  // error at any step (the transaction then did nothing).
  void check_transaction(const redisReply* exec,
                         std::initializer_list<const redisReply*> queued) const;

  // Socket read/write timeout; none: wait forever.
  void set_timeout(std::optional<double> seconds);

  bool broken() const { return broken_; }
  const std::string& where() const { return where_; }

 private:
  [[noreturn]] void throw_connection_error();
  void check_reply(const redisReply* reply) const;

  // TLS (options.tls): our own socket and OpenSSL, hiredis's formatter and reply
  // reader (Debian's hiredis 0.14 has no TLS); ctx_ is then null.
  struct Tls;
  void tls_connect(const RedisOptions& o);
  void tls_flush();
  [[noreturn]] void tls_fail(const std::string& what, bool retryable = true);

  std::unique_ptr<redisContext, ContextDeleter> ctx_;
  std::unique_ptr<Tls> tls_;
  bool answered_ = false;  // a reply was read: the server speaks our protocol
  std::string where_;      // "redis 127.0.0.1:6379 db 0", for messages
  bool broken_ = false;
};

// Connections shared by the threads of one RedisStorage.
class Pool {
 public:
  explicit Pool(RedisOptions options) : options_(std::move(options)) {}

  // Runs fn(Connection&) on a pooled connection. If the call fails because the
  // connection was dead and it came from the idle list (a server restart closes idle
  // connections), an `idempotent` call is retried once on a new connection.
  template <typename Fn>
  auto run(bool idempotent, Fn&& fn) {
    for (int attempt = 0;; ++attempt) {
      bool reused = false;
      std::unique_ptr<Connection> conn = acquire(reused);
      try {
        auto result = fn(*conn);
        release(std::move(conn));
        return result;
      } catch (const ConnectionFailed&) {
        if (!(idempotent && reused && attempt == 0)) throw;
      } catch (...) {
        release(std::move(conn));
        throw;
      }
    }
  }

  const RedisOptions& options() const { return options_; }

 private:
  std::unique_ptr<Connection> acquire(bool& reused);
  void release(std::unique_ptr<Connection> conn);

  RedisOptions options_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;
};

// The string of a bulk or status reply; throws QueueError naming `what` otherwise.
std::string reply_string(const redisReply* r, std::string_view what);
// Shortest decimal text that reads back as exactly `ts`.
std::string format_timestamp(double ts);
// Parses format_timestamp()'s output; nullopt if it is not a number.
std::optional<double> parse_timestamp(std::string_view s);

}  // namespace slimta::redis
