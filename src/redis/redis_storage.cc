// The Redis backend. Why it is built this way:
//
// * One hash per message, PREFIX+ID: field "record" holds the stored record as written
//   (doc/format.md), fields "timestamp", "attempts", "delivered" and "recipients" the
//   current metadata (and "failed", "deferred", "last_reply", the lease's and the hold's when set),
//   so that updates are single server-side operations.
// * Every metadata update is one Lua script (EVALSHA, EVAL if the server lost it):
//   atomic, one round trip, and it checks that the message exists first, so an update
//   never creates a half record (the python original's HSET/HINCRBY did).
// * write() stores the hash and XADDs to the notification stream in one MULTI/EXEC,
//   pipelined: one round trip, atomic. Not a Lua script: INFO commandstats showed a
//   script costing ~25-30 us of server time per write, most of it copying the record
//   into the Lua VM and back, against ~9.5 us for MULTI/HSET/XADD/EXEC, and the
//   server's time is what 32 writers compete for.
// * Notifications go to a stream, not a list: every waiting process reads every entry
//   from its own position (a BLPOP list hands each entry to one waiter only, and a
//   process would pop its own notifications), the position survives reconnects, and
//   MAXLEN ~ keeps it bounded whether or not anybody waits.
// * Leases live in the hash too (fields "lease_token", "lease_expires" in ms of the
//   server's clock, read with TIME inside the script, so hosts with skewed clocks agree
//   on expiry), and holds ("hold_since", "hold_reason"). Every fenced mutation checks
//   the token in the same script that mutates: the check and the change are one
//   atomic step.
// * The due-time index is a sorted set PREFIX.due of message keys scored by when each
//   is due: its timestamp, or when a due() hand-out runs out. Every script that moves a
//   message's time, hold or existence moves it in the index as KEYS[2], in the same
//   atomic step; a member whose message is gone is dropped by the first script that
//   finds it so. due() reads how many of the oldest due each index holds, then one
//   script per index takes its oldest that many, re-scoring each to the end of its
//   hand-out (what another process took in between is not taken twice). In a cluster
//   a script touches one slot, so with due_slots = N there are N indexes,
//   PREFIX{TAG}.due, one in every (16384/N)-th slot, and a new message's id is picked
//   so that its key is in one of them: message and index share a slot, and every script
//   still keeps them in step.
//   (Ids keep their form; a hash tag in the key would have changed the stored format.)
// * Beside each index, for stats(): PREFIX.received, a sorted set of every message key
//   scored by its receipt time, and PREFIX.held, the set of held ones, kept by the same
//   scripts and transactions (KEYS[3], KEYS[4]); so the queue's size, held count and
//   oldest message are three reads per index, never a read per message.
// * write() picks the id first, so retrying it after a lost reply stores the same hash
//   again rather than a second message (it may announce the message twice; wait()
//   callers treat a notification as a hint to schedule an id, which is idempotent).
#include "slimta/redis_storage.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/decimal.h"
#include "core/paged_stream.h"
#include "core/record.h"
#include "redis/connection.h"
#include "redis/destinations.h"
#include "redis/scripts.h"
#include "redis/storage_impl.h"

namespace slimta {
namespace {

using redis::claim_script;
using redis::Connection;
using redis::delivered_script;
using redis::hold_script;
using redis::increment_script;
using redis::kLeaseLost;
using redis::kMissing;
using redis::kOutOfRange;
using redis::release_script;
using redis::remove_script;
using redis::renew_script;
using redis::Reply;
using redis::Script;
using redis::set_timestamp_script;

const redisReply* script_reply(const Reply& r, std::string_view id, Fence fence) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER) {
    throw QueueError("unexpected reply from redis for message " + std::string(id), true);
  }
  switch (r->element[0]->integer) {
    case kMissing:
      throw KeyError(std::string(id));
    case kLeaseLost:
      if (r->elements < 3 || r->element[1]->type != REDIS_REPLY_INTEGER ||
          r->element[2]->type != REDIS_REPLY_INTEGER)
        throw QueueError("unexpected reply from redis for message " + std::string(id), true);
      throw record::lease_lost(id, fence,
                               Lease{static_cast<uint64_t>(r->element[1]->integer),
                                     static_cast<double>(r->element[2]->integer) / 1000});
    default:
      return r.get();
  }
}

