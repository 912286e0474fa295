// RedisStorage's Destinations: one hash per destination, PREFIX ".dest:" NAME, with the
// fields of shaping::DestinationState (a slot is field "slot:ID" = when its lease runs
// out) and a hash PREFIX ".destinations" naming them. Every change is one Lua script on
// the server's clock (TIME), so every node sees one count of slots, one token bucket
// and one health per destination, and hosts with skewed clocks agree. The scripts
// apply the rules of DestinationState (src/core/shaping.cc) step for step: a change to
// one is a change to both (the conformance tests run both).
#include "redis/destinations.h"

#include <charconv>
#include <string>

#include "core/decimal.h"
#include "core/destination_state.h"
#include "redis/connection.h"

namespace slimta::redis {
namespace {

// TIME as seconds, then the hash's fields as a table.
constexpr std::string_view kOpen = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local h = KEYS[1]
local f = redis.call('HGETALL', h)
local s = {}
for i = 1, #f, 2 do s[f[i]] = f[i + 1] end
)lua";

// KEYS: the destination's hash, the index. ARGV: name, max connections, rate (per
// second, 0: none), lease (ms). Returns {status, number, extra...} as strings.
const Script& acquire_script() {
  static const Script s(std::string(kOpen) + R"lua(
redis.call('HSET', KEYS[2], ARGV[1], '1')
local susp = tonumber(s.suspended_until or '0') or 0
if susp == -1 or susp > now then return {'suspended', '1', s.suspend_reason or ''} end
redis.call('EXPIRE', h, 86400)
local used = 0
for k, v in pairs(s) do
  if string.sub(k, 1, 5) == 'slot:' then
    if (tonumber(v) or 0) <= now then
      redis.call('HDEL', h, k)
      s[k] = nil
    else
      used = used + 1
    end
  end
end
local probe = s.probe_slot or '0'
if probe ~= '0' and not s['slot:' .. probe] then
  probe = '0'
  redis.call('HSET', h, 'probe_slot', '0')
end
local failures = tonumber(s.failures or '0') or 0
local down = tonumber(s.down_until or '0') or 0
local is_probe = '0'
if failures > 0 and down > 0 then
  if down > now or probe ~= '0' then
    local wait = 1
    if down > now then wait = down - now end
    return {'down', tostring(wait), tostring(failures), s.last_reply or ''}
  end
  is_probe = '1'
end
if used >= tonumber(ARGV[2]) then return {'busy', '0.1', ARGV[2]} end
local rate = tonumber(ARGV[3])
if rate > 0 then
  local tokens = tonumber(s.tokens or '-1') or -1
  local have = 1
  if tokens >= 0 then
    have = math.min(1, tokens + (now - (tonumber(s.tokens_at or '0') or 0)) * rate)
  end
  if have < 1 then
    redis.call('HSET', h, 'tokens', tostring(have), 'tokens_at', tostring(now))
    return {'rate', tostring(math.max(0.001, (1 - have) / rate))}
  end
  redis.call('HSET', h, 'tokens', tostring(have - 1), 'tokens_at', tostring(now))
end
local slot = redis.call('HINCRBY', h, 'next_slot', 1)
redis.call('HSET', h, 'slot:' .. slot, tostring(now + tonumber(ARGV[4]) / 1000),
           'last_attempt', tostring(now))
if is_probe == '1' then redis.call('HSET', h, 'probe_slot', tostring(slot)) end
return {'granted', tostring(slot), is_probe}
)lua");
  return s;
}

// ARGV: slot, lease (ms).
const Script& renew_script() {
  static const Script s(std::string(kOpen) + R"lua(
if s['slot:' .. ARGV[1]] then
  redis.call('HSET', h, 'slot:' .. ARGV[1], tostring(now + tonumber(ARGV[2]) / 1000))
end
return 1
)lua");
  return s;
}

// ARGV: slot, reachable (1/0), reply, DownPolicy after, initial, max.
const Script& release_script() {
  static const Script s(std::string(kOpen) + R"lua(
redis.call('HDEL', h, 'slot:' .. ARGV[1])
if s.probe_slot == ARGV[1] then redis.call('HSET', h, 'probe_slot', '0') end
if ARGV[3] ~= '' then redis.call('HSET', h, 'last_reply', ARGV[3]) end
if ARGV[2] == '1' then
  redis.call('HSET', h, 'failures', '0', 'down_until', '0')
else
  local failures = redis.call('HINCRBY', h, 'failures', 1)
  local after = tonumber(ARGV[4])
  if after > 0 and failures >= after then
    local interval = math.min(tonumber(ARGV[6]),
                              tonumber(ARGV[5]) * 2 ^ math.min(failures - after, 30))
    redis.call('HSET', h, 'down_until', tostring(now + interval))
  end
end
return 1
)lua");
  return s;
}

// Forgets the failures of a destination that has a state (none is made for a name never
// seen). No ARGV.
const Script& forget_failures_script() {
  static const Script s(std::string(kOpen) + R"lua(
if next(s) == nil then return 0 end
redis.call('HSET', h, 'failures', '0', 'down_until', '0')
return 1
)lua");
  return s;
}

class RedisDestinations : public Destinations {
 public:
  // In a cluster a script's keys must share a slot: every destination's keys carry the
  // hash tag {dest} (PREFIX{dest}.dest:NAME, PREFIX{dest}.destinations).
  explicit RedisDestinations(Pool& pool)
      : pool_(pool),
        base_(pool.options().prefix + (pool.cluster() ? "{dest}" : "")),
        index_(base_ + ".destinations") {}

