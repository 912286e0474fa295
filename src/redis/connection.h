// hiredis, wrapped: RAII over redisContext and redisReply, all hiredis error
// translation in one place (throw_connection_error / check_reply), and a pool of
// connections. Internal: hiredis never appears in a public header.
#pragma once

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "redis/cluster.h"
#include "slimta/errors.h"
#include "slimta/redis_storage.h"

namespace slimta::redis {

// The connection failed (refused, reset, timed out, closed by the server). Retryable.
// The connection it happened on is unusable afterwards.
class ConnectionFailed : public QueueError {
 public:
  explicit ConnectionFailed(const std::string& what) : QueueError(what, true) {}
};

// The server is a replica, not the master (READONLY, MASTERDOWN): it did not run the
// command. Retryable; the master is looked for again.
class NotMaster : public QueueError {
 public:
  explicit NotMaster(const std::string& what) : QueueError(what, true) {}
};

// WAIT saw fewer replicas acknowledge a change than min_replicas_ack. Retryable; the
// change is on the master and may or may not survive its loss.
class NotReplicated : public QueueError {
 public:
  explicit NotReplicated(const std::string& what) : QueueError(what, true) {}
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

  // EVALSHA, or EVAL if the server has not cached the script. `acked`: a change that
  // must reach min_replicas_ack replicas (WAIT pipelined behind it, see append_wait).
  Reply eval(const Script& script, const std::vector<std::string_view>& keys,
             const std::vector<std::string_view>& args, bool acked = false);

  // Checks the replies of a pipelined MULTI, commands..., EXEC: throws QueueError for an
  // error at any step (the transaction then did nothing).
  void check_transaction(const redisReply* exec,
                         std::initializer_list<const redisReply*> queued) const;

  // min_replicas_ack: append_wait() queues a WAIT for the changes sent so far (nothing
  // without min_replicas_ack); read_wait() reads its reply (null without), once every
  // reply before it was read; check_wait() throws NotReplicated when fewer replicas
  // than wanted had them within ack_timeout. It comes after the check of the replies
  // before it: a replica refuses WAIT, and READONLY is the error that says why.
  void append_wait();
  Reply read_wait();
  void check_wait(const Reply& wait) const;

  // Throws QueueError for an error reply: NotMaster, StorageFull, not retryable for
  // bad credentials and permissions, retryable for a server busy or loading.
  void check_reply(const redisReply* reply) const;

  // Socket read/write timeout; none: wait forever.
  void set_timeout(std::optional<double> seconds);

  // Broken, or replies left unread (a caller stopped at an error): not to be reused.
  bool broken() const { return broken_ || unread_ != 0; }
  const std::string& where() const { return where_; }

  uint64_t generation = 0;  // the Pool's master generation it was made in

 private:
  [[noreturn]] void throw_connection_error();

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
  int wait_replicas_ = 0;  // RedisOptions::min_replicas_ack
  std::string wait_ms_;    // RedisOptions::ack_timeout, in ms
  bool broken_ = false;
  size_t unread_ = 0;  // commands sent whose replies were not read yet
};

// Connections shared by the threads of one RedisStorage, all to the master: the one
// of the options, or the one the sentinels name (asked once, and again after the
// master was lost). For a cluster, a pool per master, and the map of which one serves
// each slot (run_on()).
class Pool {
 public:
  explicit Pool(RedisOptions options);
  ~Pool();

  // Runs fn(Connection&) on a pooled connection. If the call fails because the
  // connection was dead and it came from the idle list (a server restart closes idle
  // connections), an `idempotent` call is retried once on a new connection. A call
  // that reached a replica (NotMaster: it did nothing there) is retried once on the
  // master found again, idempotent or not. For a cluster: on some master (for what is
  // not about a key).
  template <typename Fn>
  auto run(bool idempotent, Fn&& fn) {
    if (cluster_) return node(any_master()).run_here(idempotent, std::forward<Fn>(fn));
    return run_here(idempotent, std::forward<Fn>(fn));
  }