// A script's {2, index, count}: a recipient index the message does not have.
void check_in_range(const redisReply* status) {
  if (status->element[0]->integer == kOutOfRange) {
    throw InvalidArgument("recipient index " + std::to_string(status->element[1]->integer) +
                          " out of range: the message has " +
                          std::to_string(status->element[2]->integer) + " recipients");
  }
}

// Parses "ms-seq" stream ids for comparison.
std::pair<uint64_t, uint64_t> stream_id(std::string_view s) {
  uint64_t ms = 0, seq = 0;
  size_t dash = s.find('-');
  std::from_chars(s.data(), s.data() + (dash == std::string_view::npos ? s.size() : dash), ms);
  if (dash != std::string_view::npos)
    std::from_chars(s.data() + dash + 1, s.data() + s.size(), seq);
  return {ms, seq};
}

std::vector<uint32_t> parse_delivered(std::string_view s) {
  std::vector<uint32_t> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string_view::npos) comma = s.size();
    uint32_t v = 0;
    auto res = std::from_chars(s.data() + pos, s.data() + comma, v);
    if (res.ec != std::errc() || res.ptr != s.data() + comma) {
      throw CorruptRecord("bad delivered list '" + std::string(s) + "'");
    }
    out.push_back(v);
    pos = comma + 1;
  }
  return out;
}

void check_port(const std::string& what, int port) {
  if (port < 1 || port > 65535)
    throw InvalidArgument(what + " port " + std::to_string(port) + " is not in 1-65535");
}

void check_addresses(const std::string& what, const std::vector<RedisOptions::Address>& list) {
  for (const auto& a : list) {
    if (a.host.empty()) throw InvalidArgument(what + " host is empty");
    check_port(what, a.port);
  }
}

void validate(const RedisOptions& o) {
  if (o.unix_socket.empty() && o.host.empty() && o.sentinels.empty() && o.cluster_nodes.empty())
    throw InvalidArgument("redis host is empty");
  check_port("redis", o.port);
  if (o.db < 0) throw InvalidArgument("redis db " + std::to_string(o.db) + " is negative");
  if (o.socket_timeout && !(*o.socket_timeout > 0)) {
    throw InvalidArgument("redis socket_timeout must be more than 0 seconds (or none)");
  }
  if (o.notify_max_len == 0) throw InvalidArgument("redis notify_max_len must be at least 1");
  if (!o.sentinels.empty() && o.sentinel_master.empty())
    throw InvalidArgument("redis sentinels need the name of the master they watch");
  check_addresses("redis sentinel", o.sentinels);
  if (!o.cluster_nodes.empty() && !o.sentinels.empty())
    throw InvalidArgument("redis: a cluster or sentinels, not both");
  if (!o.cluster_nodes.empty() && o.db != 0)
    throw InvalidArgument("redis db " + std::to_string(o.db) + ": a cluster has only db 0");
  if (o.notify_shards == 0 || o.notify_shards > 1024)
    throw InvalidArgument("redis notify_shards " + std::to_string(o.notify_shards) +
                          " is not in 1-1024");
  check_addresses("redis cluster node", o.cluster_nodes);
  if (o.due_slots != 0 && o.cluster_nodes.empty())
    throw InvalidArgument("redis due_slots is for a cluster (one server always has the index)");
  if (o.due_slots > redis::kClusterSlots || (o.due_slots & (o.due_slots - 1)) != 0)
    throw InvalidArgument("redis due_slots " + std::to_string(o.due_slots) +
                          " is not 0 or a power of two up to 16384");
  if (o.min_replicas_ack < 0)
    throw InvalidArgument("redis min_replicas_ack " + std::to_string(o.min_replicas_ack) +
                          " is negative");
  if (!(o.ack_timeout > 0)) throw InvalidArgument("redis ack_timeout must be more than 0 seconds");
  if (o.resolve_timeout && !(*o.resolve_timeout >= 0))
    throw InvalidArgument("redis resolve_timeout must be 0 seconds or more");
}

}  // namespace

