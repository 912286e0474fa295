// QueueStorage: where a mail queue keeps the messages awaiting delivery
// (python's slimta.queue.QueueStorage). The eight methods below carry the seed's
// names and meaning; every backend (memory, disk, redis, cloud) passes one
// conformance suite that checks each promise written here.
//
// Ids are opaque strings chosen by the storage: 1 to 64 characters from
// [A-Za-z0-9_-], so they are safe in URLs, file names and Redis keys. A malformed
// id passed to any method raises InvalidArgument (it can never name a file outside
// the storage): checked here, once, by the public methods, before a backend's do_*
// sees it. An id that is well-formed but not stored raises KeyError, except in
// remove().
//
// Recipient indexes always refer to the ORIGINAL recipient list given to write(),
// never to the reduced list that get() returns.
//
// Timestamps are seconds since the Unix epoch, as in the python original.
//
// Leases (beyond the python original): several queue processes may share one storage,
// and claim() makes sure one of them at a time attempts a message. A claim returns a
// fencing token that grows with every claim of that message; the mutations made on
// behalf of the claim pass it back as a Fence, and the storage refuses them
// (LeaseLost) once the lease was released, or expired and was claimed again. So a
// slow process whose lease ran out can never overwrite the newer holder's progress.
// The lease state lives with the message's metadata, and every check is atomic with
// the mutation it guards. Calls without a Fence (an operator's tool) are not fenced.
//
// Holds (like Postfix's postsuper -h): a held message is kept, but claim() refuses it
// until release_hold().
//
// Thread safety: every QueueStorage implementation may be called from several threads
// at once, except wait(), which one thread at a time may call.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/clock.h"
#include "slimta/envelope.h"
#include "slimta/errors.h"
#include "slimta/shaping.h"

namespace slimta {

// A new random id (128 bits from the system CSPRNG, 32 lowercase hex digits).
std::string new_message_id();
// `bytes` random bytes from the system CSPRNG as 2*bytes lowercase hex digits.
std::string random_hex(size_t bytes);
// Whether `id` has the form every storage accepts (see the top of this file).
bool is_valid_id(std::string_view id);
// Throws InvalidArgument naming the bad id unless is_valid_id(id).
void check_id(std::string_view id);

// One (timestamp, id) pair, as load() and wait() yield them.
struct QueueEntry {
  Timestamp timestamp = 0;  // next delivery attempt
  std::string id;

  bool operator==(const QueueEntry&) const = default;
};

// A lease on one message: its fencing token (1 for the first claim of a message, then
// one more per claim) and when it runs out. token 0 means never claimed.
struct Lease {
  uint64_t token = 0;
  Timestamp expires = 0;  // 0: released

  bool operator==(const Lease&) const = default;
};

// Passed to a mutation made on behalf of a claim: the token claim() returned.
struct Fence {
  uint64_t token = 0;
};

// An operator's hold on a message: when and why.
struct Hold {
  Timestamp since = 0;
  std::string reason;

  bool operator==(const Hold&) const = default;
};

struct ClaimResult {
  enum class Status {
    claimed,  // the caller holds `lease` until lease.expires, or release()
    busy,     // another claim holds it until lease.expires (that lease's token)
    held,     // an operator holds it (see hold())
  };
  Status status = Status::busy;
  Lease lease;
};

// Event counters kept in the storage, shared by every process that uses it (the
// queue adds to them; slimta-queue info shows them). Name -> count.
using Counters = std::map<std::string, int64_t>;

// A recipient marked delivered that was not delivered: it failed for good (refused
// with a 5xx, refused by our own routing, or given up on after too long), with the
// reply that decided it, and whether a bounce (DSN) went to the sender.
struct RecipientFailure {
  size_t index = 0;  // into the original recipient list
  std::string reply;
  bool bounced = false;

  bool operator==(const RecipientFailure&) const = default;
};

// A recipient still pending and the reply of its last attempt: the 4xx that deferred
// it, or why it was not tried (its destination down, a connection that failed).
struct RecipientReply {
  size_t index = 0;  // into the original recipient list
  std::string reply;

