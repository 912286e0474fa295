// The stored format: one versioned, binary-safe encoding of an envelope and its queue
// metadata, shared by every backend. doc/format.md is the specification; keep the two
// in step.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/envelope.h"
#include "slimta/storage.h"

namespace slimta::record {

inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderSize = 16;  // magic, version, reserved, total length
// Metadata fields come first, so this many bytes always hold them for any message
// whose delivered list has fewer than ~1000 entries; decode_prefix() says if not.
inline constexpr size_t kPrefixSize = 4096;

struct Metadata {
  Timestamp timestamp = 0;  // next delivery attempt
  uint32_t attempts = 0;
  uint32_t recipients = 0;          // size of the original recipient list
  std::vector<uint32_t> delivered;  // ascending, unique, each < recipients
  Lease lease;                      // the latest claim (token 0: never claimed)
  std::optional<Hold> hold;
  std::string last_reply;                // of the last deferred attempt; empty until one
  std::vector<RecipientFailure> failed;  // of `delivered`, ascending by index, unique
  // Pending recipients' last replies, ascending by index, unique; an entry of a
  // recipient since marked delivered is stale (to_queued() leaves it out).
  std::vector<RecipientReply> deferred;

  bool operator==(const Metadata&) const = default;
};

struct Decoded {
  Metadata meta;
  std::optional<Envelope> envelope;  // absent in a metadata-only record
};

// Encode `meta`, plus `envelope` if given. Throws InvalidArgument if a field is too
// large for the format (4 GiB).
std::string encode(const Metadata& meta, const Envelope* envelope);

// The same record in three pieces, so that a large body is written from where it is
// rather than copied: head + body + tail are the bytes encode() returns. `body` refers
// to envelope->body, which must outlive it.
struct Parts {
  std::string head;
  std::string_view body;
  std::string tail;
};
Parts encode_parts(const Metadata& meta, const Envelope* envelope);

// Decode a whole record, verifying length and checksum. `what` names the record in
// error messages. Throws CorruptRecord naming `what` and the reason.
Decoded decode(std::string_view bytes, std::string_view what);
// The same, taking the buffer: the message is moved out of it, not copied.
Decoded decode(std::string&& bytes, std::string_view what);

// A message record: the envelope and the metadata stored with it.
struct Message {
  Envelope envelope;
  Metadata meta;
};
// decode() for records that must hold an envelope; CorruptRecord naming `what` if not.
Message decode_message(std::string_view bytes, std::string_view what);
Message decode_message(std::string&& bytes, std::string_view what);

struct Prefix {
  uint64_t total_length = 0;  // of the whole record
  Metadata meta;
};
// Read the header and metadata from the first bytes of a record without the rest.
// Returns nullopt if `prefix` ends before the metadata does; throws CorruptRecord if
// what is there is not a valid record start. Does not verify the checksum.
std::optional<Prefix> decode_prefix(std::string_view prefix, std::string_view what);

// The metadata of a newly written message.
Metadata initial_metadata(const Envelope& envelope, Timestamp timestamp);

// Union `indexes` into meta.delivered. Throws InvalidArgument, changing nothing, if
// an index is not below meta.recipients.
void mark_delivered(Metadata& meta, std::span<const size_t> indexes);

// Merge `failed` into meta.failed: an entry replaces the one of its index. Throws
// InvalidArgument, changing nothing, if an index is not below meta.recipients.
void mark_failed(Metadata& meta, std::span<const RecipientFailure> failed);

// The value of a record's failed field (doc/format.md): entries of u32 index, u8 flags
// (1: bounced), u32 reply length and the reply. decode_failures() reads entries in any
// order, a later one for an index replacing an earlier (Redis appends to its copy), and
// returns them ascending by index; CorruptRecord names `what` if they are malformed.
std::string encode_failures(std::span<const RecipientFailure> failed);
std::vector<RecipientFailure> decode_failures(std::string_view bytes, std::string_view what);

// The same for the deferred field (the pending recipients' replies): entries of the
// same layout with flags 0, a later one for an index replacing an earlier.
std::string encode_replies(std::span<const RecipientReply> deferred);
std::vector<RecipientReply> decode_replies(std::string_view bytes, std::string_view what);
// `replies` ascending by index, a later entry for an index replacing an earlier.
std::vector<RecipientReply> sorted_replies(std::vector<RecipientReply> replies);
// Throws InvalidArgument unless every index of `replies` is below meta.recipients.
void check_indexes(const Metadata& meta, std::span<const RecipientReply> replies);

// What get() returns for a stored envelope and its metadata.
QueuedMessage to_queued(Envelope envelope, const Metadata& meta);

// The 16-byte form of a lease (u64 token, then the expiry as an IEEE 754 double, both
// big-endian): the value of a record's lease field, and the disk backend's lease/ID.
std::string encode_lease(const Lease& lease);
// nullopt unless `bytes` is exactly 16 bytes.
std::optional<Lease> decode_lease(std::string_view bytes);

// The lease rules of QueueStorage::claim(), applied to one message's metadata by the
// backends that read-modify-write it atomically (memory, disk, cloud; Redis runs the
// same rules in Lua). `id` names the message in errors.
ClaimResult claim(Metadata& meta, Timestamp now, std::chrono::milliseconds duration);
// Throws LeaseLost unless `fence` is unfenced (token 0) or its lease holds `meta`.
void check_fence(const Metadata& meta, Fence fence, std::string_view id);
// check_fence(), then ends the lease.
void release(Metadata& meta, Fence fence, std::string_view id);
// check_fence(), then moves the lease's end to `duration` after `now`.
Lease renew(Metadata& meta, Fence fence, Timestamp now, std::chrono::milliseconds duration,
            std::string_view id);
// The LeaseLost error for `fence` against a message whose latest lease is `current`.
LeaseLost lease_lost(std::string_view id, Fence fence, const Lease& current);

}  // namespace slimta::record
