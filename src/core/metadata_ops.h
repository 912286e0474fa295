// The metadata mutations of QueueStorage, as operations on one message's Metadata, for
// the backends that apply them by an atomic read-modify-write of the whole metadata
// (memory: under a mutex; disk: under flock; cloud: GET + PUT If-Match). Each returns
// a callable `R(Metadata&)`; the backend runs it inside its atomic step. Redis runs the
// same rules as Lua scripts instead.
#pragma once

#include <chrono>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/record.h"

namespace slimta::record::ops {

inline auto set_timestamp(Timestamp timestamp, Fence fence, std::string_view id,
                          std::string_view last_reply, std::span<const RecipientReply> deferred) {
  return [=, reply = std::string(last_reply)](Metadata& m) {
    check_fence(m, fence, id);
    // Checked before anything changes: InvalidArgument leaves the message as it was.
    if (!deferred.empty()) check_indexes(m, deferred);
    m.timestamp = timestamp;
    if (!reply.empty()) m.last_reply = reply;
    if (!deferred.empty()) m.deferred = sorted_replies({deferred.begin(), deferred.end()});
    return 0;
  };
}

inline auto increment_attempts(Fence fence, std::string_view id) {
  return [=](Metadata& m) {
    check_fence(m, fence, id);
    return ++m.attempts;
  };
}

inline auto set_recipients_delivered(std::span<const size_t> indexes, Fence fence,
                                     std::string_view id,
                                     std::span<const RecipientFailure> failed) {
  return [=](Metadata& m) {
    check_fence(m, fence, id);
    // Both or neither: mark_delivered checks every index before it changes anything,
    // and QueueStorage::set_recipients_delivered() has checked that each failure is
    // one of them, so mark_failed cannot refuse one after.
    mark_delivered(m, indexes);
    mark_failed(m, failed);
    return 0;
  };
}

inline auto claim(Timestamp now, std::chrono::milliseconds duration) {
  return [=](Metadata& m) { return record::claim(m, now, duration); };
}

inline auto release(Fence fence, std::string_view id) {
  return [=](Metadata& m) {
    record::release(m, fence, id);
    return 0;
  };
}

inline auto renew(Fence fence, Timestamp now, std::chrono::milliseconds duration,
                  std::string_view id) {
  return [=](Metadata& m) { return record::renew(m, fence, now, duration, id); };
}

inline auto hold(std::string_view reason, Timestamp since) {
  return [hold = Hold{since, std::string(reason)}](Metadata& m) {
    m.hold = hold;
    return 0;
  };
}

inline auto release_hold() {
  return [](Metadata& m) {
    m.hold.reset();
    return 0;
  };
}

}  // namespace slimta::record::ops