  bool operator==(const RecipientReply&) const = default;
};

// What get() returns: python's (envelope, attempts) plus the rest of the metadata.
struct QueuedMessage {
  // The stored envelope WITHOUT the recipients marked delivered.
  Envelope envelope;
  uint32_t attempts = 0;
  Timestamp timestamp = 0;  // next delivery attempt
  // Indexes into the original recipient list that are marked delivered, ascending,
  // and those recipients' addresses, in the same order.
  std::vector<size_t> delivered;
  std::vector<std::string> delivered_recipients;
  // Of `delivered`, those that failed for good, ascending by index: the rest of
  // `delivered` were delivered.
  std::vector<RecipientFailure> failed;
  // Number of recipients in the original list.
  size_t original_recipients = 0;
  // The latest lease (token 0 if never claimed) and the operator's hold, if any.
  Lease lease;
  std::optional<Hold> hold;
  // The reply that deferred the last attempt ("" until one did).
  std::string last_reply;
  // Of the recipients still pending, those with a reply of their own (set_timestamp),
  // ascending by index: the reply that deferred each at its last attempt.
  std::vector<RecipientReply> deferred;

  // Original index of each recipient in envelope.recipients, in the same order:
  // what set_recipients_delivered() expects for envelope.recipients[i].
  std::vector<size_t> remaining_indexes() const;
};

// What stats() tells of the whole queue.
struct QueueStats {
  uint64_t messages = 0;  // stored
  uint64_t held = 0;      // of them, held
  Timestamp oldest = 0;   // receipt time (Envelope::timestamp) of the oldest; 0: none

  bool operator==(const QueueStats&) const = default;
};

// What a backend can do. Callers check these instead of catching NotSupported.
struct Capabilities {
  bool can_wait = false;   // wait() works (false: it throws NotSupported)
  bool shared = false;     // several processes (or hosts) may use the same storage
  bool durable = false;    // write() returns only after the message would survive a crash
  bool can_lease = false;  // claim(), release(), hold() and the fenced mutations work
  // due() and repair_due() work: the storage keeps its messages indexed by due time, so
  // that a queue can pull the work due now instead of holding the whole schedule.
  bool due_index = false;
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

  // What the storage is, for an operator's output and metrics: "memory", "disk",
  // "redis" or "s3" (a wrapper says what it wraps). The default: "custom".
  virtual std::string kind() const;

  // Whether a write of a message of `bytes` octets would find room: false when the
  // storage keeps a free-space guard and it would be crossed (DiskStorage's
  // min_free), so that a receiver can refuse at once (452 4.3.1) what write() would
  // refuse with StorageFull. A hint, not a reservation. The default: true.
  virtual bool has_room(size_t bytes) const;

  // Store `envelope` with `timestamp` as its next delivery attempt and 0 attempts;
  // returns the new message's id. When it returns, the message is as durable as the
  // backend promises (capabilities().durable): accepting mail is taking responsibility
  // for it. The id is chosen before any I/O, so an internal retry cannot store the
  // message twice. Throws QueueError; on error nothing is stored, and nothing will be: a
  // backend on a network settles a write whose answer was lost or late before it answers
  // (stored: it returns the id; else it makes sure a late copy never lands as a message),
  // so that a client told "try again" never gets its message delivered twice
  // (RedisOptions::resolve_timeout says how, and the one case it cannot rule out).
  virtual std::string write(const Envelope& envelope, Timestamp timestamp) = 0;

  // The four mutations below come in two forms: without a Fence (unfenced), and with
  // the Fence of a claim, which throws LeaseLost, changing nothing, unless that claim
  // still holds the message (see the top of this file).

  // Set the time of the next delivery attempt. Throws KeyError if `id` is not stored
  // (it never creates a record).
  void set_timestamp(std::string_view id, Timestamp timestamp) {
    check_id(id);
    do_set_timestamp(id, timestamp, Fence{}, {}, {});
  }
  void set_timestamp(std::string_view id, Timestamp timestamp, Fence fence) {
    check_args(id, fence);
    do_set_timestamp(id, timestamp, fence, {}, {});
  }
  // The same, recording `last_reply` (the reply that deferred the attempt) with the
  // message's metadata, in the same atomic step: list and show print it. `deferred`,
  // when not empty, replaces the pending recipients' own replies (QueuedMessage::
  // deferred); InvalidArgument, changing nothing, if an index is out of range.
  void set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                     std::string_view last_reply, std::span<const RecipientReply> deferred = {}) {
    check_args(id, fence);
    do_set_timestamp(id, timestamp, fence, last_reply, deferred);
  }

