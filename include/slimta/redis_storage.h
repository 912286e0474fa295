// RedisStorage: messages in Redis, shared by every process and host that points at the
// same server (python's slimta.redisstorage.RedisStorage).
//
// Each message is one hash at PREFIX+ID holding the stored record (doc/format.md) and
// its current metadata; every mutating method is one atomic Lua script, one round trip,
// and never creates a record that is not there (KeyError instead). write() also appends
// the new message to the stream PREFIX+".notify" (capped, so it never grows without
// bound), which wait() reads with XREAD BLOCK: every waiting process sees every
// message written by the others.
//
// Errors: a connection that fails (refused, reset, timed out, server restarted) raises a
// retryable QueueError naming the server; the next call connects again. Idempotent
// calls (all but increment_attempts) are retried once on a fresh connection when a
// pooled connection turns out to be dead. Bad credentials or a bad db number raise a
// non-retryable QueueError that says so.
//
// Thread safety: all methods may be called concurrently (a pool of connections),
// except wait(), which one thread at a time may call (it has its own connection).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "slimta/storage.h"

namespace slimta {

struct RedisOptions {
  std::string host = "localhost";
  int port = 6379;
  // Connect through this unix socket instead of host:port when not empty.
  std::string unix_socket;
  int db = 0;
  std::optional<std::string> password;  // AUTH password; none: no AUTH
  // An ACL user (Redis 6+): AUTH username password. Needs the password; none: the
  // default user. See acl_rule() for what the user must be allowed.
  std::optional<std::string> username;
  // TLS (rediss://): the server's certificate must chain to tls_ca_file (the system's
  // CAs when empty) and name `host` (sent as SNI too); a client certificate and key
  // when the server asks for one (tls-auth-clients).
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file, tls_key_file;
  // The name the certificate must have, sent as SNI; empty: `host`.
  std::string tls_server_name;
  // Sentinel (redis+sentinel://): when not empty, these sentinels are asked for the
  // address of the master named `sentinel_master` (host and port above are then
  // unused), the answer is checked with ROLE, and it is asked again whenever the
  // master stops answering or turns out to be a replica (READONLY, MASTERDOWN): so a
  // failover costs retryable errors (451s) for as long as it takes, never more.
  struct Address {
    std::string host;
    int port = 26379;
  };
  std::vector<Address> sentinels;
  std::string sentinel_master;
  std::optional<std::string> sentinel_password;  // the sentinels' requirepass, if any
  // Redis Cluster (redis+cluster://): when not empty, these nodes are asked for the
  // cluster's slots (any one that answers; host and port above are then unused), and
  // each call goes to the master of its key's slot, following MOVED and ASK while slots
  // move. A message is one key, so one slot; messages spread over every slot. Its
  // notice goes to one of `notify_shards` streams (by the message's slot), so no stream
  // is a hot key; wait() polls them every 100 ms. Only db 0 exists in a cluster.
  std::vector<Address> cluster_nodes;
  size_t notify_shards = 16;
  // Cluster: the due-time index (doc/redis.md). 0: none, and serve keeps the whole
  // schedule. N (a power of two, at most 16384): new messages are given ids whose keys
  // fall in N evenly spaced slots (every 16384/N-th), each with its own index beside
  // them, so every script keeps a message and its index in one slot. Raising N later
  // keeps every indexed slot indexed; messages stored before it was set, or with a
  // larger N, are not indexed (the repair sweep counts them and says so).
  size_t due_slots = 0;
  // Acknowledged by replicas: after each write and each change of a message's metadata
  // (claim, attempt, delivery, deferral, hold, removal), WAIT until this many replicas
  // have it, at most `ack_timeout` seconds; fewer is a retryable error (a write is then
  // taken back and the SMTP client told 451). Redis replicates asynchronously: without
  // it, a write acknowledged just before the master dies may be missing from the replica
  // that replaces it. 0: no WAIT.
  int min_replicas_ack = 0;
  double ack_timeout = 1.0;
  // A write whose answer is lost or late (a timeout or a dropped connection after it was
  // sent: the server may have stored it, or may still) is resolved before write()
  // returns: the server is asked, for up to this many seconds, to keep it if it is stored
  // or else to tombstone its key so that it never will be. write() then returns the id
  // (stored) or throws a retryable QueueError (not stored: the SMTP client's retry
  // cannot make a second copy). Unresolved by then, write() throws, and the message is
  // taken back as soon as the server answers (in the background, and before this
  // object's own claim() of it), unless another process claimed it first in the moment
  // between the server's return and the take-back: then it is delivered, and the log
  // says the sender's retry may be a duplicate. 0: ask once. None: the socket_timeout,
  // 20 s without one.
  std::optional<double> resolve_timeout;
  // Seconds to wait for a connect or a reply; none: wait as long as it takes. Blocking
  // waits (wait()) add their own block time to it, so they never time out early.
  std::optional<double> socket_timeout;
  std::string prefix = "slimta:";  // every key this storage creates starts with it
  // Length the notification stream is trimmed to (approximately) on each write.
  size_t notify_max_len = 100000;
  // Idle connections kept for reuse.
  size_t max_idle_connections = 64;
};

class RedisStorage : public QueueStorage {
 public:
  // The seed's constructor: RedisStorage(host='localhost', port=6379, db=0,
  // password=None, socket_timeout=None, prefix='slimta:').
  explicit RedisStorage(std::string host = "localhost", int port = 6379, int db = 0,
                        std::optional<std::string> password = std::nullopt,
                        std::optional<double> socket_timeout = std::nullopt,
                        std::string prefix = "slimta:");
  // Throws InvalidArgument naming the bad field. Connects lazily, on first use.
  explicit RedisStorage(RedisOptions options);
  // What the constructor refuses in `options` (InvalidArgument), without connecting.
  static void check(const RedisOptions& options);
  ~RedisStorage() override;

