// serve's HTTP listener (--http): Prometheus metrics, health and readiness, and a
// JSON view of the queue, for operators and their monitoring.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "slimta/metrics.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/storage.h"

namespace slimta::cli {

// The shared queue seen by a full scan run in the background: a scrape or a page load
// never scans. After each scan it waits 5 s, or ten times as long as the scan took
// (so scanning costs at most a tenth of the time).
struct QueueSnapshot {
  double messages = 0, held = 0;
  Timestamp oldest = 0;  // receipt time of the oldest message (0: none)
  Shape shape;
  std::vector<nlohmann::json> held_messages;  // message_json() of the first 50
  double scan_seconds = 0;
  Timestamp taken = 0;  // 0 until the first scan ends
};

class QueueGauges {
 public:
  explicit QueueGauges(QueueStorage& storage);
  ~QueueGauges();
  QueueGauges(const QueueGauges&) = delete;
  QueueGauges& operator=(const QueueGauges&) = delete;

  QueueSnapshot snapshot() const;
  // The last scan's figures (what the metrics read, without copying the snapshot).
  double messages() const;
  double held() const;
  // Seconds since the oldest queued message was received (0 for an empty queue).
  double oldest_age() const;
  double scan_seconds() const;

 private:
  void scan();
  QueueStorage& storage_;
  mutable std::mutex mu_;
  QueueSnapshot snapshot_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// What this process did over the last hour, minute by minute, and why it deferred.
class Activity {
 public:
  explicit Activity(metrics::Registry& registry);
  ~Activity();
  Activity(const Activity&) = delete;
  Activity& operator=(const Activity&) = delete;
  // QueuePolicy::on_deferral.
  void deferred(const std::string& reply);

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

struct HttpOptions {
  std::string listen;      // HOST:PORT; port 0: any free one
  std::string token_file;  // first line: the bearer token /api/ needs; empty: loopback only
};

// What the HTTP server serves from; everything must outlive it.
struct HttpContext {
  metrics::Registry& registry;
  const QueueGauges& gauges;
  Activity& activity;
  QueueStorage& storage;  // the API's reads and actions
  // Whether serve can take traffic: "" when ready, else why not (503's body).
  std::function<std::string()> ready;
  // The door injected messages go through, as SMTP's DATA (its max_message_size is
  // also the body's limit).
  Reception& reception;
  // SMTP's relay rules for an injected message's recipients: "" when a client at `ip`
  // may send to all of them, else RCPT's reply. A client with the token counts as an
  // authenticated SMTP client.
  std::function<std::string(const std::string& ip, const Envelope& envelope, bool authenticated)>
      relay_refusal;
};

class HttpServer {
 public:
  // Binds now (throws InvalidArgument naming the problem: a non-loopback address
  // without a token, a bad token file; QueueError if it cannot bind), serves from a
  // thread of its own until destroyed. Routes: GET / (the status page), /metrics,
  // /healthz, /readyz; under
  // /api/v1/ (the token's, if any): GET info, shape, messages (filters domain=, state=,
  // older-than=SECONDS; limit=, cursor= pages by id), messages/ID; POST messages/ID/
  // (retry|hold|release|bounce), DELETE messages/ID; POST messages/(retry|hold|release|
  // remove|bounce)
  // for every message the filters select; POST messages (a message/rfc822 body with
  // X-Envelope-Sender and X-Envelope-Recipient headers) -> 201 {"id"} once durable.
  HttpServer(const HttpOptions& options, HttpContext context);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // "HOST:PORT" as bound.
  const std::string& address() const { return address_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

}  // namespace slimta::cli