std::string RedisStorage::Impl::new_id() const {
  if (!pick_ids) return new_message_id();
  const std::string& prefix = pool.options().prefix;
  static constexpr char kHex[] = "0123456789abcdef";
  while (true) {
    // The random part, then four hex digits counted through until the slot is indexed.
    std::string id = new_message_id();
    id.resize(id.size() - 4);
    uint16_t base = redis::crc16(id, redis::crc16(prefix));
    for (unsigned n = 0; n < 0x10000; ++n) {
      char tail[4] = {kHex[(n >> 12) & 15], kHex[(n >> 8) & 15], kHex[(n >> 4) & 15], kHex[n & 15]};
      uint16_t slot = redis::crc16(std::string_view(tail, 4), base) % redis::kClusterSlots;
      if (due_of_slot[slot] >= 0) return id.append(tail, 4);
    }
  }
}

class RedisStorage::Impl::Stream : public PagedStream {
 public:
  explicit Stream(Impl& impl)
      : impl_(impl),
        // Asked afresh: a replica promoted since the map was made must be scanned,
        // its old master (a replica now, or gone) not.
        masters_(impl.pool.masters(/*fresh=*/true)) {}

 private:
  // One SCAN step (on each master of a cluster in turn), then the timestamps of the
  // keys it found in one pipelined batch.
  bool fetch(std::vector<QueueEntry>& batch) override {
    impl_.pool.run_node(masters_[master_], true, [&](Connection& c) {
      std::vector<std::string> ids;
      std::string next_cursor = impl_.scan_ids(c, cursor_, ids);
      // "recipients" is only in message hashes: other hashes under the prefix are skipped,
      // and so are writes taken back (abandon_script()).
      for (const auto& id : ids)
        c.append({"HMGET", impl_.key(id), "timestamp", "recipients", "abandoned"});
      std::vector<Reply> replies;
      for (size_t i = 0; i < ids.size(); ++i) replies.push_back(c.read_reply(/*allow_error=*/true));
      for (size_t i = 0; i < ids.size(); ++i) {
        const redisReply* h = replies[i].get();
        if (h->type != REDIS_REPLY_ARRAY || h->elements != 3) continue;  // replaced meanwhile
        if (h->element[1]->type == REDIS_REPLY_NIL) continue;            // not a message hash
        if (h->element[2]->type != REDIS_REPLY_NIL) continue;            // taken back
        std::optional<double> ts;
        if (h->element[0]->type == REDIS_REPLY_STRING) {
          ts = parse_decimal(std::string_view(h->element[0]->str, h->element[0]->len));
        }
        if (!ts) {
          ++corrupt_;
          spdlog::error("{}: message {} has no readable timestamp; left in place", c.where(),
                        ids[i]);
          continue;
        }
        batch.push_back(QueueEntry{*ts, ids[i]});
      }
      cursor_ = next_cursor;
      return 0;
    });
    if (cursor_ == "0") ++master_;
    return master_ < masters_.size();
  }

  Impl& impl_;
  std::vector<std::string> masters_;
  size_t master_ = 0;
  std::string cursor_ = "0";
};

RedisStorage::RedisStorage(std::string host, int port, int db, std::optional<std::string> password,
                           std::optional<double> socket_timeout, std::string prefix)
    : RedisStorage([&] {
        RedisOptions o;
        o.host = std::move(host);
        o.port = port;
        o.db = db;
        o.password = std::move(password);
        o.socket_timeout = socket_timeout;
        o.prefix = std::move(prefix);
        return o;
      }()) {}

void RedisStorage::check(const RedisOptions& options) { validate(options); }

RedisStorage::RedisStorage(RedisOptions options) {
  validate(options);
  impl_ = std::make_unique<Impl>(std::move(options));
  impl_->make_due_index();
}

RedisStorage::~RedisStorage() = default;

