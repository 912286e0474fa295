#include "slimta/clock.h"

#include <chrono>

namespace slimta {

Timestamp SystemClock::now() const {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

const Clock& system_clock() {
  static const SystemClock clock;
  return clock;
}

}  // namespace slimta
