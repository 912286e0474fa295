// Clock: where the queue and the storages read the time. Injected, so scheduling can
// be tested on a ManualClock with no sleeps.
//
// Timestamps are seconds since the Unix epoch as a double, as in the python original.
// Thread safety: now() may be called from any thread; ManualClock's setters too.
#pragma once

#include <atomic>

namespace slimta {

using Timestamp = double;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Timestamp now() const = 0;
};

// The system's real-time clock.
class SystemClock : public Clock {
 public:
  Timestamp now() const override;
};

// The process-wide SystemClock.
const Clock& system_clock();

// A clock that moves only when told to.
class ManualClock : public Clock {
 public:
  explicit ManualClock(Timestamp start = 1'000'000'000) : now_(start) {}
  Timestamp now() const override { return now_.load(); }
  void set(Timestamp t) { now_.store(t); }
  void advance(double seconds) { now_.store(now_.load() + seconds); }

 private:
  std::atomic<Timestamp> now_;
};

}  // namespace slimta