const RedisOptions& RedisStorage::options() const { return impl_->pool.options(); }

std::string RedisStorage::acl_rule(std::string_view prefix) {
  // Key commands are held to the prefix by ~PREFIX*, scripts' calls too; the others
  // are named one by one, so that nothing keyless and dangerous (FLUSHDB, CONFIG SET,
  // FUNCTION FLUSH) comes with a category.
  return "~" + std::string(prefix) +
         "* resetchannels +@hash +@stream +eval +evalsha +multi +exec +discard +scan +del "
         "+expire +persist +time +select +ping +role +wait +cluster|slots +asking +@sortedset "
         "+sadd +srem +scard +smismember";
}

Capabilities RedisStorage::capabilities() const {
  return Capabilities{.can_wait = true,
                      .shared = true,
                      .durable = impl_->is_durable(),
                      .can_lease = true,
                      .due_index = !impl_->due_keys.empty()};
}

std::string RedisStorage::write(const Envelope& envelope, Timestamp timestamp) {
  std::string id = impl_->new_id();
  record::Metadata meta = record::initial_metadata(envelope, timestamp);
  std::string bytes = record::encode(meta, &envelope);
  std::string key = impl_->key(id);
  std::string ts = decimal_text(timestamp);
  std::string received = decimal_text(envelope.timestamp > 0 ? envelope.timestamp : timestamp);
  std::string rcpts = std::to_string(meta.recipients);
  const std::vector<std::string_view> hset{"HSET",      key, "record",     bytes,
                                           "timestamp", ts,  "attempts",   "0",
                                           "delivered", "",  "recipients", rcpts};
  bool sent = false;  // whether the write may have reached a server
  try {
    if (impl_->pool.cluster()) {
      // The message and its notice are in different slots, so not in one transaction:
      // pipelined to the same master when a stream is there, the notice sent on its own
      // when that one failed (a slot moving); the message is stored either way. Its
      // index is in its slot: the message and its entry are one transaction.
      const std::string& stream = impl_->stream_beside(id, key);
      const std::string* index = impl_->due_key_of(key);
      bool noticed = impl_->pool.run_on(key, true, [&](Connection& c) {
        sent = true;
        if (index) {
          c.append({"MULTI"});
          c.append(hset);
          c.append({"ZADD", *index, ts, key});
          c.append({"ZADD", impl_->received_key(index), received, key});
          c.append({"EXEC"});
        } else {
          c.append(hset);
        }
        impl_->append_notice(c, stream, id, ts);
        c.append_wait();
        Reply replies[5];
        for (size_t i = 0; i < (index ? 5 : 1); ++i) replies[i] = c.read_reply(true);
        Reply notice = c.read_reply(/*allow_error=*/true);
        Reply wait = c.read_wait();
        if (index)
          c.check_transaction(replies[4].get(), {replies[0].get(), replies[1].get(),
                                                 replies[2].get(), replies[3].get()});
        else
          c.check_reply(replies[0].get());
        c.check_wait(wait);
        return notice->type != REDIS_REPLY_ERROR;
      });
      try {
        if (!noticed) announce(id, timestamp);
      } catch (const QueueError& e) {  // this node has it; the others find it at a rescan
        spdlog::warn("redis: {} stored but not announced to other nodes: {}", id, e.what());
      }
      return id;
    }
    impl_->pool.run(true, [&](Connection& c) {
      sent = true;
      c.append({"MULTI"});
      c.append(hset);
      impl_->append_notice(c, id, ts);
      c.append({"ZADD", impl_->due_keys[0], ts, key});
      c.append({"ZADD", impl_->received_keys[0], received, key});
      c.append({"EXEC"});
      c.append_wait();  // one round trip with the transaction
      Reply replies[6];
      for (auto& r : replies) r = c.read_reply(/*allow_error=*/true);  // read all before checking
      Reply wait = c.read_wait();
      c.check_transaction(replies[5].get(), {replies[0].get(), replies[1].get(), replies[2].get(),
                                             replies[3].get(), replies[4].get()});
      c.check_wait(wait);
      return 0;
    });
  } catch (const redis::NotReplicated&) {
    // Not acknowledged, so not accepted: the sender keeps the message and tries again;
    // a copy left here could be delivered beside that one. Taken back if we can.
    try {
      impl_->pool.run_on(key, true, [&](Connection& c) {
        Reply r = c.command({"DEL", key});
        // Its index entries too (else the first script to find the message gone drops them).
        if (const std::string* index = impl_->due_key_of(key)) {
          impl_->append_forget(c, index, key);
          for (int i = 0; i < 3; ++i) c.check_reply(c.read_reply(/*allow_error=*/true).get());
        }
        return r;
      });
    } catch (const QueueError& e) {
      spdlog::warn("redis: {} was not replicated and could not be taken back: {}", id, e.what());
    }
    throw;
  } catch (const redis::ConnectionFailed& e) {
    // Sent, and then the answer was lost or late: stored, not stored, or still on its way.
    if (!sent) throw;
    const RedisOptions& o = impl_->pool.options();
    if (!impl_->unsettled.resolve(id, e.what(),
                                  o.resolve_timeout.value_or(o.socket_timeout.value_or(20.0))))
      throw QueueError("redis: message " + id + " was not stored (" + e.what() + ")", true);
    try {
      announce(id, timestamp);  // its notice may not have been written (a cluster's is apart)
    } catch (const QueueError& n) {
      spdlog::warn("redis: {} stored but not announced to other nodes: {}", id, n.what());
    }
  }
  return id;
}

