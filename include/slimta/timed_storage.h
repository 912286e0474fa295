// TimedStorage: a QueueStorage that times every call of another one into the histogram
// slimta_storage_operation_duration_seconds{op}, for serve's /metrics. wait() is not
// timed (it blocks on purpose), nor announce() (a hint); the rest StorageWrapper passes on.
#pragma once

#include <array>
#include <map>

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

 protected:
  QueuedMessage do_get(std::string_view id) override;
  void do_hold(std::string_view id, std::string_view reason, Timestamp since) override;
  void do_release_hold(std::string_view id) override;
  void do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                        std::string_view last_reply) override;
  uint32_t do_increment_attempts(std::string_view id, Fence fence) override;
  void do_set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes,
                                   Fence fence) override;
  void do_remove(std::string_view id, Fence fence) override;
  ClaimResult do_claim(std::string_view id, std::chrono::milliseconds duration) override;
  void do_release(std::string_view id, Fence fence) override;
  Lease do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) override;
  std::vector<QueueEntry> do_due(Timestamp now, size_t limit,
                                 std::chrono::milliseconds hand_out) override;

 private:
  template <typename Fn>
  auto timed(Op op, Fn&& fn);
  std::array<metrics::Histogram*, kOpCount> histograms_{};
};

}  // namespace slimta
