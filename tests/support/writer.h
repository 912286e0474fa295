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
#include "slimta/redis_storage.h"
#include "slimta/storage.h"
#include "support/redis_server.h"
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

// Issue 34, finding 2, on Redis servers found through others (a cluster's slot map,
// sentinels), which the conformance suite's proxy cannot stand in front of: `paused`
// (SIGSTOP) while a write is on its way and beyond write()'s patience. write() refuses it
// (retryable); once they resume the write lands or not, and either way it is no message,
// now or after the storage that refused it is gone.
inline void expect_a_write_to_paused_servers_refused_for_good(
    RedisOptions o, const std::vector<RedisServer*>& paused) {
  RedisOptions patient = o;
  patient.socket_timeout = 5;
  auto empty = [&] {
    try {
      return RedisStorage(patient).load_all().empty();
    } catch (const QueueError&) {  // a node still settling after the pause
      return false;
    }
  };
  o.socket_timeout = 0.3;
  o.resolve_timeout = 0.5;
  {
    RedisStorage storage(o);
    EXPECT_TRUE(storage.load_all().empty());  // connected before the pause
    for (RedisServer* s : paused) s->pause();
    try {
      storage.write(sample_envelope(), 100);
      ADD_FAILURE() << "a write no paused server could have answered was said to be stored";
    } catch (const QueueError& e) {
      EXPECT_TRUE(e.retryable()) << e.what();
    }
    for (RedisServer* s : paused) s->resume();
    EXPECT_TRUE(eventually(empty, std::chrono::seconds(60)));
  }
  EXPECT_TRUE(empty());
}

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
