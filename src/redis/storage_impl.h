// RedisStorage's insides, shared by redis_storage.cc (messages, leases, notices) and
// due_index.cc (the due-time index, its sweep and stats()).
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/unsettled_writes.h"
#include "redis/connection.h"
#include "redis/scripts.h"
#include "slimta/redis_storage.h"

namespace slimta {

namespace redis {
// Glob-escapes `s` for SCAN MATCH.
inline std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace redis

struct RedisStorage::Impl {
  using Connection = redis::Connection;
  using Reply = redis::Reply;

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
    Reply r = c.command({"SCAN", cursor, "MATCH", redis::glob_escape(prefix) + "*", "COUNT", "1000",
                         "TYPE", "hash"});
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
                   std::vector<std::string> args, bool acked = true);

  // A write whose outcome is unknown (see RedisOptions::resolve_timeout), by the one
  // script that settles it (abandon_script()): true when the message is stored and kept,
  // false when it is not and never will be. `take_back`: a stored message that no claim
  // has touched is taken back too.
  bool settle(std::string_view id, bool take_back);
  UnsettledWrites unsettled{
      "redis", [this](std::string_view id, bool take_back) { return settle(id, take_back); }};

  class Stream;
};

}  // namespace slimta
