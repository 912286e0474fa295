// StorageWrapper: a QueueStorage that passes every call on to another one, as leveldb's
// EnvWrapper does for its Env, so that a wrapper overrides only what it changes
// (TimedStorage times each call; a test's storage fails some). The calls reach the
// target through its public methods: ids and fences are checked there too.
#pragma once

#include "slimta/storage.h"

namespace slimta {

class StorageWrapper : public QueueStorage {
 public:
  // `target` must outlive this object.
  explicit StorageWrapper(QueueStorage& target) : target_(target) {}

  QueueStorage& target() const { return target_; }

  Capabilities capabilities() const override { return target_.capabilities(); }
  std::string kind() const override { return target_.kind(); }
  bool has_room(size_t bytes) const override { return target_.has_room(bytes); }
  std::string write(const Envelope& envelope, Timestamp timestamp) override;
  std::unique_ptr<EntryStream> load() override;
  std::shared_ptr<Destinations> destinations() override { return target_.destinations(); }
  void add_counters(const Counters& delta) override;
  Counters counters() override;
  size_t repair_due(std::string& cursor) override;
  std::optional<QueueStats> stats() override { return target_.stats(); }

 protected:
  QueuedMessage do_get(std::string_view id) override;
  void do_hold(std::string_view id, std::string_view reason, Timestamp since) override;
  void do_release_hold(std::string_view id) override;
  void do_announce(std::string_view id, Timestamp timestamp) override;
  // Token 0 is passed on as the unfenced form, as the caller used it.
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
  std::vector<QueueEntry> do_wait(std::chrono::milliseconds timeout) override;
  std::vector<QueueEntry> do_due(Timestamp now, size_t limit,
                                 std::chrono::milliseconds hand_out) override;

 private:
  QueueStorage& target_;
};

}  // namespace slimta
