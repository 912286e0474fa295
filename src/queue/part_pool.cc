#include "queue/part_pool.h"

namespace slimta::engine {

PartPool::~PartPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

size_t PartPool::threads() const {
  std::lock_guard lock(mu_);
  return threads_.size();
}

void PartPool::loop() {
  std::unique_lock lock(mu_);
  while (true) {
    ++idle_;
    cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
    --idle_;
    if (tasks_.empty()) return;  // stopping
    std::packaged_task<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

void PartPool::run_all(std::vector<std::function<void()>> tasks) {
  if (tasks.empty()) return;
  std::vector<std::future<void>> handed;
  std::vector<std::function<void()>*> mine{&tasks.front()};
  {
    std::lock_guard lock(mu_);
    for (size_t k = 1; k < tasks.size(); ++k) {
      // A thread for it: an idle one not yet promised a task, or a new one.
      bool idle = idle_ > tasks_.size();
      if (!idle && threads_.size() >= max_threads_) {
        mine.push_back(&tasks[k]);
        continue;
      }
      tasks_.emplace_back(std::move(tasks[k]));
      handed.push_back(tasks_.back().get_future());
      if (!idle) threads_.emplace_back([this] { loop(); });
    }
  }
  if (handed.size() > 0) cv_.notify_all();
  for (auto* task : mine) (*task)();
  for (auto& f : handed) f.get();
}

}  // namespace slimta::engine
