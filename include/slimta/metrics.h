// Metrics for Prometheus: counters, gauges and histograms, rendered in the text
// exposition format 0.0.4. Hand-written because Debian 12 packages no C++ Prometheus
// client; it is the small part of one that serve needs: lock-free updates on the hot
// path (atomics), everything else under a lock at registration and scrape time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace slimta::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, ascending (+Inf is implied).
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  // Observations per bucket (bounds().size() + 1 of them, the last for +Inf; not
  // cumulative), their sum and count.
  std::vector<uint64_t> counts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

// Bucket bounds for durations from `min_seconds` to `max_seconds`, 3 per decade
// (1, 2.5, 5 times each power of ten).
std::vector<double> duration_buckets(double min_seconds, double max_seconds);

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The series `name`{labels}, made on first use; the same object every time after.
  // Names and label names must match [a-zA-Z_:][a-zA-Z0-9_:]* (InvalidArgument if not);
  // a name registered with another type throws InvalidArgument.
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help,
                       const std::vector<double>& bounds, const Labels& labels = {});
  // A value read at each scrape (`value` must be quick and thread-safe).
  void gauge(const std::string& name, const std::string& help, std::function<double()> value,
             const Labels& labels = {});
  // A family of gauges whose series are known only at each scrape (one per destination,
  // say): `collect` gives them, with their labels (checked as above; a bad name is left
  // out). It must be quick and thread-safe.
  using Samples = std::vector<std::pair<Labels, double>>;
  void gauges(const std::string& name, const std::string& help, std::function<Samples()> collect);

  // Every family, in registration order: # HELP, # TYPE, then its series.
  std::string render() const;

 private:
  struct Family;
  Family& family(const std::string& name, const std::string& help, const char* type);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;
};

}  // namespace slimta::metrics
