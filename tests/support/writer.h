// Writes messages to a storage from a thread of its own until stopped, the way the
// failover tests load a storage: what was acknowledged is kept, retryable refusals
// counted (with a short pause after each), the first other error kept and the end.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "slimta/errors.h"
#include "slimta/storage.h"
#include "support/test_util.h"

namespace slimta::testing {

class Writer {
 public:
  explicit Writer(QueueStorage& storage, size_t body_size = 1024) {
    thread_ = std::thread([this, &storage, body_size] {
      Envelope env = sample_envelope(1, body_size);
      while (!stop_) {
        try {
          std::string id = storage.write(env, 1000);
          std::lock_guard lock(mu_);
          acked_.push_back(std::move(id));
        } catch (const QueueError& e) {
          if (!e.retryable()) {
            std::lock_guard lock(mu_);
            failure_ = e.what();
            return;
          }
          ++refused_;
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    });
  }
  ~Writer() { stop(); }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t count() const {
    std::lock_guard lock(mu_);
    return acked_.size();
  }
  // After stop().
  const std::vector<std::string>& acked() const { return acked_; }
  int refused() const { return refused_; }
  const std::string& failure() const { return failure_; }  // a non-retryable error, if any

 private:
  mutable std::mutex mu_;
  std::vector<std::string> acked_;
  std::atomic<int> refused_{0};
  std::atomic<bool> stop_{false};
  std::string failure_;
  std::thread thread_;
};

// How many of `ids` `storage` does not have (KeyError).
inline size_t count_missing(QueueStorage& storage, const std::vector<std::string>& ids) {
  size_t missing = 0;
  for (const auto& id : ids) {
    try {
      storage.get(id);
    } catch (const KeyError&) {
      ++missing;
    }
  }
  return missing;
}

}  // namespace slimta::testing
