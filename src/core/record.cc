#include "core/record.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <map>

#include "core/big_endian.h"
#include "slimta/errors.h"

namespace slimta::record {
namespace {

constexpr std::string_view kMagic = "SLMTAQ";

enum Tag : uint8_t {
  kNextAttempt = 0x01,
  kAttempts = 0x02,
  kRecipientCount = 0x03,
  kDelivered = 0x04,
  kLease = 0x05,
  kHold = 0x06,
  kLastReply = 0x07,
  kFailed = 0x08,
  kDeferred = 0x09,
  kSender = 0x10,
  kRecipient = 0x11,
  kClientIp = 0x12,
  kClientHost = 0x13,
  kClientName = 0x14,
  kClientProtocol = 0x15,
  kClientAuth = 0x16,
  kReceiver = 0x17,
  kReceivedAt = 0x18,
  kMessage = 0x1F,
  kChecksum = 0xFF,
};
constexpr uint8_t kFirstEnvelopeTag = 0x10;

using big_endian::get_u32;
using big_endian::get_u64;
using big_endian::put_u32;
using big_endian::put_u64;

void put_field(std::string& out, uint8_t tag, std::string_view value) {
  if (value.size() > std::numeric_limits<uint32_t>::max()) {
    throw InvalidArgument("field " + std::to_string(tag) + " is " + std::to_string(value.size()) +
                          " bytes; the stored format holds at most 4 GiB per field");
  }
  out.push_back(static_cast<char>(tag));
  put_u32(out, static_cast<uint32_t>(value.size()));
  out.append(value);
}
void put_u32_field(std::string& out, uint8_t tag, uint32_t v) {
  std::string s;
  put_u32(s, v);
  put_field(out, tag, s);
}
void put_f64_field(std::string& out, uint8_t tag, double v) {
  std::string s;
  put_u64(s, std::bit_cast<uint64_t>(v));
  put_field(out, tag, s);
}

uint32_t crc32_of(std::string_view data, uLong crc = crc32(0L, Z_NULL, 0)) {
  // zlib takes uInt lengths: feed large inputs in pieces.
  while (!data.empty()) {
    size_t n = std::min<size_t>(data.size(), 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(n));
    data.remove_prefix(n);
  }
  return static_cast<uint32_t>(crc);
}

[[noreturn]] void corrupt(std::string_view what, const std::string& why) {
  throw CorruptRecord("corrupt record " + std::string(what) + ": " + why);
}

// Walks the fields of a record body. `on_field` returns false to stop early.
struct FieldReader {
  std::string_view data;
  size_t pos = kHeaderSize;
  std::string_view what;