  // Add one to the attempt count and return the new count. Atomic: two concurrent
  // callers get n and n+1. Throws KeyError if `id` is not stored.
  uint32_t increment_attempts(std::string_view id) {
    check_id(id);
    return do_increment_attempts(id, Fence{});
  }
  uint32_t increment_attempts(std::string_view id, Fence fence) {
    check_args(id, fence);
    return do_increment_attempts(id, fence);
  }

  // Mark recipients as delivered, by index into the ORIGINAL recipient list; the
  // result is the union with what was already marked. Atomic. Throws KeyError if `id`
  // is not stored, InvalidArgument (changing nothing) if an index is out of range.
  // `failed` tells which of them were not delivered but failed for good, and why
  // (QueuedMessage::failed); each of its indexes must be among `rcpt_indexes`.
  void set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes,
                                std::span<const RecipientFailure> failed = {}) {
    check_id(id);
    check_failures(rcpt_indexes, failed);
    do_set_recipients_delivered(id, rcpt_indexes, Fence{}, failed);
  }
  void set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes,
                                Fence fence, std::span<const RecipientFailure> failed = {}) {
    check_args(id, fence);
    check_failures(rcpt_indexes, failed);
    do_set_recipients_delivered(id, rcpt_indexes, fence, failed);
  }

  // Every stored message as (next attempt, id), in no particular order, streamed.
  virtual std::unique_ptr<EntryStream> load() = 0;

  // The message and its metadata; the envelope lacks the delivered recipients.
  // Throws KeyError if `id` is not stored, CorruptRecord if it cannot be decoded.
  QueuedMessage get(std::string_view id) {
    check_id(id);
    return do_get(id);
  }

  // Delete the message. It is not an error if `id` is not stored.
  void remove(std::string_view id) {
    check_id(id);
    do_remove(id, Fence{});
  }
  void remove(std::string_view id, Fence fence) {
    check_args(id, fence);
    do_remove(id, fence);
  }

  // Claim the message for `duration`: status claimed with a new lease (token one more
  // than the last claim's) unless another unexpired lease holds it (busy) or an
  // operator holds it (held); only `claimed` changes anything. Expiry is judged by the
  // storage's clock (the Redis server's, the host's otherwise). Throws KeyError if `id`
  // is not stored, NotSupported unless capabilities().can_lease.
  // InvalidArgument unless `duration` is positive.
  ClaimResult claim(std::string_view id, std::chrono::milliseconds duration);
  // End the lease early. Throws LeaseLost if it no longer holds the message.
  void release(std::string_view id, Fence fence) {
    check_args(id, fence);
    do_release(id, fence);
  }
  // Extend the lease: it now runs out `duration` from now (the storage's clock), so
  // that an attempt longer than the lease keeps the message. Returns the lease.
  // Throws LeaseLost if it no longer holds the message (released, or claimed again
  // after it ran out); a lease that ran out but was not claimed again is renewed.
  // KeyError, NotSupported and InvalidArgument as for claim().
  Lease renew(std::string_view id, Fence fence, std::chrono::milliseconds duration);

  // Hold the message: claim() refuses it until release_hold(). Holding a held message
  // replaces the reason. A lease already granted runs on. KeyError if not stored.
  void hold(std::string_view id, std::string_view reason, Timestamp since) {
    check_id(id);
    do_hold(id, reason, since);
  }
  // Lift the hold; not an error if the message is not held. KeyError if not stored.
  void release_hold(std::string_view id) {
    check_id(id);
    do_release_hold(id);
  }

  // Tell the wait() of other processes and storage objects that `id` changed (an
  // operator made it due, or released it), as write() does for a new message: they
  // report it with its stored next attempt. A hint, not durable; a message not stored
  // is not reported. The default does nothing (no wait()); this object's own wait()
  // may or may not report it.
  void announce(std::string_view id, Timestamp timestamp) {
    check_id(id);
    do_announce(id, timestamp);
  }

  // Where the destinations' shaping state is kept for every process on this storage
  // (see shaping.h for what each backend shares); made on first call, then the same
  // object. The default: per process.
  virtual std::shared_ptr<Destinations> destinations();

  // Add `delta` to the shared event counters (atomic per counter), and read them.
  virtual void add_counters(const Counters& delta);
  virtual Counters counters();

  // Block until another process (or another storage object) writes messages, then
  // return them as (next attempt, id). Returns an empty list if `timeout` passes
  // first. Throws NotSupported unless capabilities().can_wait. One thread at a time.
  std::vector<QueueEntry> wait(std::chrono::milliseconds timeout) { return do_wait(timeout); }
  // wait() without a time limit: returns only when there is something to return.
  std::vector<QueueEntry> wait();

  // The due-time index (capabilities().due_index; NotSupported otherwise). Up to `limit`
  // messages due by `now`, oldest first, each as (when it became due, id). A message is
  // due when its next attempt (set_timestamp) is at or before `now` and it is not held;
  // every message handed out is HANDED OUT ONCE: not again, to any caller, until
  // `hand_out` after `now`, unless its time is set again meanwhile (set_timestamp,
  // release_hold); on S3+SQS at least once, as SQS delivers its notices (a second
  // hand-out is rare, and claim() lets one attempt through). So nodes pulling from one
  // storage share the due work without reading the rest, and a message handed to a
  // process that died comes back after `hand_out` (the lease a claim would take). The index changes
  // in the same atomic step as the timestamp, hold or removal that moves it. One exception: a write
  // refused after its answer was lost (RedisOptions::resolve_timeout) that reaches the server later
  // may leave an entry for a message that is not stored; it is handed out once, claim() says
  // KeyError and takes it out. InvalidArgument unless `limit` and `hand_out` are positive.
  std::vector<QueueEntry> due(Timestamp now, size_t limit, std::chrono::milliseconds hand_out);
  // One step of the sweep that puts back in the due index a message missing from it (one
  // stored by a version without the index, or whose notice was lost), reading as little
  // as the backend can. `cursor` "" starts a pass and is "" again when the pass is done.
  // Returns how many messages it put back. NotSupported unless capabilities().due_index.
  virtual size_t repair_due(std::string& cursor);

  // The queue's size, held count and oldest message from what the backend keeps beside
  // the messages (an index, counters, marks), at the cost of a few requests however many
  // messages there are (S3: a LIST per 1,000 messages, reading none of them): nullopt
  // when it keeps nothing that answers, and a caller that
  // wants the figures reads every message (load() and get()). Messages stored before
  // a backend kept these count once its repair_due() sweep has passed them.
  // The default: nullopt.
  virtual std::optional<QueueStats> stats();

  // Convenience: drain load() into a vector (for small queues and tests).
  std::vector<QueueEntry> load_all();

 protected:
  // Where the default destinations() reads the time (a backend whose leases take a
  // Clock passes the same one).
  void set_shaping_clock(const Clock& clock) { shaping_clock_ = &clock; }

  // What each public method does once its arguments are checked (the id's form, the
  // fence, the durations): a backend implements these, never checks them again.
  virtual QueuedMessage do_get(std::string_view id) = 0;
  // Holds and announcements; the default hold throws NotSupported, announce does nothing.
  virtual void do_hold(std::string_view id, std::string_view reason, Timestamp since);
  virtual void do_release_hold(std::string_view id);
  virtual void do_announce(std::string_view id, Timestamp timestamp);
  // The mutations; `fence.token` is 0 for the unfenced form.
  // `last_reply` empty: the one recorded stays; `deferred` empty: those recorded stay.
  virtual void do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                std::string_view last_reply,
                                std::span<const RecipientReply> deferred) = 0;
  virtual uint32_t do_increment_attempts(std::string_view id, Fence fence) = 0;
  virtual void do_set_recipients_delivered(std::string_view id,
                                           std::span<const size_t> rcpt_indexes, Fence fence,
                                           std::span<const RecipientFailure> failed) = 0;
  virtual void do_remove(std::string_view id, Fence fence) = 0;
  // Leases; the defaults throw NotSupported.
  virtual ClaimResult do_claim(std::string_view id, std::chrono::milliseconds duration);
  virtual void do_release(std::string_view id, Fence fence);
  virtual Lease do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration);
  // Backends that can notify override this; the default throws NotSupported.
  virtual std::vector<QueueEntry> do_wait(std::chrono::milliseconds timeout);
  // Backends with a due index override this; the default throws NotSupported.
  virtual std::vector<QueueEntry> do_due(Timestamp now, size_t limit,
                                         std::chrono::milliseconds hand_out);

 private:
  static void check_fence_arg(Fence fence);
  static void check_failures(std::span<const size_t> rcpt_indexes,
                             std::span<const RecipientFailure> failed);
  static void check_args(std::string_view id, Fence fence) {
    check_id(id);
    check_fence_arg(fence);
  }

  const Clock* shaping_clock_ = &system_clock();
  std::once_flag destinations_once_;
  std::shared_ptr<Destinations> destinations_;
};

}  // namespace slimta