  const RedisOptions& options() const;

  // The least an ACL user needs for a storage on `prefix` (ACL SETUSER NAME on
  // >PASSWORD followed by this): its keys, and the commands this backend and its
  // scripts run. CONFIG is not in it: capabilities().durable is then false, as the
  // server cannot be asked.
  static std::string acl_rule(std::string_view prefix);

  // durable only when the server writes and fsyncs its append-only file before it
  // answers (appendonly yes, appendfsync always): otherwise a crash of the server or of
  // its host loses the last writes (up to a second with everysec, everything since the
  // last snapshot without AOF). Asked of the server once; false while it cannot be
  // asked or refuses CONFIG.
  Capabilities capabilities() const override;
  std::string kind() const override { return "redis"; }
  std::string write(const Envelope& envelope, Timestamp timestamp) override;
  // SCAN (never KEYS) over PREFIX*, timestamps fetched in pipelined batches. Keys of
  // other prefixes, non-hash keys and hashes that are not messages are ignored; a
  // message hash whose timestamp cannot be read is logged and counted as corrupt.
  std::unique_ptr<EntryStream> load() override;
  size_t repair_due(std::string& cursor) override;
  // From the sets beside each due index (none: nullopt): three reads per index.
  std::optional<QueueStats> stats() override;
  // Shared by every process on the server (src/redis/destinations.cc).
  std::shared_ptr<Destinations> destinations() override;
  void add_counters(const Counters& delta) override;
  Counters counters() override;

 protected:
  QueuedMessage do_get(std::string_view id) override;
  void do_hold(std::string_view id, std::string_view reason, Timestamp since) override;
  void do_release_hold(std::string_view id) override;
  void do_announce(std::string_view id, Timestamp timestamp) override;
  void do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                        std::string_view last_reply,
                        std::span<const RecipientReply> deferred) override;
  uint32_t do_increment_attempts(std::string_view id, Fence fence) override;
  void do_set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes,
                                   Fence fence, std::span<const RecipientFailure> failed) override;
  void do_remove(std::string_view id, Fence fence) override;
  ClaimResult do_claim(std::string_view id, std::chrono::milliseconds duration) override;
  void do_release(std::string_view id, Fence fence) override;
  Lease do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) override;
  // Reports messages written by other RedisStorage objects since this object's first
  // load() or wait() call. If the stream was trimmed past unread entries, every stored
  // message is reported instead, so none is missed.
  std::vector<QueueEntry> do_wait(std::chrono::milliseconds timeout) override;
  std::vector<QueueEntry> do_due(Timestamp now, size_t limit,
                                 std::chrono::milliseconds hand_out) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