bool RedisStorage::Impl::settle(std::string_view id, bool take_back) {
  static constexpr std::string_view kTombstoneSeconds = "86400";  // far beyond any TCP retry
  // Not WAITed for: a master that lost its replica (the failover that made the answer
  // late) would refuse every settlement; the write it settles was not acknowledged either.
  Reply r = run_script(redis::abandon_script(), id, true,
                       {take_back ? "1" : "0", std::string(kTombstoneSeconds)}, /*acked=*/false);
  try {
    script_reply(r, id, Fence{});
    return true;
  } catch (const KeyError&) {
    return false;  // {0}: not stored, and never will be
  }
}

std::shared_ptr<Destinations> RedisStorage::destinations() {
  std::call_once(impl_->destinations_once,
                 [&] { impl_->destinations = redis::make_destinations(impl_->pool); });
  return impl_->destinations;
}

void RedisStorage::do_announce(std::string_view id, Timestamp timestamp) {
  std::string ts = decimal_text(timestamp);
  impl_->pool.run_on(impl_->stream_of(id), true, [&](Connection& c) {
    impl_->append_notice(c, id, ts);
    return c.read_reply();
  });
}

Reply RedisStorage::Impl::run_script(const Script& script, std::string_view id, bool idempotent,
                                     std::vector<std::string> args, bool acked) {
  std::string k = key(id);
  std::vector<std::string_view> keys{k};
  if (const std::string* index = due_key_of(k))
    keys.insert(keys.end(), {*index, received_key(index), held_key(index)});
  std::vector<std::string_view> views(args.begin(), args.end());
  return pool.run_on(k, idempotent,
                     [&](Connection& c) { return c.eval(script, keys, views, acked); });
}

void RedisStorage::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                    std::string_view last_reply,
                                    std::span<const RecipientReply> deferred) {
  // The replies as stored (sorted, one per index), and the highest index, which the
  // script checks against the recipient count before it changes anything.
  auto replies = record::sorted_replies({deferred.begin(), deferred.end()});
  Reply r =
      impl_->run_script(set_timestamp_script(), id, true,
                        {std::to_string(fence.token), decimal_text(timestamp),
                         std::string(last_reply), record::encode_replies(replies),
                         replies.empty() ? std::string() : std::to_string(replies.back().index)});
  check_in_range(script_reply(r, id, fence));
}

uint32_t RedisStorage::do_increment_attempts(std::string_view id, Fence fence) {
  // Not retried on a dead connection: the increment may have happened.
  Reply r = impl_->run_script(increment_script(), id, false, {std::to_string(fence.token)});
  return static_cast<uint32_t>(script_reply(r, id, fence)->element[1]->integer);
}

