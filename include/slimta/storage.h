// QueueStorage: where a mail queue keeps the messages awaiting delivery
// (python's slimta.queue.QueueStorage). The eight methods below carry the seed's
// names and meaning; every backend (memory, disk, redis, cloud) passes one
// conformance suite that checks each promise written here.
//
// Ids are opaque strings chosen by the storage: 1 to 64 characters from
// [A-Za-z0-9_-], so they are safe in URLs, file names and Redis keys. A malformed
// id passed to any method raises InvalidArgument (it can never name a file outside
// the storage). An id that is well-formed but not stored raises KeyError, except in
// remove().
//
// Recipient indexes always refer to the ORIGINAL recipient list given to write(),
// never to the reduced list that get() returns.
//
// Timestamps are seconds since the Unix epoch, as in the python original.
//
// Thread safety: every QueueStorage implementation may be called from several threads
// at once, except wait(), which one thread at a time may call.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/envelope.h"
#include "slimta/errors.h"

namespace slimta {

using Timestamp = double;

// One (timestamp, id) pair, as load() and wait() yield them.
struct QueueEntry {
  Timestamp timestamp = 0;  // next delivery attempt
  std::string id;

  bool operator==(const QueueEntry&) const = default;
};

// What get() returns: python's (envelope, attempts) plus the rest of the metadata.
struct QueuedMessage {
  // The stored envelope WITHOUT the recipients marked delivered.
  Envelope envelope;
  uint32_t attempts = 0;
  Timestamp timestamp = 0;  // next delivery attempt
  // Indexes into the original recipient list that are marked delivered, ascending.
  std::vector<size_t> delivered;
  // Number of recipients in the original list.
  size_t original_recipients = 0;

  // Original index of each recipient in envelope.recipients, in the same order:
  // what set_recipients_delivered() expects for envelope.recipients[i].
  std::vector<size_t> remaining_indexes() const;
};

// What a backend can do. Callers check these instead of catching NotSupported.
struct Capabilities {
  bool can_wait = false;  // wait() works (false: it throws NotSupported)
  bool shared = false;    // several processes (or hosts) may use the same storage
  bool durable = false;   // write() returns only after the message would survive a crash
};

// A stream of entries from load(). Entries are produced as they are read, so a
// storage holding millions of messages is never held in memory at once.
// REQUIRES: the storage that made the stream outlives it.
class EntryStream {
 public:
  virtual ~EntryStream() = default;
  // The next entry, or nullopt when the stream is exhausted. May throw QueueError.
  virtual std::optional<QueueEntry> next() = 0;
  // Records found corrupt while streaming: each one was logged with its id and
  // reason and set aside by the backend (never silently dropped).
  size_t corrupt() const { return corrupt_; }

 protected:
  size_t corrupt_ = 0;
};

class QueueStorage {
 public:
  virtual ~QueueStorage() = default;
  QueueStorage() = default;
  QueueStorage(const QueueStorage&) = delete;
  QueueStorage& operator=(const QueueStorage&) = delete;

  virtual Capabilities capabilities() const = 0;

  // Store `envelope` with `timestamp` as its next delivery attempt and 0 attempts;
  // returns the new message's id. When it returns, the message is as durable as the
  // backend promises (capabilities().durable): accepting mail is taking responsibility
  // for it. The id is chosen before any I/O, so an internal retry cannot store the
  // message twice. Throws QueueError; on error nothing is stored.
  virtual std::string write(const Envelope& envelope, Timestamp timestamp) = 0;

  // Set the time of the next delivery attempt. Throws KeyError if `id` is not stored
  // (it never creates a record).
  virtual void set_timestamp(std::string_view id, Timestamp timestamp) = 0;

  // Add one to the attempt count and return the new count. Atomic: two concurrent
  // callers get n and n+1. Throws KeyError if `id` is not stored.
  virtual uint32_t increment_attempts(std::string_view id) = 0;

  // Mark recipients as delivered, by index into the ORIGINAL recipient list; the
  // result is the union with what was already marked. Atomic. Throws KeyError if `id`
  // is not stored, InvalidArgument (changing nothing) if an index is out of range.
  virtual void set_recipients_delivered(std::string_view id,
                                        std::span<const size_t> rcpt_indexes) = 0;

  // Every stored message as (next attempt, id), in no particular order, streamed.
  virtual std::unique_ptr<EntryStream> load() = 0;

  // The message and its metadata; the envelope lacks the delivered recipients.
  // Throws KeyError if `id` is not stored, CorruptRecord if it cannot be decoded.
  virtual QueuedMessage get(std::string_view id) = 0;

  // Delete the message. It is not an error if `id` is not stored.
  virtual void remove(std::string_view id) = 0;

  // Block until another process (or another storage object) writes messages, then
  // return them as (next attempt, id). Returns an empty list if `timeout` passes
  // first. Throws NotSupported unless capabilities().can_wait. One thread at a time.
  std::vector<QueueEntry> wait(std::chrono::milliseconds timeout) { return do_wait(timeout); }
  // wait() without a time limit: returns only when there is something to return.
  std::vector<QueueEntry> wait();

  // Convenience: drain load() into a vector (for small queues and tests).
  std::vector<QueueEntry> load_all();

 protected:
  // Backends that can notify override this; the default throws NotSupported.
  virtual std::vector<QueueEntry> do_wait(std::chrono::milliseconds timeout);
};

// A new random id (128 bits from the system CSPRNG, 32 lowercase hex digits).
std::string new_message_id();
// `bytes` random bytes from the system CSPRNG as 2*bytes lowercase hex digits.
std::string random_hex(size_t bytes);
// Whether `id` has the form every storage accepts (see the top of this file).
bool is_valid_id(std::string_view id);
// Throws InvalidArgument naming the bad id unless is_valid_id(id).
void check_id(std::string_view id);

// Open the storage a URL names. Schemes:
//   memory:            in-process, not durable (tests, one-shot tools)
//   disk:PATH          the embedded default: a spool directory (created if missing)
//   redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P&timeout=SECONDS]
//   redis+unix:///PATH/redis.sock[?db=N&password=P&prefix=P&timeout=SECONDS]
//   s3://BUCKET[/PREFIX][?region=R&endpoint=URL&sqs=QUEUE&timeout=SECONDS&path_style=0|1&profile=P]
// Throws InvalidArgument naming the problem for a malformed or unknown URL.
std::unique_ptr<QueueStorage> open_storage(std::string_view url);

}  // namespace slimta
