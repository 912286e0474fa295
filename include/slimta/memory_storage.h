// MemoryStorage: messages kept in this process's memory (python's DictStorage).
// Not durable and not shared: for tests and for tools that queue nothing across
// restarts. wait() is not supported (nothing else can write to it); leases, holds
// and counters are.
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <memory>

#include "slimta/storage.h"

namespace slimta {

class MemoryStorage : public QueueStorage {
 public:
  // Lease expiry is judged by `clock`, which must outlive the storage.
  explicit MemoryStorage(const Clock& clock = system_clock());
  ~MemoryStorage() override;

  Capabilities capabilities() const override;
  std::string kind() const override { return "memory"; }
  std::string write(const Envelope& envelope, Timestamp timestamp) override;
  std::unique_ptr<EntryStream> load() override;
  // Counted in memory, no copy.
  std::optional<QueueStats> stats() override;
  size_t repair_due(std::string& cursor) override;
  void add_counters(const Counters& delta) override;
  Counters counters() override;

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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
