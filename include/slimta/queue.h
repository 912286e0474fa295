// Queue: the engine that takes messages, keeps them in a QueueStorage and gets them
// delivered (python's slimta.queue.Queue, plus leases so several processes can share
// one storage).
//
// A message's life: enqueue() writes it to the storage and schedules it; at its time a
// worker claims it (QueueStorage::claim, so no other process attempts it meanwhile),
// reads it, and hands it to the Relay. Per recipient:
//   delivered   marked delivered, never attempted again;
//   permanent   (5xx) bounced to the sender, then marked so it is not attempted again;
//   transient   (4xx) attempted again after the policy's backoff: the attempt count and
//               the next time are stored (fenced by the claim), then the claim released.
// When no recipient is left the message is removed. When the policy gives up (too many
// attempts, too old) the recipients left are bounced. A bounce is a new message from
// the null sender <> (an RFC 3464 multipart/report); a bounce is never bounced.
//
// Every step the engine takes on a message is made with the claim's Fence: if the
// claim expired and another process took the message over, the storage refuses the
// step (LeaseLost), the engine logs it and lets the message go; the newer holder's
// progress stands.
//
// Each step is an event (queue_events.h) told to the policy's observers: by default
// logged one line each, "queue: ID EVENT key=value...", so an operator can follow a
// message through the log; counts of each event go to the storage's shared counters
// (slimta-queue info).
//
// Two ways to drive it: start()/stop() run worker threads on the real clock (the
// daemon); run_pending() runs what is due by the injected Clock on the calling
// thread (tests, on a ManualClock, with no sleeps).
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "slimta/clock.h"
#include "slimta/envelope.h"
#include "slimta/metrics.h"
#include "slimta/queue_events.h"
#include "slimta/shaping.h"
#include "slimta/storage.h"

namespace slimta {

// What happened to one recipient in a delivery attempt.
struct RecipientResult {
  enum class Kind { delivered, transient, permanent };
  Kind kind = Kind::transient;
  // The peer's reply, e.g. "250 2.0.0 Ok" or "550 5.1.1 <x@example.com>: no such user".
  std::string reply;
  // Transient because the destination could not be reached or sent us away (no
  // connection, a 421, a session cut before the transaction): counts toward marking
  // the destination down (shaping.h), which a recipient's own 4xx does not.
  bool unreachable = false;
  // Permanent by our own decision, with no peer's reply: the domain has no MX or
  // address, a null MX, no domain at all, a mail loop. What our routing refused at once.
  bool local = false;
  // Where and how the reply was had, for the log (Postfix's relay= and its TLS line):
  // the peer as "host[ip]:port", and "TLSv1.3 TLS_AES_256_GCM_SHA384" (protocol and
  // cipher) when the session was encrypted; empty when unknown (no connection made).
  std::string relay, tls;
  // Seconds setting up the connection (resolve, connect, greeting, EHLO, STARTTLS,
  // AUTH; a kept connection's RSET) and transmitting (MAIL FROM to the final reply).
  double connect_seconds = 0, transmit_seconds = 0;

