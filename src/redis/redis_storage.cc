// The Redis backend. Why it is built this way:
//
// * One hash per message, PREFIX+ID: field "record" holds the stored record as written
//   (doc/format.md), fields "timestamp", "attempts", "delivered" and "recipients" the
//   current metadata, so that updates are single server-side operations.
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

#include "core/paged_stream.h"
#include "core/record.h"
#include "redis/connection.h"
#include "redis/destinations.h"

namespace slimta {
namespace {

using redis::Connection;
using redis::Reply;
using redis::Script;

// Every script below takes the message's key as KEYS[1] (and the due index as KEYS[2]
// when there is one) and, for the mutations that can be fenced, the fence token as ARGV[1] ("0":
// unfenced), and replies with a table whose first element says what happened (ScriptStatus).
enum ScriptStatus : long long { kMissing = 0, kDone = 1, kOutOfRange = 2, kLeaseLost = 3 };

// The message leaves the index and the sets beside it (it is gone).
constexpr std::string_view kForget = R"lua(
local function forget()
  if KEYS[2] then
    redis.call('ZREM', KEYS[2], KEYS[1])
    redis.call('ZREM', KEYS[3], KEYS[1])
    redis.call('SREM', KEYS[4], KEYS[1])
  end
end
)lua";

// Opens every fenced script: {0} if the message is not stored, {3, token, expires_ms}
// if ARGV[1] is a token that no longer holds the message. A lease field that is not a
// number (written by another tool) counts as 0: no lease, so the message can be
// claimed again, rather than every script failing on it.
const std::string kGate = std::string(kForget) + R"lua(
if redis.call('HEXISTS', KEYS[1], 'record') == 0 then
  forget()
  return {0}
end
if ARGV[1] ~= '0' then
  local l = redis.call('HMGET', KEYS[1], 'lease_token', 'lease_expires')
  if (l[1] or '0') ~= ARGV[1] or (l[2] or '0') == '0' then
    return {3, (tonumber(l[1] or '0') or 0), (tonumber(l[2] or '0') or 0)}
  end
end
)lua";

const Script& set_timestamp_script() {
  static const Script s(std::string(kGate) + R"lua(
redis.call('HSET', KEYS[1], 'timestamp', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'last_reply', ARGV[3]) end
if KEYS[2] and redis.call('HEXISTS', KEYS[1], 'hold_since') == 0 then
  redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
end
return {1}
)lua");
  return s;
}

const Script& increment_script() {
  static const Script s(std::string(kGate) + R"lua(
return {1, redis.call('HINCRBY', KEYS[1], 'attempts', 1)}
)lua");
  return s;
}

// {2, index, count} if an index is out of range (nothing changed).
const Script& delivered_script() {
  static const Script s(std::string(kGate) + R"lua(
local count = tonumber(redis.call('HGET', KEYS[1], 'recipients'))
local set = {}
for i = 2, #ARGV do
  local n = tonumber(ARGV[i])
  if n >= count then return {2, n, count} end
  set[n] = true
end
local current = redis.call('HGET', KEYS[1], 'delivered') or ''
for x in string.gmatch(current, '%d+') do set[tonumber(x)] = true end
local list = {}
for k in pairs(set) do list[#list + 1] = k end
table.sort(list)
for i = 1, #list do list[i] = string.format('%d', list[i]) end
redis.call('HSET', KEYS[1], 'delivered', table.concat(list, ','))
return {1}
)lua");
  return s;
}

const Script& remove_script() {
  static const Script s(std::string(kGate) + R"lua(
redis.call('DEL', KEYS[1])
forget()
return {1}
)lua");
  return s;
}

const Script& release_script() {
  static const Script s(std::string(kGate) + R"lua(
redis.call('HSET', KEYS[1], 'lease_expires', '0')
return {1}
)lua");
  return s;
}

// ARGV[2] = lease duration in ms. {1, token, expires_ms}.
const Script& renew_script() {
  static const Script s(std::string(kGate) + R"lua(
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_expires', string.format('%.0f', expires))
return {1, tonumber(ARGV[1]), expires}
)lua");
  return s;
}

// ARGV[1] = lease duration in ms. {1, token, expires_ms} when claimed; {2, ...} held;
// {4, token, expires_ms} busy.
// A held message found in the due index leaves it (held messages are not due).
const Script& claim_script() {
  static const Script s(std::string(kForget) + R"lua(
if redis.call('HEXISTS', KEYS[1], 'record') == 0 then
  forget()
  return {0}
end
local l = redis.call('HMGET', KEYS[1], 'lease_token', 'lease_expires', 'hold_since')
local token = (tonumber(l[1] or '0') or 0)
local expires = (tonumber(l[2] or '0') or 0)
if l[3] then
  if KEYS[2] then redis.call('ZREM', KEYS[2], KEYS[1]) end
  return {2, token, expires}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if expires > now then
  if redis.call('HGET', KEYS[1], 'lease_claim') ~= ARGV[2] then return {4, token, expires} end
  -- The same claim again: its first answer was lost (see do_claim)
  expires = now + tonumber(ARGV[1])
  redis.call('HSET', KEYS[1], 'lease_expires', string.format('%.0f', expires))
  return {1, token, expires}
end
token = token + 1
expires = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'lease_token', string.format('%.0f', token),
           'lease_expires', string.format('%.0f', expires), 'lease_claim', ARGV[2])
return {1, token, expires}
)lua");
  return s;
}