  SlotGrant acquire(const std::string& destination, const DestinationLimits& limits,
                    std::chrono::milliseconds lease) override {
    std::string max = std::to_string(limits.max_connections);
    std::string rate = decimal_text(limits.max_rate);
    std::string ms = std::to_string(lease.count());
    Reply r = pool_.run_on(index_, false, [&](Connection& c) {
      return c.eval(acquire_script(), {key(destination), index_}, {destination, max, rate, ms});
    });
    auto field = [&](size_t i) {
      return i < r->elements ? reply_string(r->element[i], "destination state") : std::string();
    };
    std::string status = field(0);
    SlotGrant g;
    double number = std::strtod(field(1).c_str(), nullptr);
    if (status == "granted") {
      g.status = SlotGrant::Status::granted;
      g.slot = static_cast<uint64_t>(number);
      g.probe = field(2) == "1";
      return g;
    }
    g.retry_after = number;
    if (status == "suspended") {
      g.status = SlotGrant::Status::suspended;
      g.reason = shaping::suspended_reason(field(2));
    } else if (status == "down") {
      g.status = SlotGrant::Status::down;
      g.reason = shaping::down_reason(static_cast<uint32_t>(std::stoul(field(2))), field(3));
    } else if (status == "rate") {
      g.status = SlotGrant::Status::rate;
      g.reason = "rate limit reached";
    } else {
      g.status = SlotGrant::Status::busy;
      g.reason = "all " + field(2) + " connections in use";
    }
    return g;
  }

  void renew(const std::string& destination, uint64_t slot,
             std::chrono::milliseconds lease) override {
    std::string ms = std::to_string(lease.count());
    pool_.run_on(index_, true, [&](Connection& c) {
      return c.eval(renew_script(), {key(destination)}, {std::to_string(slot), ms});
    });
  }

  void release(const std::string& destination, uint64_t slot, bool reachable,
               std::string_view reply, const DownPolicy& down) override {
    std::string after = std::to_string(down.after), initial = decimal_text(down.initial),
                max = decimal_text(down.max);
    pool_.run_on(index_, false, [&](Connection& c) {
      return c.eval(release_script(), {key(destination)},
                    {std::to_string(slot), reachable ? "1" : "0", reply, after, initial, max});
    });
  }

  void suspend(const std::string& destination, Timestamp until, std::string_view reason) override {
    std::string k = key(destination), u = decimal_text(until);
    pool_.run_on(index_, true, [&](Connection& c) {
      c.append({"MULTI"});
      c.append({"HSET", k, "suspended_until", u, "suspend_reason", reason});
      c.append({"PERSIST", k});
      c.append({"HSET", index_, destination, "1"});
      c.append({"EXEC"});
      Reply multi = c.read_reply(true), a = c.read_reply(true), b = c.read_reply(true),
            d = c.read_reply(true), exec = c.read_reply(true);  // all read before any is checked
      c.check_transaction(exec.get(), {multi.get(), a.get(), b.get(), d.get()});
      return 0;
    });
  }

  void resume(const std::string& destination) override {
    std::string k = key(destination);
    pool_.run_on(index_, true, [&](Connection& c) {
      c.command({"HSET", k, "suspended_until", "0", "suspend_reason", "", "failures", "0",
                 "down_until", "0"});
      c.command({"EXPIRE", k, "86400"});
      return 0;
    });
  }
  void forget_failures(const std::string& destination) override {
    std::string k = key(destination);
    pool_.run_on(index_, true,
                 [&](Connection& c) { return c.eval(forget_failures_script(), {k}, {}); });
  }

  std::vector<DestinationStatus> status() override {
    std::vector<DestinationStatus> out;
    pool_.run_on(index_, true, [&](Connection& c) {
      out.clear();
      Reply time = c.command({"TIME"});
      Timestamp now = std::stod(reply_string(time->element[0], "TIME")) +
                      std::stod(reply_string(time->element[1], "TIME")) / 1e6;
      Reply names = c.command({"HKEYS", index_});
      for (size_t i = 0; i < names->elements; ++i) {
        std::string name = reply_string(names->element[i], "destination name");
        Reply fields = c.command({"HGETALL", key(name)});
        if (fields->elements == 0) {  // expired: idle for a day
          c.command({"HDEL", index_, name});
          continue;
        }
        shaping::DestinationState state;
        for (size_t j = 0; j + 1 < fields->elements; j += 2)
          state.set_field(reply_string(fields->element[j], "field"),
                          reply_string(fields->element[j + 1], "value"));
        out.push_back(state.status(name, now));
      }
      return 0;
    });
    shaping::sort_by_name(out);
    return out;
  }

 private:
  std::string key(const std::string& destination) const { return base_ + ".dest:" + destination; }

  Pool& pool_;
  const std::string base_;
  const std::string index_;
};

}  // namespace

std::shared_ptr<Destinations> make_destinations(Pool& pool) {
  return std::make_shared<RedisDestinations>(pool);
}

}  // namespace slimta::redis
