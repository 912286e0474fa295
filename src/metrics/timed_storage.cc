#include "slimta/timed_storage.h"

#include <chrono>

#include <fmt/format.h>

namespace slimta {
namespace {

constexpr const char* kOpNames[TimedStorage::kOpCount + 1] = {"write",
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
                                                              "stats",
                                                              "wait"};

constexpr size_t kFaultsKept = 64;

// A failure of the storage itself: not a message that is not there, a lease another
// process took, a full disk (its own readiness check) or a caller's bad argument.
bool is_fault(const QueueError& e) {
  return !dynamic_cast<const KeyError*>(&e) && !dynamic_cast<const LeaseLost*>(&e) &&
         !dynamic_cast<const StorageFull*>(&e) && !dynamic_cast<const InvalidArgument*>(&e) &&
         !dynamic_cast<const NotSupported*>(&e);
}

}  // namespace

TimedStorage::TimedStorage(QueueStorage& inner, metrics::Registry& registry)
    : StorageWrapper(inner) {
  for (size_t op = 0; op < kOpCount; ++op) {
    histograms_[op] =
        &registry.histogram("slimta_storage_operation_duration_seconds",
                            "Time of one call to the queue's storage, by operation",
                            metrics::duration_buckets(0.0001, 10), {{"op", kOpNames[op]}});
  }
  for (size_t op = 0; op <= kOpCount; ++op) {
    errors_[op] = &registry.counter(
        "slimta_storage_errors_total",
        "Calls to the queue's storage that failed with a fault of the storage, by operation",
        {{"op", kOpNames[op]}});
  }
}

std::string TimedStorage::repeated_faults(std::chrono::seconds window, size_t threshold) const {
  auto since = std::chrono::steady_clock::now() - window;
  std::lock_guard lock(faults_mu_);
  size_t n = 0;
  for (auto it = faults_.rbegin(); it != faults_.rend() && it->when >= since; ++it) ++n;
  if (n < threshold || faults_.empty()) return "";
  const Fault& last = faults_.back();
  return fmt::format("the storage failed {} calls in the last {} s; the last, {}: {}",
                     n >= kFaultsKept ? fmt::format("{} or more", n) : std::to_string(n),
                     window.count(), kOpNames[last.op], last.what);
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
  return counted(op, std::forward<Fn>(fn));
}

template <typename Fn>
auto TimedStorage::counted(size_t op, Fn&& fn) {
  try {
    return fn();
  } catch (const QueueError& e) {
    if (is_fault(e)) {
      errors_[op]->inc();
      std::lock_guard lock(faults_mu_);
      faults_.push_back({std::chrono::steady_clock::now(), op, e.what()});
      if (faults_.size() > kFaultsKept) faults_.pop_front();
    }
    throw;
  }
}

std::string TimedStorage::write(const Envelope& envelope, Timestamp timestamp) {
  return timed(kWrite, [&] { return StorageWrapper::write(envelope, timestamp); });
}
// The stream of load(), whose reads (a message's index or file per entry) fail as
// load() does: counted as load's.
class TimedStorage::CountedStream : public EntryStream {
 public:
  CountedStream(TimedStorage& owner, std::unique_ptr<EntryStream> inner)
      : owner_(owner), inner_(std::move(inner)) {}
  std::optional<QueueEntry> next() override {
    auto out = owner_.counted(kLoad, [&] { return inner_->next(); });
    corrupt_ = inner_->corrupt();
    return out;
  }

 private:
  TimedStorage& owner_;
  std::unique_ptr<EntryStream> inner_;
};

std::unique_ptr<EntryStream> TimedStorage::load() {
  return std::make_unique<CountedStream>(*this,
                                         timed(kLoad, [&] { return StorageWrapper::load(); }));
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
                                    std::string_view last_reply,
                                    std::span<const RecipientReply> deferred) {
  timed(kSetTimestamp,
        [&] { StorageWrapper::do_set_timestamp(id, timestamp, fence, last_reply, deferred); });
}
uint32_t TimedStorage::do_increment_attempts(std::string_view id, Fence fence) {
  return timed(kIncrementAttempts,
               [&] { return StorageWrapper::do_increment_attempts(id, fence); });
}
void TimedStorage::do_set_recipients_delivered(std::string_view id,
                                               std::span<const size_t> rcpt_indexes, Fence fence,
                                               std::span<const RecipientFailure> failed) {
  timed(kSetRecipientsDelivered,
        [&] { StorageWrapper::do_set_recipients_delivered(id, rcpt_indexes, fence, failed); });
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
std::vector<QueueEntry> TimedStorage::do_wait(std::chrono::milliseconds timeout) {
  return counted(kWait, [&] { return StorageWrapper::do_wait(timeout); });
}
size_t TimedStorage::repair_due(std::string& cursor) {
  return timed(kRepairDue, [&] { return StorageWrapper::repair_due(cursor); });
}

}  // namespace slimta