// ARGV[1] = since ('' to lift the hold), ARGV[2] = reason.
const Script& hold_script() {
  static const Script s(std::string(kForget) + R"lua(
if redis.call('HEXISTS', KEYS[1], 'record') == 0 then
  forget()
  return {0}
end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'hold_since', 'hold_reason')
  if KEYS[2] then
    redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'timestamp'), KEYS[1])
    redis.call('SREM', KEYS[4], KEYS[1])
  end
else
  redis.call('HSET', KEYS[1], 'hold_since', ARGV[1], 'hold_reason', ARGV[2])
  if KEYS[2] then
    redis.call('ZREM', KEYS[2], KEYS[1])
    redis.call('SADD', KEYS[4], KEYS[1])
  end
end
return {1}
)lua");
  return s;
}

// KEYS[1] = the due index; ARGV = now, limit, until (now + hand-out). The oldest members
// due by now, with their scores, each re-scored to `until`: what another process took
// a moment before is not among them, the next ones are.
const Script& due_script() {
  static const Script s(R"lua(
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], ARGV[3], due[i]) end
return due
)lua");
  return s;
}

// KEYS[1] = the due index, KEYS[2] its received set, KEYS[3] its held set, KEYS[4...] =
// message keys: each message stored, not held and missing from the index is put in it
// at its timestamp (returned: how many); one missing from the received set is put there
// (scored by its timestamp: a message stored before the set has lost its receipt time
// to the hash's record), and a held one in the held set.
const Script& repair_script() {
  static const Script s(R"lua(
local n = 0
for i = 4, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'timestamp', 'recipients', 'hold_since')
  local ts = tonumber(h[1] or '')
  if ts and h[2] then
    if not h[3] and not redis.call('ZSCORE', KEYS[1], KEYS[i]) then
      redis.call('ZADD', KEYS[1], h[1], KEYS[i])
      n = n + 1
    end
    if not redis.call('ZSCORE', KEYS[2], KEYS[i]) then redis.call('ZADD', KEYS[2], h[1], KEYS[i]) end
    if h[3] then redis.call('SADD', KEYS[3], KEYS[i]) end
  end
end
return n
)lua");
  return s;
}

// KEYS[1] = a received set, KEYS[2] = its held set: {messages, held[, oldest receipt]},
// one request per index for stats().
const Script& stats_script() {
  static const Script s(R"lua(
local out = {redis.call('ZCARD', KEYS[1]), redis.call('SCARD', KEYS[2])}
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then out[3] = oldest[2] end
return out
)lua");
  return s;
}

