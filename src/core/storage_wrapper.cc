#include "slimta/storage_wrapper.h"

namespace slimta {

std::string StorageWrapper::write(const Envelope& envelope, Timestamp timestamp) {
  return target_.write(envelope, timestamp);
}
std::unique_ptr<EntryStream> StorageWrapper::load() { return target_.load(); }
void StorageWrapper::add_counters(const Counters& delta) { target_.add_counters(delta); }
Counters StorageWrapper::counters() { return target_.counters(); }
size_t StorageWrapper::repair_due(std::string& cursor) { return target_.repair_due(cursor); }

QueuedMessage StorageWrapper::do_get(std::string_view id) { return target_.get(id); }
void StorageWrapper::do_hold(std::string_view id, std::string_view reason, Timestamp since) {
  target_.hold(id, reason, since);
}
void StorageWrapper::do_release_hold(std::string_view id) { target_.release_hold(id); }
void StorageWrapper::do_announce(std::string_view id, Timestamp timestamp) {
  target_.announce(id, timestamp);
}
void StorageWrapper::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                      std::string_view last_reply,
                                      std::span<const RecipientReply> deferred) {
  fence.token ? target_.set_timestamp(id, timestamp, fence, last_reply, deferred)
              : target_.set_timestamp(id, timestamp);
}
uint32_t StorageWrapper::do_increment_attempts(std::string_view id, Fence fence) {
  return fence.token ? target_.increment_attempts(id, fence) : target_.increment_attempts(id);
}
void StorageWrapper::do_set_recipients_delivered(std::string_view id,
                                                 std::span<const size_t> rcpt_indexes, Fence fence,
                                                 std::span<const RecipientFailure> failed) {
  fence.token ? target_.set_recipients_delivered(id, rcpt_indexes, fence, failed)
              : target_.set_recipients_delivered(id, rcpt_indexes, failed);
}
void StorageWrapper::do_remove(std::string_view id, Fence fence) {
  fence.token ? target_.remove(id, fence) : target_.remove(id);
}
ClaimResult StorageWrapper::do_claim(std::string_view id, std::chrono::milliseconds duration) {
  return target_.claim(id, duration);
}
void StorageWrapper::do_release(std::string_view id, Fence fence) { target_.release(id, fence); }
Lease StorageWrapper::do_renew(std::string_view id, Fence fence,
                               std::chrono::milliseconds duration) {
  return target_.renew(id, fence, duration);
}
std::vector<QueueEntry> StorageWrapper::do_wait(std::chrono::milliseconds timeout) {
  return target_.wait(timeout);
}
std::vector<QueueEntry> StorageWrapper::do_due(Timestamp now, size_t limit,
                                               std::chrono::milliseconds hand_out) {
  return target_.due(now, limit, hand_out);
}

}  // namespace slimta
