#include "slimta/timed_storage.h"

#include <chrono>

namespace slimta {
namespace {

constexpr const char* kOpNames[TimedStorage::kOpCount] = {"write",
                                                          "load",
                                                          "get",
                                                          "hold",
                                                          "release_hold",
                                                          "add_counters",
                                                          "counters",
                                                          "set_timestamp",
                                                          "increment_attempts",
                                                          "set_recipients_delivered",
                                                          "remove",
                                                          "claim",
                                                          "release",
                                                          "renew",
                                                          "due",
                                                          "repair_due",
                                                          "stats"};

}  // namespace

TimedStorage::TimedStorage(QueueStorage& inner, metrics::Registry& registry)
    : StorageWrapper(inner) {
  for (size_t op = 0; op < kOpCount; ++op) {
    histograms_[op] =
        &registry.histogram("slimta_storage_operation_duration_seconds",
                            "Time of one call to the queue's storage, by operation",
                            metrics::duration_buckets(0.0001, 10), {{"op", kOpNames[op]}});
  }
}

std::map<std::string, uint64_t> TimedStorage::call_counts() const {
  std::map<std::string, uint64_t> out;
  for (size_t op = 0; op < kOpCount; ++op) {
    uint64_t n = 0;
    for (uint64_t c : histograms_[op]->counts()) n += c;
    if (n) out[kOpNames[op]] = n;
  }
  return out;
}

template <typename Fn>
auto TimedStorage::timed(Op op, Fn&& fn) {
  struct Observe {
    metrics::Histogram* histogram;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    ~Observe() {
      histogram->observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  } observe{histograms_[op]};
  return fn();
}

std::string TimedStorage::write(const Envelope& envelope, Timestamp timestamp) {
  return timed(kWrite, [&] { return StorageWrapper::write(envelope, timestamp); });
}
std::unique_ptr<EntryStream> TimedStorage::load() {
  return timed(kLoad, [&] { return StorageWrapper::load(); });
}
QueuedMessage TimedStorage::do_get(std::string_view id) {
  return timed(kGet, [&] { return StorageWrapper::do_get(id); });
}
void TimedStorage::do_hold(std::string_view id, std::string_view reason, Timestamp since) {
  timed(kHold, [&] { StorageWrapper::do_hold(id, reason, since); });
}
void TimedStorage::do_release_hold(std::string_view id) {
  timed(kReleaseHold, [&] { StorageWrapper::do_release_hold(id); });
}
void TimedStorage::add_counters(const Counters& delta) {
  timed(kAddCounters, [&] { StorageWrapper::add_counters(delta); });
}
Counters TimedStorage::counters() {
  return timed(kCounters, [&] { return StorageWrapper::counters(); });
}
void TimedStorage::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                    std::string_view last_reply) {
  timed(kSetTimestamp, [&] { StorageWrapper::do_set_timestamp(id, timestamp, fence, last_reply); });
}
uint32_t TimedStorage::do_increment_attempts(std::string_view id, Fence fence) {
  return timed(kIncrementAttempts,
               [&] { return StorageWrapper::do_increment_attempts(id, fence); });
}
void TimedStorage::do_set_recipients_delivered(std::string_view id,
                                               std::span<const size_t> rcpt_indexes, Fence fence) {
  timed(kSetRecipientsDelivered,
        [&] { StorageWrapper::do_set_recipients_delivered(id, rcpt_indexes, fence); });
}
void TimedStorage::do_remove(std::string_view id, Fence fence) {
  timed(kRemove, [&] { StorageWrapper::do_remove(id, fence); });
}
ClaimResult TimedStorage::do_claim(std::string_view id, std::chrono::milliseconds duration) {
  return timed(kClaim, [&] { return StorageWrapper::do_claim(id, duration); });
}
void TimedStorage::do_release(std::string_view id, Fence fence) {
  timed(kRelease, [&] { StorageWrapper::do_release(id, fence); });
}
Lease TimedStorage::do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) {
  return timed(kRenew, [&] { return StorageWrapper::do_renew(id, fence, duration); });
}
std::vector<QueueEntry> TimedStorage::do_due(Timestamp now, size_t limit,
                                             std::chrono::milliseconds hand_out) {
  return timed(kDue, [&] { return StorageWrapper::do_due(now, limit, hand_out); });
}
std::optional<QueueStats> TimedStorage::stats() {
  return timed(kStats, [&] { return StorageWrapper::stats(); });
}
size_t TimedStorage::repair_due(std::string& cursor) {
  return timed(kRepairDue, [&] { return StorageWrapper::repair_due(cursor); });
}

}  // namespace slimta