// The status of a script's reply; throws KeyError / LeaseLost for those statuses.
const redisReply* script_reply(const Reply& r, std::string_view id, Fence fence) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_INTEGER) {
    throw QueueError("unexpected reply from redis for message " + std::string(id));
  }
  switch (r->element[0]->integer) {
    case kMissing:
      throw KeyError(std::string(id));
    case kLeaseLost:
      throw record::lease_lost(id, fence,
                               Lease{static_cast<uint64_t>(r->element[1]->integer),
                                     static_cast<double>(r->element[2]->integer) / 1000});
    default:
      return r.get();
  }
}

// Glob-escapes `s` for SCAN MATCH.
std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
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
}

}  // namespace

struct RedisStorage::Impl {
  explicit Impl(RedisOptions o) : pool(std::move(o)) {}

  redis::Pool pool;
  std::once_flag destinations_once;
  std::shared_ptr<Destinations> destinations;

  // PREFIX + NAME on a server; in a cluster notify_shards keys PREFIX + NAME + ".N",
  // spread over the slots, so that none is a hot key.
  std::vector<std::string> sharded(const std::string& name) const {
    std::string key = pool.options().prefix + name;
    if (!pool.cluster()) return {key};
    std::vector<std::string> keys;
    for (size_t i = 0; i < pool.options().notify_shards; ++i)
      keys.push_back(key + "." + std::to_string(i));
    return keys;
  }
  // The notices' streams, and their slots.
  std::vector<std::string> stream_keys = sharded(".notify");
  std::vector<uint16_t> stream_slots = [&] {
    std::vector<uint16_t> slots;
    for (const auto& k : stream_keys) slots.push_back(redis::key_slot(k));
    return slots;
  }();
  // The event counters: each process adds to one, counters() sums them.
  std::vector<std::string> counters_keys = sharded(".counters");
  std::string tag = random_hex(8);  // marks this object's notifications
  const std::string& counters_key = counters_keys[redis::key_slot(tag) % counters_keys.size()];

  // The due index: its sorted sets (none: no index), and in a cluster the one of each
  // slot (-1: the slot has none). See the top of this file.
  std::vector<std::string> due_keys;
  std::vector<int> due_of_slot;
  // Cluster: new ids are picked so that their keys fall in an indexed slot.
  bool pick_ids = false;
  void make_due_index();
  void make_due_keys();
  // Beside each index (same name but .received and .held for .due: the same hash tag,
  // so the same slot), for stats(): every message by receipt time, and the held ones.
  std::vector<std::string> received_keys, held_keys;
  // The index that holds message key `key`, if any.
  const std::string* due_key_of(std::string_view key) const {
    if (due_keys.empty()) return nullptr;
    if (!pool.cluster()) return &due_keys[0];
    int i = due_of_slot[redis::key_slot(key)];
    return i < 0 ? nullptr : &due_keys[static_cast<size_t>(i)];
  }
  const std::string& received_key(const std::string* index) const {
    return received_keys[static_cast<size_t>(index - due_keys.data())];
  }
  const std::string& held_key(const std::string* index) const {
    return held_keys[static_cast<size_t>(index - due_keys.data())];
  }
  // Appends the commands that take message `key` out of its index and the sets beside.
  void append_forget(Connection& c, const std::string* index, const std::string& key) const {
    c.append({"ZREM", *index, key});
    c.append({"ZREM", received_key(index), key});
    c.append({"SREM", held_key(index), key});
  }
  // A new message id: new_message_id(), or in a cluster with the index one whose key is
  // in an indexed slot (tried until one is: 16384 / due_slots tries on average, the CRC
  // of the prefix and the random part taken once).
  std::string new_id() const;
  // Messages the repair sweep found in slots without an index, this pass.
  std::atomic<size_t> unindexed{0};

  std::mutex wait_mu;
  std::unique_ptr<Connection> wait_conn;
  std::vector<std::string> last_ids;  // by stream; empty until the first load() or wait()

  std::string key(std::string_view id) const { return pool.options().prefix + std::string(id); }