  static RecipientResult delivered(std::string reply = "250 2.0.0 Ok");
  static RecipientResult transient(std::string reply);
  static RecipientResult permanent(std::string reply);
  // A permanent failure decided here (local).
  static RecipientResult refused_here(std::string reply);
};

// Where the queue hands messages for delivery (python's slimta.relay.Relay).
class Relay {
 public:
  virtual ~Relay() = default;
  // Attempt to deliver `envelope` to each of envelope.recipients (the ones not yet
  // delivered). Returns one result per recipient, in the same order. `attempt` is 1
  // for the first attempt. Throwing (or returning the wrong number of results) counts
  // as a transient failure for every recipient, with the error as the reply.
  // Called from several worker threads at once.
  virtual std::vector<RecipientResult> attempt(const Envelope& envelope, uint32_t attempt) = 0;
  // The destination (next hop) `recipient` is delivered to, by which the queue
  // shapes deliveries (QueuePolicy::shaping): recipients of one destination share its
  // limits and are attempted together. The default: one destination, "".
  virtual std::string destination(const std::string& recipient) const;
};

struct QueuePolicy {
  // Backoff after the n-th failed attempt: initial_backoff * multiplier^(n-1), at most
  // max_backoff (seconds). The default: 5 min, 10, 20, 40, then every hour.
  double initial_backoff = 300;
  double multiplier = 2;
  double max_backoff = 3600;
  // Give up (and bounce) after this many attempts; 0: no limit.
  uint32_t max_attempts = 0;
  // A message with more Received: headers than this is in a mail loop: its
  // recipients fail for good (554 5.4.6) and it is bounced, never attempted (Postfix's
  // hopcount_limit). 0: no limit.
  size_t max_hops = 50;
  // Give up (and bounce) once a message is this old (seconds since it was received):
  // Postfix's maximal_queue_lifetime.
  double max_age = 5 * 24 * 3600;
  // The same for a message from the null sender (a bounce, which is never bounced):
  // Postfix's bounce_queue_lifetime.
  double bounce_max_age = 5 * 24 * 3600;
  // Once a message has waited this long (seconds since received) and is deferred, its
  // sender gets one delay warning (a DSN with Action: delayed, RFC 3464) naming the
  // recipients still pending and until when they are tried: Postfix's
  // delay_warning_time. 0: none. Sent at the first attempt past it (the attempt before
  // it, by the retry schedule, came earlier), not stored: an operator's retry just
  // before and after it may bring a second one.
  double delay_warning = 0;
  // How long a claim lasts. In start() mode the claims of the attempts under way are
  // renewed every third of it, so an attempt may take longer; a process that dies lets
  // its messages go (to other processes) within this long.
  std::chrono::milliseconds lease = std::chrono::minutes(5);
  // Delivery worker threads in start() mode: attempts in flight at once.
  size_t workers = 8;
  // How often a held message is looked at again (seconds).
  double hold_recheck = 60;
  // When a storage error stops an attempt, try again after this long (seconds).
  double error_retry = 30;
  // How often start() mode adds its event counts to the storage's counters (seconds).
  double counters_interval = 1;
  // How often start() mode schedules the whole storage again (seconds; 0: never), to
  // find messages no wait() notice announced to this process: with SQS each notice
  // reaches one process only, and that one may have died. Not with a due index.
  double rescan_interval = 300;
  // Pull due work from the storage's due-time index when it has one
  // (capabilities().due_index) instead of holding every message's schedule: the queue
  // then keeps in memory only what is due now (about due_batch messages, and up to
  // max_line_waiting per destination), start() loads nothing, and a message whose
  // attempt ended waits in the storage, not here. false: the whole schedule in memory,
  // load() at start and rescans (as with a storage without the index).
  bool use_due_index = true;
  // With the due index: how often start() mode asks it for due work when the last ask
  // left nothing more (seconds); what comes due is attempted within about this long.
  double due_poll = 1;
  // With the due index: how many due messages are taken from it at once, and kept
  // scheduled here at most (the storage hands them to nobody else for `lease`).
  size_t due_batch = 100;
  // With the due index: at most this many messages wait in memory in one destination's
  // line (a slow, rate-limited or suspended one); the rest stay in the storage, handed
  // out again after `lease`.
  size_t max_line_waiting = 1000;
  // With the due index: seconds between two steps of the sweep that puts back in the
  // index messages missing from it (QueueStorage::repair_due; each step reads up to
  // ~1000 messages' entries, so a pass over N messages takes N/1000 of these; 0: none).
  double repair_interval = 5;
  // Our name in bounces (Reporting-MTA, From: MAILER-DAEMON@...). Empty: the hostname.
  std::string reporting_mta;
  // Whether a message came from a client we do not vouch for (one that neither
  // authenticated nor sends from our relay networks: it could only send to our own
  // domains, under any sender it liked). Its recipients that our own routing refuses
  // at once (RecipientResult::local) fail without a bounce, logged as "not bounced": a
  // bounce would carry the outsider's message to whatever sender it named
  // (backscatter). A peer's 5xx is bounced as ever. Null: every sender is vouched for.
  std::function<bool(const Envelope& envelope)> from_outsider;
  // Where the queue counts and times what it does for Prometheus (not owned; must
  // outlive the queue): slimta_messages_received_total, slimta_deliveries_total{result},
  // slimta_bounces_total, slimta_lease_lost_total, and the histograms
  // slimta_delivery_attempt_duration_seconds and slimta_message_queue_time_seconds.
  metrics::Registry* metrics = nullptr;
  // Delivery shaping (shaping.h): each due message waits in the line of its
  // destination (Relay::destination of its recipients), and workers take the lines in
  // turn, so a slow destination holds at most its max_connections of them and the rest
  // keep flowing. A destination at its limit or rate, or suspended, keeps its messages
  // waiting (not attempted, not counted as an attempt); one that is down has them
  // deferred without a connection. A message with recipients at several destinations
  // is attempted at each at once (max_parallel_destinations).
  ShapingPolicy shaping;
  // Where the destinations' slots, rates and health are kept; null: the storage's
  // (QueueStorage::destinations(), shared by every process on it where it can be).
  std::shared_ptr<Destinations> destinations;
  // Who is told of each event (queue_events.h), in order, after the log (log_events:
  // a LogObserver) and before the metrics (above), which the queue adds.
  QueueObservers observers;
  bool log_events = true;

