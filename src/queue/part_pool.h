// The threads on which the parts of a message (one per destination) are attempted at
// once: at most a fixed number, started as they are first needed and kept for the
// queue's life. A part that finds no idle thread runs on the caller's, so an attempt
// never waits for a thread and the pool never grows past its bound.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace slimta::engine {

class PartPool {
 public:
  explicit PartPool(size_t max_threads) : max_threads_(max_threads) {}
  ~PartPool();
  PartPool(const PartPool&) = delete;
  PartPool& operator=(const PartPool&) = delete;

  // Runs every task and returns when all are done: the first on the calling thread,
  // each other on an idle (or new, within the bound) thread of the pool, else on the
  // calling thread too. A task must not throw.
  void run_all(std::vector<std::function<void()>> tasks);

  size_t threads() const;

 private:
  void loop();

  const size_t max_threads_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_:
  std::deque<std::packaged_task<void()>> tasks_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stopping_ = false;
};

}  // namespace slimta::engine
