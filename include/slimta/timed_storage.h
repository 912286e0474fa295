// TimedStorage: a QueueStorage that times every call of another one into the histogram
// slimta_storage_operation_duration_seconds{op}, for serve's /metrics. wait() is not
// timed (it blocks on purpose), nor announce() (a hint); the rest StorageWrapper passes on.
// It also counts the calls that failed with a fault of the storage (not a missing
// message, a lost lease, a full disk or a caller's mistake) into
// slimta_storage_errors_total{op}, wait() too, and says when they repeat: a fault that
// keeps coming back (a file serve cannot read, a server that refuses) makes /readyz
// fail with its reason, where before only a log line said it (issue 34).
#pragma once

#include <array>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <string>

#include "slimta/metrics.h"
#include "slimta/storage_wrapper.h"

namespace slimta {

class TimedStorage : public StorageWrapper {
 public:
  // `inner` and `registry` must outlive this object.
  TimedStorage(QueueStorage& inner, metrics::Registry& registry);

  QueueStorage& inner() { return target(); }

  std::string write(const Envelope& envelope, Timestamp timestamp) override;
  std::unique_ptr<EntryStream> load() override;
  size_t repair_due(std::string& cursor) override;
  std::optional<QueueStats> stats() override;
  void add_counters(const Counters& delta) override;
  Counters counters() override;

  enum Op : size_t {
    kWrite,
    kLoad,
    kGet,
    kHold,
    kReleaseHold,
    kAddCounters,
    kCounters,
    kSetTimestamp,
    kIncrementAttempts,
    kSetRecipientsDelivered,
    kRemove,
    kClaim,
    kRelease,
    kRenew,
    kDue,
    kRepairDue,
    kStats,
    kOpCount
  };
  // Calls made so far, by operation name ("write", "get", ...), those made at least once.
  std::map<std::string, uint64_t> call_counts() const;

  // "" unless `threshold` calls or more failed with a fault within the last `window`;
  // then how many, and the last one's operation and error.
  std::string repeated_faults(std::chrono::seconds window = std::chrono::seconds(60),
                              size_t threshold = 3) const;

 protected:
  QueuedMessage do_get(std::string_view id) override;
  void do_hold(std::string_view id, std::string_view reason, Timestamp since) override;
  void do_release_hold(std::string_view id) override;
  void do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                        std::string_view last_reply,
                        std::span<const RecipientReply> deferred) override;
  uint32_t do_increment_attempts(std::string_view id, Fence fence) override;
  void do_set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes,
                                   Fence fence, std::span<const RecipientFailure> failed) override;
  void do_remove(std::string_view id, Fence fence) override;
  ClaimResult do_claim(std::string_view id, std::chrono::milliseconds duration) override;
  void do_release(std::string_view id, Fence fence) override;
  Lease do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) override;
  std::vector<QueueEntry> do_due(Timestamp now, size_t limit,
                                 std::chrono::milliseconds hand_out) override;
  std::vector<QueueEntry> do_wait(std::chrono::milliseconds timeout) override;

 private:
  static constexpr size_t kWait = kOpCount;  // errors only: wait() blocks on purpose
  struct Fault {
    std::chrono::steady_clock::time_point when;
    size_t op;
    std::string what;
  };
  template <typename Fn>
  auto timed(Op op, Fn&& fn);
  class CountedStream;
  template <typename Fn>
  auto counted(size_t op, Fn&& fn);
  std::array<metrics::Histogram*, kOpCount> histograms_{};
  std::array<metrics::Counter*, kOpCount + 1> errors_{};
  mutable std::mutex faults_mu_;
  std::deque<Fault> faults_;  // the last ones, oldest first
};

}  // namespace slimta