  // Queues the notice of `id` (due at `ts`, formatted) on the notification stream:
  // write() in its transaction, announce() alone.
  void append_notice(Connection& c, std::string_view id, std::string_view ts) const {
    append_notice(c, stream_of(id), id, ts);
  }
  void append_notice(Connection& c, const std::string& stream, std::string_view id,
                     std::string_view ts) const {
    std::string maxlen = std::to_string(pool.options().notify_max_len);
    c.append(
        {"XADD", stream, "MAXLEN", "~", maxlen, "*", "id", id, "timestamp", ts, "writer", tag});
  }
  // Cluster: a notice stream on the master of `key`'s slot, so that the message and its
  // notice go in one round trip (readers read every stream); stream_of(id) if none is.
  const std::string& stream_beside(std::string_view id, std::string_view key) {
    std::string master = pool.master_of(redis::key_slot(key));
    size_t first = redis::key_slot(id) % stream_keys.size();
    for (size_t n = 0; n < stream_keys.size(); ++n) {
      size_t i = (first + n) % stream_keys.size();
      if (pool.master_of(stream_slots[i]) == master) return stream_keys[i];
    }
    return stream_of(id);
  }
  // The stream that carries the notices of `id`.
  const std::string& stream_of(std::string_view id) const {
    return stream_keys[stream_keys.size() == 1 ? 0 : redis::key_slot(id) % stream_keys.size()];
  }
  // Reads the notices of stream `i` after last_ids[i] into `out` (waiting up to `block`
  // ms for one, if given). Returns false when notices were trimmed away unread: the
  // caller then reports every message.
  bool read_notices(Connection& c, size_t i, std::optional<int64_t> block,
                    std::vector<QueueEntry>& out);

  // Whether the server writes and fsyncs its append-only file before it answers: asked
  // once (CONFIG GET); not remembered while the server cannot be asked.
  std::mutex durable_mu;
  std::optional<bool> durable;
  bool is_durable() {
    std::lock_guard lock(durable_mu);
    if (durable) return *durable;
    try {
      auto config = [&](const char* name) {
        return pool.run(true, [&](Connection& c) {
          Reply r = c.command({"CONFIG", "GET", name}, /*allow_error=*/true);
          if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
            return redis::reply_string(r->element[1], "CONFIG GET");
          return std::string();  // CONFIG refused (renamed away by the operator, say)
        });
      };
      durable = config("appendonly") == "yes" && config("appendfsync") == "always";
      return *durable;
    } catch (const QueueError&) {
      return false;
    }
  }

  // Remembers the stream's end, so wait() reports whatever is written after this.
  void mark_stream_position() {
    std::lock_guard lock(wait_mu);
    if (!last_ids.empty()) return;
    std::vector<std::string> ids;
    for (const auto& key : stream_keys) {
      ids.push_back(pool.run_on(key, true, [&](Connection& c) {
        Reply r = c.command({"XREVRANGE", key, "+", "-", "COUNT", "1"});
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements >= 1) {
          return redis::reply_string(r->element[0]->element[0], "XREVRANGE");
        }
        return std::string("0-0");
      }));
    }
    last_ids = std::move(ids);
  }

  // Claims sent without an answer, by message id: the name each was sent with.
  std::mutex claims_mu;
  std::unordered_map<std::string, std::string> unanswered_claims;

  // One SCAN step from `cursor` ("0" first) over the message hashes under the prefix:
  // the ids of the keys it found into `ids`; returns the next cursor ("0": done).
  std::string scan_ids(Connection& c, const std::string& cursor, std::vector<std::string>& ids) {
    const std::string& prefix = pool.options().prefix;
    Reply r = c.command(
        {"SCAN", cursor, "MATCH", glob_escape(prefix) + "*", "COUNT", "1000", "TYPE", "hash"});
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) throw QueueError("unexpected SCAN reply");
    const redisReply* keys = r->element[1];
    for (size_t i = 0; i < keys->elements; ++i) {
      std::string_view k(keys->element[i]->str, keys->element[i]->len);
      if (!k.starts_with(prefix)) continue;
      std::string_view id = k.substr(prefix.size());
      if (is_valid_id(id)) ids.emplace_back(id);
    }
    return redis::reply_string(r->element[0], "SCAN cursor");
  }

  // Runs a per-message script on KEYS[1] = key(id).
  Reply run_script(const redis::Script& script, std::string_view id, bool idempotent,
                   std::vector<std::string> args);

  class Stream;
};

