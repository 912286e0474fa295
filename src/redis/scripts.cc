#include "redis/scripts.h"

#include <string>
#include <string_view>

namespace slimta::redis {
namespace {

// The message leaves the index and the sets beside it (it is gone).
// stored(): whether KEYS[1] holds a message: a record that was not taken back (a write
// whose outcome was unknown and that abandon_script() tombstoned may still land later,
// its HSET beside the tombstone: it is never a message).
// And count(): a lease field as a whole number, or nil when it is not one (Lua's
// tonumber takes "nan" and "inf", which no comparison or increment survives).
constexpr std::string_view kForget = R"lua(
local function count(v)
  local n = tonumber(v)
  if n and n == n and n >= 0 and n < 9007199254740992 and math.floor(n) == n then return n end
  return nil
end
local function stored()
  return redis.call('HEXISTS', KEYS[1], 'record') == 1 and
         redis.call('HEXISTS', KEYS[1], 'abandoned') == 0
end
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
if not stored() then
  forget()
  return {0}
end
if ARGV[1] ~= '0' then
  local l = redis.call('HMGET', KEYS[1], 'lease_token', 'lease_expires')
  if (l[1] or '0') ~= ARGV[1] or (l[2] or '0') == '0' then
    return {3, count(l[1] or '0') or 0, count(l[2] or '0') or 0}
  end
end
)lua";

}  // namespace

const Script& set_timestamp_script() {
  static const Script s(std::string(kGate) + R"lua(
if ARGV[4] ~= '' then
  local count = tonumber(redis.call('HGET', KEYS[1], 'recipients'))
  local n = tonumber(ARGV[5])
  if n >= count then return {2, n, count} end
end
redis.call('HSET', KEYS[1], 'timestamp', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'last_reply', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'deferred', ARGV[4]) end
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

// ARGV: fence token, the failures as the record's failed field (appended to the hash
// field 'failed': a later entry for an index replaces an earlier), then the indexes.
// {2, index, count} if an index is out of range (nothing changed).
const Script& delivered_script() {
  static const Script s(std::string(kGate) + R"lua(
local count = tonumber(redis.call('HGET', KEYS[1], 'recipients'))
local set = {}
for i = 3, #ARGV do
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
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'failed', (redis.call('HGET', KEYS[1], 'failed') or '') .. ARGV[2])
end
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
if not stored() then
  forget()
  return {0}
end
local l = redis.call('HMGET', KEYS[1], 'lease_token', 'lease_expires', 'hold_since')
local token = count(l[1] or '0')
local expires = count(l[2] or '0')
if l[3] then
  if KEYS[2] then redis.call('ZREM', KEYS[2], KEYS[1]) end
  return {2, token or 0, expires or 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not token or not expires then
  -- A lease field that does not read (another tool wrote it, or it was damaged) is a
  -- lease held by someone unknown: it lasts until its expiry, or one lease from now
  -- when that does not read either; then a claim takes it with a token above any
  -- count (the time in ms).
  if not expires then
    expires = now + tonumber(ARGV[1])
    redis.call('HSET', KEYS[1], 'lease_expires', string.format('%.0f', expires))
  end
  if expires > now then return {4, 0, expires} end
  token = now
end
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
if not stored() then
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

// Resolves a write whose outcome is unknown (its answer was lost or late: it may have
// landed, or still be on its way): ARGV[1] = '1' to take the message back when no claim
// has touched it yet, '0' to keep it when it is stored; ARGV[2] = how long (s) the
// tombstone lasts. {1}: stored, and kept; {0}: not stored, and it never will be (the
// tombstone makes a late HSET of the write land beside it, which stored() refuses).
const Script& abandon_script() {
  static const Script s(std::string(kForget) + R"lua(
if redis.call('HEXISTS', KEYS[1], 'abandoned') == 1 then
  forget()
  return {0}
end
if redis.call('HEXISTS', KEYS[1], 'record') == 1 then
  if ARGV[1] ~= '1' or redis.call('HEXISTS', KEYS[1], 'lease_token') == 1 then return {1} end
  redis.call('DEL', KEYS[1])
end
forget()
redis.call('HSET', KEYS[1], 'abandoned', '1')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {0}
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
  local h = redis.call('HMGET', KEYS[i], 'timestamp', 'recipients', 'hold_since', 'abandoned')
  local ts = tonumber(h[1] or '')
  if ts and h[2] and not h[4] then
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

}  // namespace slimta::redis
