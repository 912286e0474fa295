// Timing helpers shared by the benchmarks.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace slimta::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

#ifdef SLIMTA_QUEUE_BIN
// The serve under test: this build's, or $SLIMTA_QUEUE_BIN (another build's, to compare
// two in one run).
inline std::string queue_bin() {
  const char* other = std::getenv("SLIMTA_QUEUE_BIN");
  return other && *other ? other : SLIMTA_QUEUE_BIN;
}
#endif

// Calls op(thread, i) from `threads` threads until `seconds` pass or every thread's op
// returned false; returns successful calls per second.
template <typename Op>
double rate(int threads, double seconds, Op op) {
  std::atomic<size_t> n{0};
  std::atomic<int> finished{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (size_t i = 0; !stop.load(std::memory_order_relaxed) && op(t, i); ++i) {
        n.fetch_add(1, std::memory_order_relaxed);
      }
      ++finished;
    });
  }
  while (seconds_since(start) < seconds && finished < threads) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop = true;
  double elapsed = seconds_since(start);
  for (auto& w : workers) w.join();
  return n / elapsed;
}

}  // namespace slimta::bench