void RedisStorage::Impl::make_due_index() {
  make_due_keys();
  for (const std::string& due : due_keys) {
    std::string base = due.substr(0, due.size() - std::string_view(".due").size());
    received_keys.push_back(base + ".received");
    held_keys.push_back(base + ".held");
  }
}

void RedisStorage::Impl::make_due_keys() {
  const RedisOptions& o = pool.options();
  if (!pool.cluster()) {
    due_keys = {o.prefix + ".due"};
    return;
  }
  if (o.due_slots == 0) return;
  due_of_slot.assign(redis::kClusterSlots, -1);
  if (redis::has_hash_tag(o.prefix)) {  // every key is in the prefix's slot: one index
    due_keys = {o.prefix + ".due"};
    due_of_slot[redis::key_slot(o.prefix)] = 0;
    return;
  }
  // Every (16384 / N)-th slot, so that a larger N keeps these. Each index is named with
  // a hash tag found to land in its slot.
  const size_t step = redis::kClusterSlots / o.due_slots;
  due_keys.resize(o.due_slots);
  for (size_t found = 0, n = 0; found < o.due_slots; ++n) {
    std::string key = o.prefix + "{" + std::to_string(n) + "}.due";
    uint16_t slot = redis::key_slot(key);
    if (slot % step != 0 || due_of_slot[slot] >= 0) continue;
    due_of_slot[slot] = static_cast<int>(slot / step);
    due_keys[slot / step] = std::move(key);
    ++found;
  }
  pick_ids = true;
}

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
      // "recipients" is only in message hashes: other hashes under the prefix are skipped.
      for (const auto& id : ids) c.append({"HMGET", impl_.key(id), "timestamp", "recipients"});
      std::vector<Reply> replies;
      for (size_t i = 0; i < ids.size(); ++i) replies.push_back(c.read_reply(/*allow_error=*/true));
      for (size_t i = 0; i < ids.size(); ++i) {
        const redisReply* h = replies[i].get();
        if (h->type != REDIS_REPLY_ARRAY || h->elements != 2) continue;  // replaced meanwhile
        if (h->element[1]->type == REDIS_REPLY_NIL) continue;            // not a message hash
        std::optional<double> ts;
        if (h->element[0]->type == REDIS_REPLY_STRING) {
          ts = redis::parse_timestamp(std::string_view(h->element[0]->str, h->element[0]->len));
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
  std::string ts = redis::format_timestamp(timestamp);
  std::string received =
      redis::format_timestamp(envelope.timestamp > 0 ? envelope.timestamp : timestamp);
  std::string rcpts = std::to_string(meta.recipients);
  const std::vector<std::string_view> hset{"HSET",      key, "record",     bytes,
                                           "timestamp", ts,  "attempts",   "0",
                                           "delivered", "",  "recipients", rcpts};
  try {
    if (impl_->pool.cluster()) {
      // The message and its notice are in different slots, so not in one transaction:
      // pipelined to the same master when a stream is there, the notice sent on its own
      // when that one failed (a slot moving); the message is stored either way. Its
      // index is in its slot: the message and its entry are one transaction.
      const std::string& stream = impl_->stream_beside(id, key);
      const std::string* index = impl_->due_key_of(key);
      bool noticed = impl_->pool.run_on(key, true, [&](Connection& c) {
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
  }
  return id;
}

std::shared_ptr<Destinations> RedisStorage::destinations() {
  std::call_once(impl_->destinations_once,
                 [&] { impl_->destinations = redis::make_destinations(impl_->pool); });
  return impl_->destinations;
}

void RedisStorage::do_announce(std::string_view id, Timestamp timestamp) {
  std::string ts = redis::format_timestamp(timestamp);
  impl_->pool.run_on(impl_->stream_of(id), true, [&](Connection& c) {
    impl_->append_notice(c, id, ts);
    return c.read_reply();
  });
}

Reply RedisStorage::Impl::run_script(const Script& script, std::string_view id, bool idempotent,
                                     std::vector<std::string> args) {
  std::string k = key(id);
  std::vector<std::string_view> keys{k};
  if (const std::string* index = due_key_of(k))
    keys.insert(keys.end(), {*index, received_key(index), held_key(index)});
  std::vector<std::string_view> views(args.begin(), args.end());
  return pool.run_on(k, idempotent,
                     [&](Connection& c) { return c.eval(script, keys, views, /*acked=*/true); });
}

void RedisStorage::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                    std::string_view last_reply) {
  Reply r = impl_->run_script(
      set_timestamp_script(), id, true,
      {std::to_string(fence.token), redis::format_timestamp(timestamp), std::string(last_reply)});
  script_reply(r, id, fence);
}

uint32_t RedisStorage::do_increment_attempts(std::string_view id, Fence fence) {
  // Not retried on a dead connection: the increment may have happened.
  Reply r = impl_->run_script(increment_script(), id, false, {std::to_string(fence.token)});
  return static_cast<uint32_t>(script_reply(r, id, fence)->element[1]->integer);
}

void RedisStorage::do_set_recipients_delivered(std::string_view id,
                                               std::span<const size_t> rcpt_indexes, Fence fence) {
  std::vector<std::string> args{std::to_string(fence.token)};
  for (size_t i : rcpt_indexes) args.push_back(std::to_string(i));
  Reply r = impl_->run_script(delivered_script(), id, true, std::move(args));
  const redisReply* status = script_reply(r, id, fence);
  if (status->element[0]->integer == kOutOfRange) {
    throw InvalidArgument("recipient index " + std::to_string(status->element[1]->integer) +
                          " out of range: the message has " +
                          std::to_string(status->element[2]->integer) + " recipients");
  }
}

ClaimResult RedisStorage::do_claim(std::string_view id, std::chrono::milliseconds duration) {
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
  script_reply(impl_->run_script(hold_script(), id, true,
                                 {redis::format_timestamp(since), std::string(reason)}),
               id, Fence{});
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
                      "lease_expires", "hold_since", "hold_reason", "last_reply"});
  });
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 9 || r->element[0]->type == REDIS_REPLY_NIL) {
    throw KeyError(std::string(id));
  }
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
  auto ts = redis::parse_timestamp(field(1));
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
  if (auto since = redis::parse_timestamp(optional_field(6))) {
    meta.hold = Hold{*since, std::string(optional_field(7))};
  }
  meta.last_reply = optional_field(8);
  return record::to_queued(std::move(m.envelope), meta);
}