  // Seconds to wait after the `attempts`-th failed attempt.
  double backoff(uint32_t attempts) const;
};

// What enqueue() did with one envelope: its id, or why it was not queued.
struct EnqueueResult {
  std::string id;     // set when queued
  std::string error;  // set when not queued; nothing was stored. For the log only: it
                      // may name hosts, ports and paths
  // Whether the same message may be accepted later: every storage fault (down, slow,
  // full, read-only) is; only a fault of the message itself (InvalidArgument) is not.
  bool retryable = false;
  bool storage_full = false;  // retryable, and the storage has no room (StorageFull)
  bool ok() const { return !id.empty(); }
};

// Writes `envelope` into `storage` due at `now` (its timestamp set to `now` if 0), as
// Queue::enqueue stores it but with no engine to schedule it; tells `observers` either
// outcome (enqueued, not_enqueued).
EnqueueResult store_message(QueueStorage& storage, const Envelope& envelope, Timestamp now,
                            const QueueObservers& observers);
// The same, logged (LogObserver).
EnqueueResult store_message(QueueStorage& storage, const Envelope& envelope, Timestamp now);

// An operator's bounce: message `id` is returned to its sender now, its pending
// recipients failed with "550 5.0.0 " + `reason` (a DSN from MAILER-DAEMON@
// `reporting_mta`, stored due now and announce()d), then removed. A message with the
// null sender is only removed (a bounce is never bounced). Returns the DSN's id, ""
// when none was sent. KeyError if `id` is not stored; the DSN is stored before the
// removal, so a failure in between can send it twice but never lose it.
std::string bounce_now(QueueStorage& storage, const std::string& id, std::string_view reason,
                       std::string_view reporting_mta);

// The queue's delivery counters in `registry`, made on first use: what a Queue with
// QueuePolicy::metrics counts into, and what others of the process read (serve's
// status page). slimta_deliveries_total{result} per recipient, slimta_bounces_total.
struct DeliveryCounters {
  metrics::Counter& delivered;
  metrics::Counter& deferred;
  metrics::Counter& failed;
  metrics::Counter& bounced;
};
DeliveryCounters delivery_counters(metrics::Registry& registry);

class Queue {
 public:
  // `storage`, `relay` and `clock` must outlive the Queue. Throws InvalidArgument for
  // a policy field out of range, NotSupported if the storage has no leases.
  Queue(QueueStorage& storage, Relay& relay, QueuePolicy policy = {},
        const Clock& clock = system_clock());
  ~Queue();  // stop()s
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Store each envelope (its timestamp set to now if 0) and schedule it for now. One
  // result per envelope, in order: a failure of one does not stop the others.
  std::vector<EnqueueResult> enqueue(std::span<const Envelope> envelopes);
  EnqueueResult enqueue(const Envelope& envelope);
  // The same, taking the envelope: it is freed once stored and before the message is
  // due, so that a first delivery attempt reading the message back never finds this
  // copy still in memory (a large message would otherwise cost twice its size).
  EnqueueResult enqueue(Envelope&& envelope);

  // Schedule every stored message by its stored time. Returns how many.
  size_t load();
  // Schedule one message, e.g. one that wait() reported. Idempotent: a message
  // already scheduled keeps the earlier time; one being attempted is left alone.
  void schedule(const QueueEntry& entry);

  // Attempt, on the calling thread, every scheduled message due by the clock (and
  // those that become due while it runs, e.g. new bounces), and with a due index every
  // message it hands out. Returns how many attempts it started (claims tried).
  size_t run_pending();
  // When the next scheduled message is due; nullopt if none is scheduled.
  std::optional<Timestamp> next_due() const;
  size_t scheduled() const;

  // Run in the background: load(), then `workers` delivery threads, a thread that
  // schedules what wait() reports (if the storage can wait), and the counters flush.
  // With a due index (QueuePolicy::use_due_index): no load() and no wait(), but a
  // thread that pulls due work and one that repairs the index.
  void start();
  // Stop the background threads. Attempts in flight finish (their results stored);
  // nothing scheduled is lost (it stays in the storage). Counts are flushed.
  void stop();

  // Events counted since the last flush_counters() (names as in the log).
  Counters pending_counters() const;
  // Add the events counted so far to the storage's counters.
  void flush_counters();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