void RedisStorage::do_set_recipients_delivered(std::string_view id,
                                               std::span<const size_t> rcpt_indexes, Fence fence,
                                               std::span<const RecipientFailure> failed) {
  std::vector<std::string> args{std::to_string(fence.token), record::encode_failures(failed)};
  for (size_t i : rcpt_indexes) args.push_back(std::to_string(i));
  Reply r = impl_->run_script(delivered_script(), id, true, std::move(args));
  check_in_range(script_reply(r, id, fence));
}

ClaimResult RedisStorage::do_claim(std::string_view id, std::chrono::milliseconds duration) {
  // A message this object refused (its write went unanswered) and has not settled yet
  // may have landed since: it is taken back before this process could deliver it.
  if (impl_->unsettled.taken_back_if_in_doubt(id)) throw KeyError(std::string(id));
  // A claim whose answer was lost (the connection died, WAIT fell short) may have
  // happened: the next claim of this object for the message sends the same random name
  // and gets that lease back, instead of finding the message busy until it runs out.
  std::string name;
  {
    std::lock_guard lock(impl_->claims_mu);
    auto it = impl_->unanswered_claims.find(std::string(id));
    if (it != impl_->unanswered_claims.end()) {
      name = std::move(it->second);
      impl_->unanswered_claims.erase(it);
    } else {
      name = random_hex(8);
    }
  }
  Reply r;
  try {
    r = impl_->run_script(claim_script(), id, false, {std::to_string(duration.count()), name});
  } catch (const QueueError& e) {
    if (e.retryable()) {  // it may have happened
      std::lock_guard lock(impl_->claims_mu);
      impl_->unanswered_claims.emplace(std::string(id), name);
    }
    throw;
  }
  const redisReply* status = script_reply(r, id, Fence{});
  if (status->elements < 3 || status->element[1]->type != REDIS_REPLY_INTEGER ||
      status->element[2]->type != REDIS_REPLY_INTEGER)
    throw QueueError("unexpected reply from redis to a claim of " + std::string(id), true);
  Lease lease{static_cast<uint64_t>(status->element[1]->integer),
              static_cast<double>(status->element[2]->integer) / 1000};
  switch (status->element[0]->integer) {
    case 1:
      return ClaimResult{ClaimResult::Status::claimed, lease};
    case 2:
      return ClaimResult{ClaimResult::Status::held, lease};
    default:
      return ClaimResult{ClaimResult::Status::busy, lease};
  }
}

void RedisStorage::do_release(std::string_view id, Fence fence) {
  script_reply(impl_->run_script(release_script(), id, false, {std::to_string(fence.token)}), id,
               fence);
}

Lease RedisStorage::do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) {
  // Retried on a dead connection: renewing twice does no harm.
  Reply r = impl_->run_script(renew_script(), id, true,
                              {std::to_string(fence.token), std::to_string(duration.count())});
  const redisReply* status = script_reply(r, id, fence);
  return Lease{static_cast<uint64_t>(status->element[1]->integer),
               static_cast<double>(status->element[2]->integer) / 1000};
}

void RedisStorage::do_hold(std::string_view id, std::string_view reason, Timestamp since) {
  script_reply(
      impl_->run_script(hold_script(), id, true, {decimal_text(since), std::string(reason)}), id,
      Fence{});
}

void RedisStorage::do_release_hold(std::string_view id) {
  script_reply(impl_->run_script(hold_script(), id, true, {"", ""}), id, Fence{});
}

void RedisStorage::add_counters(const Counters& delta) {
  if (delta.empty()) return;
  // Not retried: the increments may have happened.
  impl_->pool.run_on(impl_->counters_key, false, [&](Connection& c) {
    for (const auto& [name, n] : delta)
      c.append({"HINCRBY", impl_->counters_key, name, std::to_string(n)});
    std::vector<Reply> replies;  // all read before any is checked
    for (size_t i = 0; i < delta.size(); ++i) replies.push_back(c.read_reply(true));
    for (const auto& r : replies) c.check_reply(r.get());
    return 0;
  });
}

