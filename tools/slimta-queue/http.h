// serve's HTTP listener (--http): Prometheus metrics, health and readiness, and a
// JSON view of the queue, for operators and their monitoring.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "slimta/metrics.h"
#include "slimta/storage.h"

namespace slimta::cli {

// The shared queue's size, held messages and oldest message, from a full scan run in
// the background: a scrape never scans. After each scan it waits 5 s, or ten times as
// long as the scan took (so scanning costs at most a tenth of the time).
class QueueGauges {
 public:
  explicit QueueGauges(QueueStorage& storage);
  ~QueueGauges();
  QueueGauges(const QueueGauges&) = delete;
  QueueGauges& operator=(const QueueGauges&) = delete;

  double messages() const { return messages_.load(); }
  double held() const { return held_.load(); }
  // Seconds since the oldest queued message was received (0 for an empty queue).
  double oldest_age() const;
  // Seconds the last scan took.
  double scan_seconds() const { return scan_seconds_.load(); }

 private:
  void scan();
  QueueStorage& storage_;
  std::atomic<double> messages_{0}, held_{0}, oldest_{0}, scan_seconds_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct HttpOptions {
  std::string listen;      // HOST:PORT; port 0: any free one
  std::string token_file;  // first line: the bearer token /api/ needs; empty: loopback only
};

class HttpServer {
 public:
  // Whether serve can take traffic: "" when ready, else why not (503's body).
  using Readiness = std::function<std::string()>;
  // Binds now (throws InvalidArgument naming the problem: a non-loopback address
  // without a token, a bad token file; QueueError if it cannot bind), serves from a
  // thread of its own until destroyed.
  HttpServer(const HttpOptions& options, metrics::Registry& registry, const QueueGauges& gauges,
             Readiness ready);
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
