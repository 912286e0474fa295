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
                                                          "repair_due"};

}  // namespace

TimedStorage::TimedStorage(QueueStorage& inner, metrics::Registry& registry) : inner_(inner) {
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
  return timed(kWrite, [&] { return inner_.write(envelope, timestamp); });
}
std::unique_ptr<EntryStream> TimedStorage::load() {
  return timed(kLoad, [&] { return inner_.load(); });
}
QueuedMessage TimedStorage::get(std::string_view id) {
  return timed(kGet, [&] { return inner_.get(id); });
}
void TimedStorage::hold(std::string_view id, std::string_view reason, Timestamp since) {
  timed(kHold, [&] { inner_.hold(id, reason, since); });
}
void TimedStorage::release_hold(std::string_view id) {
  timed(kReleaseHold, [&] { inner_.release_hold(id); });
}
void TimedStorage::announce(std::string_view id, Timestamp timestamp) {
  inner_.announce(id, timestamp);
}
void TimedStorage::add_counters(const Counters& delta) {
  timed(kAddCounters, [&] { inner_.add_counters(delta); });
}
Counters TimedStorage::counters() {
  return timed(kCounters, [&] { return inner_.counters(); });
}

// The unfenced form for token 0, as the caller used it.
void TimedStorage::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                    std::string_view last_reply) {
  timed(kSetTimestamp, [&] {
    fence.token ? inner_.set_timestamp(id, timestamp, fence, last_reply)
                : inner_.set_timestamp(id, timestamp);
  });
}
uint32_t TimedStorage::do_increment_attempts(std::string_view id, Fence fence) {
  return timed(kIncrementAttempts, [&] {
    return fence.token ? inner_.increment_attempts(id, fence) : inner_.increment_attempts(id);
  });
}
void TimedStorage::do_set_recipients_delivered(std::string_view id,
                                               std::span<const size_t> rcpt_indexes, Fence fence) {
  timed(kSetRecipientsDelivered, [&] {
    fence.token ? inner_.set_recipients_delivered(id, rcpt_indexes, fence)
                : inner_.set_recipients_delivered(id, rcpt_indexes);
  });
}
void TimedStorage::do_remove(std::string_view id, Fence fence) {
  timed(kRemove, [&] { fence.token ? inner_.remove(id, fence) : inner_.remove(id); });
}
ClaimResult TimedStorage::do_claim(std::string_view id, std::chrono::milliseconds duration) {
  return timed(kClaim, [&] { return inner_.claim(id, duration); });
}
void TimedStorage::do_release(std::string_view id, Fence fence) {
  timed(kRelease, [&] { inner_.release(id, fence); });
}
Lease TimedStorage::do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) {
  return timed(kRenew, [&] { return inner_.renew(id, fence, duration); });
}
std::vector<QueueEntry> TimedStorage::do_wait(std::chrono::milliseconds timeout) {
  return inner_.wait(timeout);
}
std::vector<QueueEntry> TimedStorage::do_due(Timestamp now, size_t limit,
                                             std::chrono::milliseconds hand_out) {
  return timed(kDue, [&] { return inner_.due(now, limit, hand_out); });
}
size_t TimedStorage::repair_due(std::string& cursor) {
  return timed(kRepairDue, [&] { return inner_.repair_due(cursor); });
}

}  // namespace slimta