  // Returns false at the end of `data` (before a complete field header).
  bool next(uint8_t& tag, std::string_view& value, bool allow_short) {
    if (data.size() - pos < 5) {
      if (allow_short) return false;
      corrupt(what, "truncated field header at byte " + std::to_string(pos));
    }
    tag = static_cast<uint8_t>(data[pos]);
    uint32_t len = get_u32(data.substr(pos + 1, 4));
    if (data.size() - pos - 5 < len) {
      if (allow_short) return false;
      corrupt(what, "field " + std::to_string(tag) + " at byte " + std::to_string(pos) +
                        " runs past the end of the record");
    }
    value = data.substr(pos + 5, len);
    pos += 5 + len;
    return true;
  }
};

void check_size(std::string_view what, uint8_t tag, std::string_view value, size_t size) {
  if (value.size() != size) {
    corrupt(what, "field " + std::to_string(tag) + " has " + std::to_string(value.size()) +
                      " bytes, expected " + std::to_string(size));
  }
}

// Applies a metadata field; returns false for a tag that is not metadata.
bool read_meta_field(Metadata& meta, uint8_t tag, std::string_view value, std::string_view what) {
  switch (tag) {
    case kNextAttempt:
      check_size(what, tag, value, 8);
      meta.timestamp = std::bit_cast<double>(get_u64(value));
      return true;
    case kAttempts:
      check_size(what, tag, value, 4);
      meta.attempts = get_u32(value);
      return true;
    case kRecipientCount:
      check_size(what, tag, value, 4);
      meta.recipients = get_u32(value);
      return true;
    case kDelivered:
      if (value.size() % 4 != 0) corrupt(what, "delivered list length is not a multiple of 4");
      meta.delivered.clear();
      for (size_t i = 0; i < value.size(); i += 4)
        meta.delivered.push_back(get_u32(value.substr(i, 4)));
      return true;
    case kLease:
      check_size(what, tag, value, 16);
      meta.lease = *decode_lease(value);
      return true;
    case kHold:
      if (value.size() < 8) corrupt(what, "hold field shorter than 8 bytes");
      meta.hold = Hold{std::bit_cast<double>(get_u64(value)), std::string(value.substr(8))};
      return true;
    case kLastReply:
      meta.last_reply = value;
      return true;
    case kFailed:
      meta.failed = decode_failures(value, what);
      return true;
    case kDeferred:
      meta.deferred = decode_replies(value, what);
      return true;
    default:
      return tag < kFirstEnvelopeTag;  // unknown metadata tags are skipped
  }
}

uint64_t read_header(std::string_view data, std::string_view what) {
  if (data.size() < kHeaderSize) corrupt(what, "shorter than the 16-byte header");
  if (data.substr(0, kMagic.size()) != kMagic) corrupt(what, "bad magic (not a slimta record)");
  auto version = static_cast<uint8_t>(data[6]);
  if (version != kVersion) {
    corrupt(what, "unsupported format version " + std::to_string(version) + " (this build reads " +
                      std::to_string(kVersion) + ")");
  }
  return get_u64(data.substr(8, 8));
}

}  // namespace

std::string encode(const Metadata& meta, const Envelope* envelope) {
  Parts parts = encode_parts(meta, envelope);
  std::string out;
  out.reserve(parts.head.size() + parts.body.size() + parts.tail.size());
  out.append(parts.head).append(parts.body).append(parts.tail);
  return out;
}

Parts encode_parts(const Metadata& meta, const Envelope* envelope) {
  Parts parts;
  std::string& out = parts.head;
  size_t header_size = 0;  // of the message's header section, with its separator
  if (envelope) {
    for (const auto& f : envelope->headers.fields())
      header_size += f.name.size() + 1 + f.raw.size();
    header_size += envelope->separator.size();
  }
  out.reserve(kHeaderSize + 256 + header_size);
  out.append(kMagic);
  out.push_back(static_cast<char>(kVersion));
  out.push_back(0);
  put_u64(out, 0);  // total length, patched below

  put_f64_field(out, kNextAttempt, meta.timestamp);
  put_u32_field(out, kAttempts, meta.attempts);
  put_u32_field(out, kRecipientCount, meta.recipients);
  std::string delivered;
  for (uint32_t i : meta.delivered) put_u32(delivered, i);
  put_field(out, kDelivered, delivered);
  if (meta.lease.token != 0) put_field(out, kLease, encode_lease(meta.lease));
  if (meta.hold) {
    std::string hold;
    put_u64(hold, std::bit_cast<uint64_t>(meta.hold->since));
    hold.append(meta.hold->reason);
    put_field(out, kHold, hold);
  }
  if (!meta.last_reply.empty()) put_field(out, kLastReply, meta.last_reply);
  if (!meta.failed.empty()) put_field(out, kFailed, encode_failures(meta.failed));
  if (!meta.deferred.empty()) put_field(out, kDeferred, encode_replies(meta.deferred));

  if (envelope) {
    put_field(out, kSender, envelope->sender);
    for (const auto& r : envelope->recipients) put_field(out, kRecipient, r);
    put_field(out, kClientIp, envelope->client.ip);
    put_field(out, kClientHost, envelope->client.host);
    put_field(out, kClientName, envelope->client.name);
    put_field(out, kClientProtocol, envelope->client.protocol);
    put_field(out, kClientAuth, envelope->client.auth);
    put_field(out, kReceiver, envelope->receiver);
    put_f64_field(out, kReceivedAt, envelope->timestamp);
    // The message field: its header section here, its body (the bulk) by reference.
    if (header_size + envelope->body.size() > std::numeric_limits<uint32_t>::max()) {
      throw InvalidArgument("the message is " +
                            std::to_string(header_size + envelope->body.size()) +
                            " bytes; the stored format holds at most 4 GiB per field");
    }
    out.push_back(static_cast<char>(kMessage));
    put_u32(out, static_cast<uint32_t>(header_size + envelope->body.size()));
    for (const auto& f : envelope->headers.fields()) {
      out += f.name;
      out += ':';
      out += f.raw;
    }
    out += envelope->separator;
    parts.body = envelope->body;
  }

  uint64_t total = out.size() + parts.body.size() + 5 + 4;
  std::string len;
  put_u64(len, total);
  out.replace(8, 8, len);
  std::string crc;
  put_u32(crc, crc32_of(parts.body, crc32_of(out)));
  put_field(parts.tail, kChecksum, crc);
  return parts;
}

namespace {

// decode(), and with `owner` (the buffer `bytes` views) the message's bytes are moved
// out of it in place rather than copied: a large message is held once, not twice.
Decoded decode_record(std::string_view bytes, std::string_view what, std::string* owner) {
  uint64_t total = read_header(bytes, what);
  if (total != bytes.size()) {
    corrupt(what, "length is " + std::to_string(bytes.size()) + " bytes, header says " +
                      std::to_string(total) + " (torn or truncated write)");
  }
  Decoded out;
  Envelope env;
  bool has_envelope = false;
  bool has_checksum = false;
  bool has_message = false;
  size_t message_at = 0, message_size = 0;
  FieldReader reader{bytes, kHeaderSize, what};
  uint8_t tag;
  std::string_view value;
  while (reader.next(tag, value, /*allow_short=*/false)) {
    if (tag == kChecksum) {
      check_size(what, tag, value, 4);
      if (reader.pos != bytes.size()) corrupt(what, "data after the checksum field");
      uint32_t want = get_u32(value);
      uint32_t got = crc32_of(bytes.substr(0, bytes.size() - 9));
      if (want != got) corrupt(what, "checksum mismatch");
      has_checksum = true;
      break;
    }
    if (read_meta_field(out.meta, tag, value, what)) continue;
    has_envelope = true;
    switch (tag) {
      case kSender:
        env.sender.assign(value);
        break;
      case kRecipient:
        env.recipients.emplace_back(value);
        break;
      case kClientIp:
        env.client.ip.assign(value);
        break;
      case kClientHost:
        env.client.host.assign(value);
        break;
      case kClientName:
        env.client.name.assign(value);
        break;
      case kClientProtocol:
        env.client.protocol.assign(value);
        break;
      case kClientAuth:
        env.client.auth.assign(value);
        break;
      case kReceiver:
        env.receiver.assign(value);
        break;
      case kReceivedAt:
        check_size(what, tag, value, 8);
        env.timestamp = std::bit_cast<double>(get_u64(value));
        break;
      case kMessage:
        message_at = static_cast<size_t>(value.data() - bytes.data());
        message_size = value.size();
        has_message = true;
        break;
      default:
        break;  // unknown envelope fields are skipped (doc/format.md)
    }
  }
  if (!has_checksum) corrupt(what, "no checksum field");
  for (uint32_t i : out.meta.delivered) {
    if (i >= out.meta.recipients)
      corrupt(what, "delivered index " + std::to_string(i) + " out of range");
  }
  if (has_message) {
    if (owner) {  // checked already: the record's own bytes become the message
      owner->resize(message_at + message_size);
      owner->erase(0, message_at);
      env.parse(std::move(*owner));
    } else {
      env.parse(std::string(bytes.substr(message_at, message_size)));
    }
  }
  if (has_envelope) out.envelope = std::move(env);
  return out;
}

Message to_message(Decoded d, std::string_view what) {
  if (!d.envelope) corrupt(what, "it holds no envelope");
  return Message{std::move(*d.envelope), std::move(d.meta)};
}

}  // namespace

Decoded decode(std::string_view bytes, std::string_view what) {
  return decode_record(bytes, what, nullptr);
}

Decoded decode(std::string&& bytes, std::string_view what) {
  return decode_record(bytes, what, &bytes);
}

Message decode_message(std::string_view bytes, std::string_view what) {
  return to_message(decode(bytes, what), what);
}

Message decode_message(std::string&& bytes, std::string_view what) {
  return to_message(decode(std::move(bytes), what), what);
}

std::optional<Prefix> decode_prefix(std::string_view prefix, std::string_view what) {
  if (prefix.size() < kHeaderSize) {
    if (prefix.size() >= kMagic.size() && prefix.substr(0, kMagic.size()) != kMagic) {
      corrupt(what, "bad magic (not a slimta record)");
    }
    return std::nullopt;
  }
  Prefix out;
  out.total_length = read_header(prefix, what);
  FieldReader reader{prefix, kHeaderSize, what};
  uint8_t tag;
  std::string_view value;
  while (reader.next(tag, value, /*allow_short=*/true)) {
    if (tag == kChecksum || !read_meta_field(out.meta, tag, value, what)) return out;
  }
  // Ran out of bytes: complete only if the prefix is the whole record.
  if (prefix.size() == out.total_length) return out;
  return std::nullopt;
}

Metadata initial_metadata(const Envelope& envelope, Timestamp timestamp) {
  if (envelope.recipients.size() > std::numeric_limits<uint32_t>::max()) {
    throw InvalidArgument("too many recipients");
  }
  Metadata meta;
  meta.timestamp = timestamp;
  meta.recipients = static_cast<uint32_t>(envelope.recipients.size());
  return meta;
}

namespace {

void check_index(const Metadata& meta, size_t i) {
  if (i >= meta.recipients) {
    throw InvalidArgument("recipient index " + std::to_string(i) +
                          " out of range: the message has " + std::to_string(meta.recipients) +
                          " recipients");
  }
}

// The entries of a failed or deferred field: `earlier` with `later` merged in,
// ascending by index, an entry replacing an earlier one of its index (for a merge, and
// for a Redis copy that was appended to).
template <typename Entry>
std::vector<Entry> merged(std::vector<Entry> earlier, std::vector<Entry> later) {
  std::map<size_t, Entry> by_index;
  for (auto* list : {&earlier, &later})
    for (auto& e : *list) by_index[e.index] = std::move(e);
  std::vector<Entry> out;
  out.reserve(by_index.size());
  for (auto& [i, e] : by_index) out.push_back(std::move(e));
  return out;
}

// One entry: u32 index, u8 flags, u32 reply length, the reply.
void put_entry(std::string& out, size_t index, uint8_t flags, std::string_view reply) {
  if (index > std::numeric_limits<uint32_t>::max() ||
      reply.size() > std::numeric_limits<uint32_t>::max())
    throw InvalidArgument("a recipient's reply too large for the stored format");
  put_u32(out, static_cast<uint32_t>(index));
  out.push_back(static_cast<char>(flags));
  put_u32(out, static_cast<uint32_t>(reply.size()));
  out += reply;
}

// Calls each(index, flags, reply) for every entry of `bytes`, the value of `field`.
template <typename Each>
void read_entries(std::string_view bytes, std::string_view field, std::string_view what,
                  Each each) {
  while (!bytes.empty()) {
    if (bytes.size() < 9) corrupt(what, "truncated entry in the " + std::string(field) + " field");
    uint32_t len = get_u32(bytes.substr(5, 4));
    if (bytes.size() - 9 < len) {
      corrupt(what, "an entry of the " + std::string(field) + " field runs past its end");
    }
    each(get_u32(bytes), static_cast<uint8_t>(bytes[4]), bytes.substr(9, len));
    bytes.remove_prefix(9 + len);
  }
}

}  // namespace

void mark_delivered(Metadata& meta, std::span<const size_t> indexes) {
  for (size_t i : indexes) check_index(meta, i);
  for (size_t i : indexes) meta.delivered.push_back(static_cast<uint32_t>(i));
  std::sort(meta.delivered.begin(), meta.delivered.end());
  meta.delivered.erase(std::unique(meta.delivered.begin(), meta.delivered.end()),
                       meta.delivered.end());
}

void mark_failed(Metadata& meta, std::span<const RecipientFailure> failed) {
  for (const auto& f : failed) check_index(meta, f.index);
  meta.failed = merged(meta.failed, {failed.begin(), failed.end()});
}

void check_indexes(const Metadata& meta, std::span<const RecipientReply> replies) {
  for (const auto& r : replies) check_index(meta, r.index);
}

std::vector<RecipientReply> sorted_replies(std::vector<RecipientReply> replies) {
  return merged<RecipientReply>({}, std::move(replies));
}

std::string encode_failures(std::span<const RecipientFailure> failed) {
  std::string out;
  for (const auto& f : failed) put_entry(out, f.index, f.bounced ? 1 : 0, f.reply);
  return out;
}

std::vector<RecipientFailure> decode_failures(std::string_view bytes, std::string_view what) {
  std::vector<RecipientFailure> read;
  read_entries(bytes, "failed", what, [&](uint32_t index, uint8_t flags, std::string_view reply) {
    read.push_back({index, std::string(reply), (flags & 1) != 0});
  });
  return merged<RecipientFailure>({}, std::move(read));
}

std::string encode_replies(std::span<const RecipientReply> deferred) {
  std::string out;
  for (const auto& r : deferred) put_entry(out, r.index, 0, r.reply);
  return out;
}

std::vector<RecipientReply> decode_replies(std::string_view bytes, std::string_view what) {
  std::vector<RecipientReply> read;
  read_entries(bytes, "deferred", what, [&](uint32_t index, uint8_t, std::string_view reply) {
    read.push_back({index, std::string(reply)});
  });
  return sorted_replies(std::move(read));
}

QueuedMessage to_queued(Envelope envelope, const Metadata& meta) {
  QueuedMessage out;
  out.attempts = meta.attempts;
  out.timestamp = meta.timestamp;
  out.original_recipients = envelope.recipients.size();
  out.delivered.assign(meta.delivered.begin(), meta.delivered.end());
  out.lease = meta.lease;
  out.hold = meta.hold;
  out.last_reply = meta.last_reply;
  // Only failures of recipients marked delivered count (a reader may meet a field
  // written by hand).
  for (const auto& f : meta.failed)
    if (std::binary_search(meta.delivered.begin(), meta.delivered.end(), f.index))
      out.failed.push_back(f);
  for (const auto& r : meta.deferred)
    if (r.index < meta.recipients &&
        !std::binary_search(meta.delivered.begin(), meta.delivered.end(), r.index))
      out.deferred.push_back(r);
  if (!meta.delivered.empty()) {
    std::vector<std::string> remaining;
    size_t d = 0;
    for (size_t i = 0; i < envelope.recipients.size(); ++i) {
      if (d < meta.delivered.size() && meta.delivered[d] == i) {
        out.delivered_recipients.push_back(std::move(envelope.recipients[i]));
        ++d;
        continue;
      }
      remaining.push_back(std::move(envelope.recipients[i]));
    }
    envelope.recipients = std::move(remaining);
  }
  out.envelope = std::move(envelope);
  return out;
}

std::string encode_lease(const Lease& lease) {
  std::string out;
  put_u64(out, lease.token);
  put_u64(out, std::bit_cast<uint64_t>(lease.expires));
  return out;
}

std::optional<Lease> decode_lease(std::string_view bytes) {
  if (bytes.size() != 16) return std::nullopt;
  return Lease{get_u64(bytes), std::bit_cast<double>(get_u64(bytes.substr(8)))};
}

ClaimResult claim(Metadata& meta, Timestamp now, std::chrono::milliseconds duration) {
  if (meta.hold) return ClaimResult{ClaimResult::Status::held, meta.lease};
  if (meta.lease.expires > now) return ClaimResult{ClaimResult::Status::busy, meta.lease};
  meta.lease = Lease{meta.lease.token + 1, now + std::chrono::duration<double>(duration).count()};
  return ClaimResult{ClaimResult::Status::claimed, meta.lease};
}

LeaseLost lease_lost(std::string_view id, Fence fence, const Lease& current) {
  std::string why = current.token == fence.token
                        ? "it was released"
                        : "lease " + std::to_string(current.token) + " took it over";
  return LeaseLost("message " + std::string(id) + ": lease " + std::to_string(fence.token) +
                   " no longer holds it (" + why + "); nothing changed");
}

void check_fence(const Metadata& meta, Fence fence, std::string_view id) {
  if (fence.token == 0) return;
  if (meta.lease.token != fence.token || meta.lease.expires == 0)
    throw lease_lost(id, fence, meta.lease);
}

void release(Metadata& meta, Fence fence, std::string_view id) {
  check_fence(meta, fence, id);
  meta.lease.expires = 0;
}

Lease renew(Metadata& meta, Fence fence, Timestamp now, std::chrono::milliseconds duration,
            std::string_view id) {
  check_fence(meta, fence, id);
  meta.lease.expires = now + std::chrono::duration<double>(duration).count();
  return meta.lease;
}

}  // namespace slimta::record
