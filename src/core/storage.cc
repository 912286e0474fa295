#include "slimta/storage.h"

#include <algorithm>

namespace slimta {

std::vector<size_t> QueuedMessage::remaining_indexes() const {
  std::vector<size_t> out;
  out.reserve(envelope.recipients.size());
  size_t d = 0;
  for (size_t i = 0; i < original_recipients; ++i) {
    if (d < delivered.size() && delivered[d] == i) {
      ++d;
      continue;
    }
    out.push_back(i);
  }
  return out;
}

std::string QueueStorage::kind() const { return "custom"; }

bool QueueStorage::has_room(size_t) const { return true; }

std::vector<QueueEntry> QueueStorage::do_wait(std::chrono::milliseconds) {
  throw NotSupported("this storage cannot notify of new messages: wait() is not supported");
}

void QueueStorage::check_fence_arg(Fence fence) {
  if (fence.token == 0)
    throw InvalidArgument("fence token 0 is not a lease: use the unfenced call");
}

void QueueStorage::check_failures(std::span<const size_t> rcpt_indexes,
                                  std::span<const RecipientFailure> failed) {
  for (const auto& f : failed) {
    if (std::find(rcpt_indexes.begin(), rcpt_indexes.end(), f.index) == rcpt_indexes.end()) {
      throw InvalidArgument("recipient " + std::to_string(f.index) +
                            " is given as failed but is not among those marked delivered");
    }
  }
}

namespace {
[[noreturn]] void no_leases() {
  throw NotSupported("this storage has no leases, holds or counters (capabilities().can_lease)");
}
}  // namespace

namespace {
void check_duration(std::chrono::milliseconds duration) {
  if (duration.count() <= 0) {
    throw InvalidArgument("lease duration must be positive, got " +
                          std::to_string(duration.count()) + " ms");
  }
}
}  // namespace

ClaimResult QueueStorage::claim(std::string_view id, std::chrono::milliseconds duration) {
  check_id(id);
  check_duration(duration);
  return do_claim(id, duration);
}

Lease QueueStorage::renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) {
  check_args(id, fence);
  check_duration(duration);
  return do_renew(id, fence, duration);
}

ClaimResult QueueStorage::do_claim(std::string_view, std::chrono::milliseconds) { no_leases(); }
void QueueStorage::do_release(std::string_view, Fence) { no_leases(); }
Lease QueueStorage::do_renew(std::string_view, Fence, std::chrono::milliseconds) { no_leases(); }
void QueueStorage::do_hold(std::string_view, std::string_view, Timestamp) { no_leases(); }
void QueueStorage::do_release_hold(std::string_view) { no_leases(); }
void QueueStorage::do_announce(std::string_view, Timestamp) {}

std::shared_ptr<Destinations> QueueStorage::destinations() {
  std::call_once(destinations_once_, [&] { destinations_ = local_destinations(*shaping_clock_); });
  return destinations_;
}
void QueueStorage::add_counters(const Counters&) { no_leases(); }
Counters QueueStorage::counters() { no_leases(); }

namespace {
[[noreturn]] void no_due_index() {
  throw NotSupported("this storage has no due-time index (capabilities().due_index)");
}
}  // namespace

std::vector<QueueEntry> QueueStorage::due(Timestamp now, size_t limit,
                                          std::chrono::milliseconds hand_out) {
  if (limit == 0) throw InvalidArgument("due(): limit must be at least 1");
  if (hand_out.count() <= 0) {
    throw InvalidArgument("due(): hand_out must be positive, got " +
                          std::to_string(hand_out.count()) + " ms");
  }
  return do_due(now, limit, hand_out);
}
std::vector<QueueEntry> QueueStorage::do_due(Timestamp, size_t, std::chrono::milliseconds) {
  no_due_index();
}
size_t QueueStorage::repair_due(std::string&) { no_due_index(); }

std::vector<QueueEntry> QueueStorage::wait() {
  while (true) {
    auto entries = wait(std::chrono::hours(24));
    if (!entries.empty()) return entries;
  }
}

std::optional<QueueStats> QueueStorage::stats() { return std::nullopt; }

std::vector<QueueEntry> QueueStorage::load_all() {
  std::vector<QueueEntry> out;
  auto stream = load();
  while (auto entry = stream->next()) out.push_back(std::move(*entry));
  return out;
}

}  // namespace slimta
