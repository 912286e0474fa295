// The Destinations a RedisStorage keeps in its server (see destinations.cc).
#pragma once

#include <memory>

#include "slimta/shaping.h"

namespace slimta::redis {

class Pool;

// Uses `pool`, which must outlive it (the storage's).
std::shared_ptr<Destinations> make_destinations(Pool& pool);

}  // namespace slimta::redis