Counters RedisStorage::counters() {
  Counters out;
  for (const auto& key : impl_->counters_keys) {
    Reply r = impl_->pool.run_on(key, true, [&](Connection& c) {
      return c.command({"HGETALL", key});
    });
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      int64_t n = 0;
      std::string_view v(r->element[i + 1]->str, r->element[i + 1]->len);
      std::from_chars(v.data(), v.data() + v.size(), n);
      out[std::string(r->element[i]->str, r->element[i]->len)] += n;
    }
  }
  return out;
}

std::unique_ptr<EntryStream> RedisStorage::load() {
  impl_->mark_stream_position();
  return std::make_unique<Impl::Stream>(*impl_);
}

QueuedMessage RedisStorage::do_get(std::string_view id) {
  std::string key = impl_->key(id);
  Reply r = impl_->pool.run_on(key, true, [&](Connection& c) {
    return c.command({"HMGET", key, "record", "timestamp", "attempts", "delivered", "lease_token",
                      "lease_expires", "hold_since", "hold_reason", "last_reply", "abandoned",
                      "failed", "deferred"});
  });
  // A reply of the wrong shape is the server's fault, retryable: never "not stored",
  // which would drop the message from the schedule as if an operator had removed it.
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 12)
    throw QueueError("redis: HMGET of " + key + " answered with a reply of the wrong type", true);
  if (r->element[0]->type == REDIS_REPLY_NIL || r->element[9]->type != REDIS_REPLY_NIL)
    throw KeyError(std::string(id));
  std::string what = "redis key " + key;
  record::Message m =
      record::decode_message(std::string_view(r->element[0]->str, r->element[0]->len), what);
  auto field = [&](size_t i) {
    const redisReply* f = r->element[i];
    if (f->type != REDIS_REPLY_STRING)
      throw CorruptRecord("corrupt record " + what + ": metadata field missing");
    return std::string_view(f->str, f->len);
  };
  record::Metadata meta = m.meta;
  auto ts = parse_decimal(field(1));
  uint32_t attempts = 0;
  auto a = field(2);
  if (!ts || std::from_chars(a.data(), a.data() + a.size(), attempts).ec != std::errc()) {
    throw CorruptRecord("corrupt record " + what + ": unreadable timestamp or attempts");
  }
  meta.timestamp = *ts;
  meta.attempts = attempts;
  try {
    meta.delivered = parse_delivered(field(3));
  } catch (const CorruptRecord& e) {
    throw CorruptRecord("corrupt record " + what + ": " + e.what());
  }
  auto optional_field = [&](size_t i) {
    const redisReply* f = r->element[i];
    return f->type == REDIS_REPLY_STRING ? std::string_view(f->str, f->len) : std::string_view();
  };
  uint64_t token = 0, expires_ms = 0;
  auto t = optional_field(4), e = optional_field(5);
  std::from_chars(t.data(), t.data() + t.size(), token);
  std::from_chars(e.data(), e.data() + e.size(), expires_ms);
  meta.lease = Lease{token, static_cast<double>(expires_ms) / 1000};
  if (auto since = parse_decimal(optional_field(6))) {
    meta.hold = Hold{*since, std::string(optional_field(7))};
  }
  meta.last_reply = optional_field(8);
  meta.failed = record::decode_failures(optional_field(10), what);
  meta.deferred = record::decode_replies(optional_field(11), what);
  return record::to_queued(std::move(m.envelope), meta);
}

// Unfenced too: the script removes the message and its index entries in one step.
void RedisStorage::do_remove(std::string_view id, Fence fence) {
  Reply r = impl_->run_script(remove_script(), id, true, {std::to_string(fence.token)});
  if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->integer == kMissing)
    return;  // not an error for remove()
  script_reply(r, id, fence);
}

