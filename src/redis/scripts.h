// The Lua scripts of the Redis backend (redis_storage.cc says why each mutation is
// one script): the message's key is KEYS[1], its due index KEYS[2], the received and
// held sets beside it KEYS[3] and KEYS[4] when there is an index.
#pragma once

#include "redis/connection.h"

namespace slimta::redis {

// Every script below takes the message's key as KEYS[1] (and the due index as KEYS[2]
// when there is one) and, for the mutations that can be fenced, the fence token as ARGV[1] ("0":
// unfenced), and replies with a table whose first element says what happened (ScriptStatus).
enum ScriptStatus : long long { kMissing = 0, kDone = 1, kOutOfRange = 2, kLeaseLost = 3 };

const Script& set_timestamp_script();
const Script& increment_script();
const Script& delivered_script();
const Script& remove_script();
const Script& release_script();
const Script& renew_script();
const Script& claim_script();
const Script& hold_script();
const Script& due_script();
const Script& repair_script();
const Script& stats_script();
const Script& abandon_script();

}  // namespace slimta::redis