// Unfenced too: the script removes the message and its index entries in one step.
void RedisStorage::do_remove(std::string_view id, Fence fence) {
  Reply r = impl_->run_script(remove_script(), id, true, {std::to_string(fence.token)});
  if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->integer == kMissing)
    return;  // not an error for remove()
  script_reply(r, id, fence);
}

std::vector<QueueEntry> RedisStorage::do_due(Timestamp now, size_t limit,
                                             std::chrono::milliseconds hand_out) {
  const std::vector<std::string>& indexes = impl_->due_keys;
  if (indexes.empty()) throw NotSupported("redis cluster without due-slots=: no due-time index");
  const std::string& prefix = options().prefix;
  std::string until =
      redis::format_timestamp(now + std::chrono::duration<double>(hand_out).count());
  std::string at = redis::format_timestamp(now);
  std::map<std::string, std::vector<size_t>> by_master;
  for (size_t i = 0; i < indexes.size(); ++i)
    by_master[impl_->pool.cluster() ? impl_->pool.master_of(redis::key_slot(indexes[i])) : ""]
        .push_back(i);

  // How many of the oldest `wanted` due each index holds: each read on its master, all
  // of a master's in one pipelined round trip (an index whose slot is moving is then
  // read on its own, following the cluster's redirection). Reads only: nothing is handed
  // out while nothing is due.
  auto due_in_each = [&](size_t wanted) {
    std::string count = std::to_string(wanted);
    auto range = [&](Connection& c, size_t i) {
      c.append({"ZRANGEBYSCORE", indexes[i], "-inf", at, "WITHSCORES", "LIMIT", "0", count});
    };
    std::vector<std::pair<double, size_t>> found;  // score, index
    auto take = [&](const redisReply* r, size_t i) {
      for (size_t e = 0; e + 1 < r->elements; e += 2) {
        auto score = redis::parse_timestamp(redis::reply_string(r->element[e + 1], "due"));
        if (score) found.emplace_back(*score, i);
      }
    };
    for (const auto& node : by_master) {
      const auto& master = node.first;  // captured below: not a structured binding (clang 14)
      const auto& list = node.second;
      std::vector<size_t> elsewhere;
      impl_->pool.run_node(master, true, [&](Connection& c) {
        for (size_t i : list) range(c, i);
        for (size_t i : list) {
          Reply r = c.read_reply(/*allow_error=*/true);
          if (r->type == REDIS_REPLY_ERROR)
            elsewhere.push_back(i);
          else
            take(r.get(), i);
        }
        return 0;
      });
      for (size_t i : elsewhere) {
        Reply r = impl_->pool.run_on(indexes[i], true, [&](Connection& c) {
          range(c, i);
          return c.read_reply();
        });
        take(r.get(), i);
      }
    }
    std::sort(found.begin(), found.end());
    if (found.size() > wanted) found.resize(wanted);
    std::map<size_t, size_t> per_index;
    for (const auto& [score, i] : found) ++per_index[i];
    return per_index;
  };

  // Then each index hands out its oldest that many by one script, atomically: members
  // another process took in between are not handed out twice; the next ones are. An
  // index that had fewer left than asked (others took them) is made up for by asking
  // again, a few rounds at most. Not retried on a dead connection (what it handed out
  // would be lost for a hand-out), and not acknowledged by replicas: a hand-out lost to
  // a failover only means a message is handed out twice, and claim() lets one process
  // have it.
  std::vector<QueueEntry> out;
  for (int round = 0; round < 4 && out.size() < limit; ++round) {
    bool short_of_it = false;
    for (const auto& [i, n] : due_in_each(limit - out.size())) {
      const std::string& index = indexes[i];
      std::string wanted = std::to_string(n);
      Reply r = impl_->pool.run_on(index, false, [&](Connection& c) {
        return c.eval(due_script(), {index}, {at, wanted, until});
      });
      short_of_it = short_of_it || r->elements / 2 < n;
      for (size_t e = 0; e + 1 < r->elements; e += 2) {
        std::string key = redis::reply_string(r->element[e], "due");
        auto ts = redis::parse_timestamp(redis::reply_string(r->element[e + 1], "due"));
        std::string_view id = std::string_view(key).substr(std::min(prefix.size(), key.size()));
        if (!key.starts_with(prefix) || !is_valid_id(id) || !ts) {
          spdlog::warn("redis: {} has a member that names no message: '{}'; dropped", index, key);
          impl_->pool.run_on(index, true, [&](Connection& c) {
            return c.command({"ZREM", index, key});
          });
          continue;
        }
        out.push_back(QueueEntry{*ts, std::string(id)});
      }
    }
    if (!short_of_it) break;
  }
  std::stable_sort(out.begin(), out.end(), [](const QueueEntry& a, const QueueEntry& b) {
    return a.timestamp < b.timestamp;
  });
  return out;
}

