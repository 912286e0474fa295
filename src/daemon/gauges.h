// What serve's HTTP listener shows besides the API: the queue seen by a background
// scan, this process's last hour, and whether the storage answers.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "admin/operations.h"
#include "slimta/metrics.h"
#include "slimta/queue.h"
#include "slimta/storage.h"

namespace slimta::daemon {

using admin::Shape;

// The shared queue as the gauges see it, from a thread of their own: a scrape or a page
// load never reads the storage. The figures (messages, held, oldest) come every minute
// from the storage's stats(), a request or so however long the queue; the shape and the held
// messages (the status page's) from a full scan (a read per message), run only while
// the page is being looked at, at most every 30 s or ten times as long as it took.
// A storage without stats() is scanned for the figures too, every 5 s or ten times as
// long as the scan took (so scanning costs at most a tenth of the time; doc/costs.md).
struct QueueSnapshot {
  double messages = 0, held = 0;
  Timestamp oldest = 0;      // receipt time of the oldest message (0: none)
  double count_seconds = 0;  // how long the last count took (stats() or the scan)
  Timestamp taken = 0;       // when the figures were counted; 0 until the first count
  Shape shape;
  std::vector<nlohmann::json> held_messages;  // message_json() of the first 50
  Timestamp scanned = 0;  // when the shape and held messages were read; 0: not yet
  // The destinations with state, every 10 s: those suspended, down or failing first,
  // then the busiest; at most kMaxDestinations (what /metrics and the page show).
  std::vector<DestinationStatus> destinations;
  // admin::storage_info_json() (the event counters among it), read with the destinations.
  nlohmann::json storage_info = nlohmann::json::object();
  static constexpr size_t kMaxDestinations = 100;
};

class QueueGauges {
 public:
  explicit QueueGauges(QueueStorage& storage);
  ~QueueGauges();
  QueueGauges(const QueueGauges&) = delete;
  QueueGauges& operator=(const QueueGauges&) = delete;

  // The snapshot, for the status page: asking for it is what starts full scans.
  QueueSnapshot snapshot() const;
  // slimta_queue_messages, _held_messages, _oldest_message_age_seconds and
  // _scan_seconds in `registry`, read from the last count; and per destination (the
  // snapshot's) slimta_destination_state{destination,state} (1 for its state),
  // _in_use and _failures.
  void register_metrics(metrics::Registry& registry);
  // The last count's figures (what the metrics read, without copying the snapshot).
  double messages() const;
  double held() const;
  // Seconds since the oldest queued message was received (0 for an empty queue).
  double oldest_age() const;
  double count_seconds() const;
  nlohmann::json storage_info() const;

 private:
  void run();
  bool count();                 // from stats(); false when the storage has none
  double scan(bool figures);    // the full scan; returns how long it took
  void look_at_destinations();  // and storage_info
  QueueStorage& storage_;
  mutable std::mutex mu_;
  QueueSnapshot snapshot_;
  // When snapshot() was last called (steady clock, ns since its epoch).
  mutable std::atomic<int64_t> wanted_{0};
  mutable std::atomic<bool> woken_{false};  // the page was asked for a first time
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// What this process did over the last hour, minute by minute, and why it deferred.
// It observes the queue for the deferring replies; the minutes come from the queue's
// delivery counters.
class Activity : public QueueObserver {
 public:
  explicit Activity(metrics::Registry& registry);
  ~Activity() override;
  Activity(const Activity&) = delete;
  Activity& operator=(const Activity&) = delete;
  void on_event(const QueueEvent& event) override;

  struct Minute {
    Timestamp start = 0;
    uint64_t delivered = 0, deferred = 0, failed = 0, bounced = 0;
  };
  // Up to 60 minutes, oldest first; the last is the minute under way.
  std::vector<Minute> last_hour();
  // The most frequent deferring replies since start, most frequent first.
  std::vector<std::pair<std::string, uint64_t>> top_deferrals(size_t n);

 private:
  std::array<uint64_t, 4> totals() const;  // delivered, deferred, failed, bounced
  void roll(Timestamp now);
  DeliveryCounters counters_;  // the queue's
  std::mutex mu_;
  std::deque<Minute> minutes_;
  std::array<uint64_t, 4> base_{};  // totals when the current minute began
  std::map<std::string, uint64_t> reasons_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Whether the storage answers, asked from a thread of its own so that a caller waits
// at most a given time even when the storage hangs; one question at a time.
class StorageProbe {
 public:
  explicit StorageProbe(QueueStorage& storage);
  ~StorageProbe();  // waits for a question under way (the storage's own timeout bounds it)
  StorageProbe(const StorageProbe&) = delete;
  StorageProbe& operator=(const StorageProbe&) = delete;
  // "" when the storage answered within `limit`, else why not.
  std::string check(std::chrono::milliseconds limit);

 private:
  QueueStorage& storage_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool asked_ = false, stop_ = false;
  uint64_t round_ = 0;
  std::string answer_;
  std::thread thread_;
};

}  // namespace slimta::daemon
