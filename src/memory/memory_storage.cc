#include "slimta/memory_storage.h"

#include <algorithm>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "core/metadata_ops.h"
#include "core/paged_stream.h"
#include "core/record.h"

namespace slimta {

struct MemoryStorage::Impl {
  struct Stored {
    Envelope envelope;
    record::Metadata meta;
    // The due index, as the shared backends keep it: when due() handed the message out
    // last, until when (0: not since its time was last set).
    Timestamp handed_until = 0;
    Timestamp due_at() const { return handed_until != 0 ? handed_until : meta.timestamp; }
  };
  explicit Impl(const Clock& c) : clock(c) {}
  const Clock& clock;
  std::mutex mu;
  // Hashed, with lookups by string_view (no copy of the id per call).
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Stored, Hash, std::equal_to<>> messages;
  Counters counters;

  // Runs `fn` on the stored message under the lock; KeyError if it is not there.
  template <typename Fn>
  auto with(std::string_view id, Fn&& fn) {
    std::lock_guard lock(mu);
    auto it = messages.find(id);
    if (it == messages.end()) throw KeyError(std::string(id));
    return fn(it->second);
  }
  // Runs a record::ops operation on the stored message's metadata.
  template <typename Op>
  auto mutate(std::string_view id, Op&& op) {
    return with(id, [&](Stored& s) { return op(s.meta); });
  }
};

namespace {

// One page: the entries copied out under the lock (the messages are in memory already,
// so the copy of (timestamp, id) pairs is small next to them).
class SnapshotStream : public PagedStream {
 public:
  explicit SnapshotStream(std::vector<QueueEntry> entries) : entries_(std::move(entries)) {}

 private:
  bool fetch(std::vector<QueueEntry>& out) override {
    out = std::move(entries_);
    return false;
  }
  std::vector<QueueEntry> entries_;
};

}  // namespace

MemoryStorage::MemoryStorage(const Clock& clock) : impl_(std::make_unique<Impl>(clock)) {
  set_shaping_clock(clock);
}
MemoryStorage::~MemoryStorage() = default;

Capabilities MemoryStorage::capabilities() const {
  return Capabilities{
      .can_wait = false, .shared = false, .durable = false, .can_lease = true, .due_index = true};
}

std::string MemoryStorage::write(const Envelope& envelope, Timestamp timestamp) {
  std::string id = new_message_id();
  Impl::Stored stored{envelope, record::initial_metadata(envelope, timestamp)};
  std::lock_guard lock(impl_->mu);
  impl_->messages.emplace(id, std::move(stored));
  return id;
}

void MemoryStorage::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                     std::string_view last_reply,
                                     std::span<const RecipientReply> deferred) {
  impl_->with(id, [&](Impl::Stored& s) {
    record::ops::set_timestamp(timestamp, fence, id, last_reply, deferred)(s.meta);
    s.handed_until = 0;
  });
}

uint32_t MemoryStorage::do_increment_attempts(std::string_view id, Fence fence) {
  return impl_->mutate(id, record::ops::increment_attempts(fence, id));
}

void MemoryStorage::do_set_recipients_delivered(std::string_view id,
                                                std::span<const size_t> rcpt_indexes, Fence fence,
                                                std::span<const RecipientFailure> failed) {
  impl_->mutate(id, record::ops::set_recipients_delivered(rcpt_indexes, fence, id, failed));
}

ClaimResult MemoryStorage::do_claim(std::string_view id, std::chrono::milliseconds duration) {
  return impl_->mutate(id, record::ops::claim(impl_->clock.now(), duration));
}

void MemoryStorage::do_release(std::string_view id, Fence fence) {
  impl_->mutate(id, record::ops::release(fence, id));
}

Lease MemoryStorage::do_renew(std::string_view id, Fence fence,
                              std::chrono::milliseconds duration) {
  return impl_->mutate(id, record::ops::renew(fence, impl_->clock.now(), duration, id));
}

void MemoryStorage::do_hold(std::string_view id, std::string_view reason, Timestamp since) {
  impl_->mutate(id, record::ops::hold(reason, since));
}

void MemoryStorage::do_release_hold(std::string_view id) {
  impl_->with(id, [&](Impl::Stored& s) {
    record::ops::release_hold()(s.meta);
    s.handed_until = 0;
  });
}

// A scan of every message: this backend is for tests and one-shot tools, where the
// queue is small; the shared backends keep a real index.
std::vector<QueueEntry> MemoryStorage::do_due(Timestamp now, size_t limit,
                                              std::chrono::milliseconds hand_out) {
  std::lock_guard lock(impl_->mu);
  std::vector<std::pair<QueueEntry, Impl::Stored*>> found;
  for (auto& [id, s] : impl_->messages)
    if (!s.meta.hold && s.due_at() <= now) found.push_back({{s.due_at(), id}, &s});
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first.timestamp != b.first.timestamp ? a.first.timestamp < b.first.timestamp
                                                  : a.first.id < b.first.id;
  });
  if (found.size() > limit) found.resize(limit);
  std::vector<QueueEntry> out;
  for (auto& [entry, s] : found) {
    s->handed_until = now + std::chrono::duration<double>(hand_out).count();
    out.push_back(std::move(entry));
  }
  return out;
}

size_t MemoryStorage::repair_due(std::string& cursor) {
  cursor.clear();  // every message is in the index: it is the messages themselves
  return 0;
}

void MemoryStorage::add_counters(const Counters& delta) {
  std::lock_guard lock(impl_->mu);
  for (const auto& [name, n] : delta) impl_->counters[name] += n;
}

Counters MemoryStorage::counters() {
  std::lock_guard lock(impl_->mu);
  return impl_->counters;
}

std::unique_ptr<EntryStream> MemoryStorage::load() {
  std::vector<QueueEntry> entries;
  std::lock_guard lock(impl_->mu);
  entries.reserve(impl_->messages.size());
  for (const auto& [id, s] : impl_->messages) entries.push_back({s.meta.timestamp, id});
  return std::make_unique<SnapshotStream>(std::move(entries));
}

std::optional<QueueStats> MemoryStorage::stats() {
  std::lock_guard lock(impl_->mu);
  QueueStats out;
  for (const auto& [id, s] : impl_->messages) {
    ++out.messages;
    if (s.meta.hold) ++out.held;
    Timestamp received = s.envelope.timestamp;
    if (received > 0 && (out.oldest == 0 || received < out.oldest)) out.oldest = received;
  }
  return out;
}

QueuedMessage MemoryStorage::do_get(std::string_view id) {
  return impl_->with(id, [](Impl::Stored& s) { return record::to_queued(s.envelope, s.meta); });
}

void MemoryStorage::do_remove(std::string_view id, Fence fence) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->messages.find(id);
  if (it == impl_->messages.end()) return;
  record::check_fence(it->second.meta, fence, id);
  impl_->messages.erase(it);
}

}  // namespace slimta