bool RedisStorage::Impl::read_notices(Connection& c, size_t i, std::optional<int64_t> block,
                                      std::vector<QueueEntry>& out) {
  const std::string& stream = stream_keys[i];
  std::string before = last_ids[i];
  std::vector<std::string_view> args{"XREAD", "COUNT", "1000"};
  std::string block_ms = block ? std::to_string(*block) : "";
  if (block) args.insert(args.end(), {"BLOCK", block_ms});
  args.insert(args.end(), {"STREAMS", stream, before});
  Reply r = c.command(args);
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 || r->element[0]->elements != 2)
    return true;  // nothing new
  const redisReply* entries = r->element[0]->element[1];
  for (size_t e = 0; e < entries->elements; ++e) {
    const redisReply* entry = entries->element[e];
    last_ids[i] = redis::reply_string(entry->element[0], "XREAD id");
    const redisReply* fields = entry->element[1];
    std::string id, writer;
    std::optional<double> ts;
    for (size_t f = 0; f + 1 < fields->elements; f += 2) {
      std::string_view name(fields->element[f]->str, fields->element[f]->len);
      std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
      if (name == "id")
        id = value;
      else if (name == "timestamp")
        ts = parse_decimal(value);
      else if (name == "writer")
        writer = value;
    }
    if (writer == tag) continue;
    if (!is_valid_id(id) || !ts) {  // not ours to fix: skipped, and said once
      spdlog::warn("redis: malformed notification {} in {} skipped", last_ids[i], stream);
      continue;
    }
    out.push_back(QueueEntry{*ts, id});
  }
  // Entries trimmed away before we read them would be lost. The stream has lost entries
  // after `before` if it was trimmed and its first entry is newer than `before`. (It may
  // also be a false alarm when only entries up to `before` went, which takes a reader
  // lagging by ~notify_max_len.)
  Reply info = c.command({"XINFO", "STREAM", stream});
  long long length = 0, added = 0;
  std::string first;
  for (size_t f = 0; f + 1 < info->elements; f += 2) {
    std::string name = redis::reply_string(info->element[f], "XINFO");
    const redisReply* v = info->element[f + 1];
    if (name == "length")
      length = v->integer;
    else if (name == "entries-added")
      added = v->integer;
    else if (name == "recorded-first-entry-id")
      first = redis::reply_string(v, "XINFO");
  }
  return !(added > length && stream_id(first) > stream_id(before));
}

std::vector<QueueEntry> RedisStorage::do_wait(std::chrono::milliseconds timeout) {
  impl_->mark_stream_position();
  std::lock_guard lock(impl_->wait_mu);
  const RedisOptions& o = options();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<QueueEntry> out;
  auto report_all = [&](const std::string& where) {
    spdlog::warn("{}: notifications were trimmed before they were read; reporting every message",
                 where);
    out.clear();
    Impl::Stream stream(*impl_);
    while (auto e = stream.next()) out.push_back(std::move(*e));
  };
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (impl_->pool.cluster()) {
      // Streams in many slots cannot be read by one blocking XREAD: each is polled.
      for (size_t i = 0; i < impl_->stream_keys.size(); ++i) {
        bool complete = impl_->pool.run_on(impl_->stream_keys[i], true, [&](Connection& c) {
          return impl_->read_notices(c, i, std::nullopt, out);
        });
        if (!complete) {
          report_all(impl_->stream_keys[i]);
          return out;
        }
      }
      if (!out.empty() || left.count() <= 0) return out;
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(100)));
      continue;
    }
    int64_t block_ms = std::max<int64_t>(1, left.count());
    if (!impl_->wait_conn || impl_->wait_conn->broken()) impl_->wait_conn = impl_->pool.connect();
    Connection& c = *impl_->wait_conn;
    // The read may take the whole block time: the socket timeout comes on top of it.
    if (o.socket_timeout) c.set_timeout(*o.socket_timeout + static_cast<double>(block_ms) / 1000.0);
    if (!impl_->read_notices(c, 0, block_ms, out)) report_all(c.where());
    if (!out.empty() || std::chrono::steady_clock::now() >= deadline) return out;
  }
}

}  // namespace slimta