std::optional<QueueStats> RedisStorage::stats() {
  if (impl_->due_keys.empty()) return std::nullopt;
  QueueStats out;
  for (size_t i = 0; i < impl_->due_keys.size(); ++i) {
    std::vector<std::string_view> keys{impl_->received_keys[i], impl_->held_keys[i]};
    Reply r = impl_->pool.run_on(impl_->due_keys[i], true, [&](Connection& c) {
      return c.eval(stats_script(), keys, {}, /*acked=*/false);
    });
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2)
      throw QueueError("redis: unexpected reply to the stats script");
    out.messages += static_cast<uint64_t>(std::max<long long>(0, r->element[0]->integer));
    out.held += static_cast<uint64_t>(std::max<long long>(0, r->element[1]->integer));
    if (r->elements == 3) {
      auto ts = redis::parse_timestamp(redis::reply_string(r->element[2], "received"));
      if (ts && *ts > 0 && (out.oldest == 0 || *ts < out.oldest)) out.oldest = *ts;
    }
  }
  return out;
}

size_t RedisStorage::repair_due(std::string& cursor) {
  if (impl_->due_keys.empty())
    throw NotSupported("redis cluster without due-slots=: no due-time index");
  // The cursor: "M/SCAN-CURSOR", the M-th master (as masters() lists them; one on a
  // server) and where its SCAN is.
  size_t m = 0;
  std::string scan = "0";
  if (!cursor.empty()) {
    size_t slash = cursor.find('/');
    auto res = std::from_chars(cursor.data(), cursor.data() + std::min(slash, cursor.size()), m);
    if (slash == std::string::npos || res.ptr != cursor.data() + slash)
      throw InvalidArgument("redis: not a repair_due() cursor: '" + cursor.substr(0, 80) + "'");
    scan = cursor.substr(slash + 1);
  } else {
    impl_->unindexed = 0;
  }
  std::vector<std::string> masters = impl_->pool.masters();
  std::vector<std::string> ids;
  std::string next =
      m >= masters.size() ? "0" : impl_->pool.run_node(masters[m], true, [&](Connection& c) {
        return impl_->scan_ids(c, scan, ids);
      });
  // The keys found, by the index that holds each (in its slot, in a cluster).
  std::map<const std::string*, std::vector<std::string>> by_index;
  for (const auto& id : ids) {
    std::string key = impl_->key(id);
    if (const std::string* index = impl_->due_key_of(key))
      by_index[index].push_back(std::move(key));
    else
      ++impl_->unindexed;
  }
  size_t repaired = 0;
  for (const auto& entry : by_index) {
    const std::string* index = entry.first;  // captured below: not a structured binding
    const std::vector<std::string>& keys = entry.second;
    repaired += impl_->pool.run_on(*index, true, [&](Connection& c) -> size_t {
      // Which are in the index, the received set and the held set (all that should be,
      // but after an upgrade or a fault): only the others are looked at, by the script
      // that repairs them. A held message is in the received and held sets, not the index.
      const std::string& received = impl_->received_key(index);
      const std::string& held = impl_->held_key(index);
      for (const auto& [command, set] :
           {std::pair<const char*, const std::string*>{"ZMSCORE", index},
            {"ZMSCORE", &received},
            {"SMISMEMBER", &held}}) {
        std::vector<std::string_view> args{command, *set};
        args.insert(args.end(), keys.begin(), keys.end());
        c.append(args);
      }
      Reply in_index = c.read_reply(/*allow_error=*/true);  // all read before checking
      Reply in_received = c.read_reply(/*allow_error=*/true);
      Reply in_held = c.read_reply(/*allow_error=*/true);
      for (const Reply* r : {&in_index, &in_received, &in_held}) c.check_reply(r->get());
      std::vector<std::string_view> missing{*index, received, held};
      for (size_t i = 0; i < keys.size(); ++i) {
        auto present = [&](const Reply& r) {
          return i < r->elements && r->element[i]->type != REDIS_REPLY_NIL &&
                 !(r->element[i]->type == REDIS_REPLY_INTEGER && r->element[i]->integer == 0);
        };
        bool indexed = present(in_index) || present(in_held);
        if (!indexed || !present(in_received)) missing.push_back(keys[i]);
      }
      if (missing.size() == 3) return 0;
      Reply n = c.eval(repair_script(), missing, {});
      return n->type == REDIS_REPLY_INTEGER ? static_cast<size_t>(n->integer) : 0;
    });
  }
  if (next == "0") ++m;
  if (m < masters.size()) {
    cursor = std::to_string(m) + "/" + next;
    return repaired;
  }
  cursor.clear();
  if (size_t n = impl_->unindexed.exchange(0)) {
    spdlog::warn(
        "redis: {} messages are in slots without the due-time index (stored before "
        "due-slots= was set, or with a larger one): nodes that use the index do not attempt "
        "them; serve one node with --full-schedule until this warning stops",
        n);
  }
  return repaired;
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
        ts = redis::parse_timestamp(value);
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
