// The due-time index of RedisStorage (redis_storage.cc says how it is kept): due(), the
// repair sweep, and stats() from the sets beside each index.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "core/decimal.h"
#include "redis/storage_impl.h"

namespace slimta {

using redis::Connection;
using redis::due_script;
using redis::repair_script;
using redis::Reply;
using redis::stats_script;

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

std::vector<QueueEntry> RedisStorage::do_due(Timestamp now, size_t limit,
                                             std::chrono::milliseconds hand_out) {
  const std::vector<std::string>& indexes = impl_->due_keys;
  if (indexes.empty()) throw NotSupported("redis cluster without due-slots=: no due-time index");
  const std::string& prefix = options().prefix;
  std::string until = decimal_text(now + std::chrono::duration<double>(hand_out).count());
  std::string at = decimal_text(now);
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
        auto score = parse_decimal(redis::reply_string(r->element[e + 1], "due"));
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
        auto ts = parse_decimal(redis::reply_string(r->element[e + 1], "due"));
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
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER)
      throw QueueError("redis: unexpected reply to the stats script", true);
    out.messages += static_cast<uint64_t>(std::max<long long>(0, r->element[0]->integer));
    out.held += static_cast<uint64_t>(std::max<long long>(0, r->element[1]->integer));
    if (r->elements == 3) {
      auto ts = parse_decimal(redis::reply_string(r->element[2], "received"));
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

}  // namespace slimta