  // run() on the master that serves `key`'s slot. A MOVED answer (the slot is served
  // elsewhere now) updates the map and goes there; ASK (the slot is being moved) goes
  // there after ASKING; the command did nothing where it was redirected from, so any
  // call follows (at most 5 hops), to a master the slot map lists (a node that serves
  // no slot yet, the first slot moving to it, is reached once it serves one). A dead master makes
  // the map asked again, and an idempotent call goes once to the slot's new master. Not a cluster:
  // run().
  template <typename Fn>
  auto run_on(std::string_view key, bool idempotent, Fn&& fn) {
    if (!cluster_) return run(idempotent, std::forward<Fn>(fn));
    uint16_t slot = key_slot(key);
    std::string target = master_of(slot);
    bool asking = false;
    int split = 0;  // TRYAGAIN answers so far
    for (int hops = 0;; ++hops) {
      try {
        return node(target).run_here(idempotent, [&](Connection& c) {
          if (asking) c.command({"ASKING"});
          return fn(c);
        });
      } catch (const TryAgain&) {
        // The keys of a multi-key call (a message and its due index) are split by a slot
        // being moved: asked again until the move is done, up to ~5 s.
        if (++split == 100) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(5 * split, 50)));
        --hops;  // not a redirection
      } catch (const Redirect& r) {
        if (hops == 5) throw;
        std::string to =
            r.node.starts_with(":") ? target.substr(0, target.rfind(':')) + r.node : r.node;
        // Only to a master of the slot map (asked again if need be): a node is not
        // trusted to send the command, and the password, anywhere else.
        if (!listed(to, false) && !listed(to, true)) {
          throw QueueError("redis " + target + ": redirected slot " + std::to_string(slot) +
                               " to " + to +
                               ", a node the cluster's slot map does not list: not followed",
                           true);
        }
        if (!r.ask) moved(slot, to);
        target = to;
        asking = r.ask;
      } catch (const ConnectionFailed&) {
        forget_slots();  // a failover, maybe: the map is asked again
        // An idempotent call goes once to the slot's new master, if it has one now.
        std::string now = idempotent && hops == 0 ? refreshed_master_of(slot) : "";
        if (now.empty() || now == target) throw;
        target = now;
        asking = false;
      }
    }
  }

  // The masters of a cluster ("HOST:PORT"), as the cluster is asked again when `fresh`;
  // one empty name otherwise. run_node() runs on one of them (run(), with the empty
  // name).
  std::vector<std::string> masters(bool fresh = false);
  template <typename Fn>
  auto run_node(const std::string& name, bool idempotent, Fn&& fn) {
    if (!cluster_) return run(idempotent, std::forward<Fn>(fn));
    return node(name).run_here(idempotent, std::forward<Fn>(fn));
  }
  bool cluster() const { return cluster_ != nullptr; }
  // Cluster: the master that serves `slot` (the map asked for when not known).
  std::string master_of(uint16_t slot);

  // A new connection to the master (for wait()'s own connection). Throws
  // ConnectionFailed when no master can be found or reached.
  std::unique_ptr<Connection> connect();
  // The master reached by connections of `generation` failed or is a replica now: its
  // idle connections are dropped and, with sentinels, they are asked again.
  void lost_master(uint64_t generation);

  const RedisOptions& options() const { return options_; }

 private:
  std::unique_ptr<Connection> acquire(bool& reused);
  void release(std::unique_ptr<Connection> conn);
  // A connection to `master` if it is one (ROLE); ConnectionFailed otherwise.
  std::unique_ptr<Connection> connect_master(const RedisOptions::Address& master,
                                             uint64_t generation);
  // The address `sentinel` gives for the master, and the epoch of that configuration;
  // QueueError if it gives none.
  std::pair<RedisOptions::Address, long long> ask_sentinel(
      const RedisOptions::Address& sentinel) const;

  // run() on this pool's own server.
  template <typename Fn>
  auto run_here(bool idempotent, Fn&& fn) {
    for (int attempt = 0;; ++attempt) {
      bool reused = false;
      std::unique_ptr<Connection> conn = acquire(reused);
      try {
        auto result = fn(*conn);
        release(std::move(conn));
        return result;
      } catch (const ConnectionFailed&) {
        lost_master(conn->generation);
        if (!(idempotent && reused && attempt == 0)) throw;
      } catch (const NotMaster&) {
        lost_master(conn->generation);
        if (attempt != 0) throw;
      } catch (...) {
        release(std::move(conn));
        throw;
      }
    }
  }

  // Cluster: the pool of node "HOST:PORT", made on first use.
  Pool& node(const std::string& name);
  std::string any_master();
  // master_of(), the map asked again; empty if it cannot be asked.
  std::string refreshed_master_of(uint16_t slot);
  // Whether `name` is a master of the slot map (asked again first when `fresh`).
  bool listed(const std::string& name, bool fresh);
  void moved(uint16_t slot, const std::string& name);
  void forget_slots();
  // Asks a known master, else a node of the options, for the slots (CLUSTER SLOTS).
  void refresh_slots();

  struct Cluster;
  std::unique_ptr<Cluster> cluster_;
  RedisOptions options_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;
  uint64_t generation_ = 1;
  std::optional<RedisOptions::Address> master_;  // with sentinels: their last answer
  size_t first_sentinel_ = 0;                    // the one that answered last
};

// The string of a bulk or status reply; throws QueueError naming `what` otherwise.
std::string reply_string(const redisReply* r, std::string_view what);

}  // namespace slimta::redis
