// What the queue does to messages, as data: one struct per event, which the Queue
// hands to each QueueObserver of its policy as it happens (from its worker threads).
// The daemon renders them to the text or JSON log, counts them for the status page,
// and the metrics are one more observer; so is anything that wants the stream of
// events (an audit trail, a webhook), without parsing log lines.
//
//   event        when                                          fields
//   enqueued     a message was stored                          id, sender, rcpts, size,
//                                                              client_ip, helo, auth,
//                                                              message_id
//   not_enqueued a message could not be stored                 sender, error, retryable
//   attempt      an attempt began at its destinations          id, attempt, rcpts
//   delivered    a recipient was delivered                     id, rcpt, attempt, delay, reply,
//                                                              hop
//   failed       a recipient failed for good (5xx), or the     id, rcpt, attempt, delay, reply,
//                queue gave up on it, or it is not bounced     gave_up, hop
//                (gave_up says why)
//   deferred     the message is tried again later              id, attempt, next, reply, rcpts,
//                                                              rcpt, hop
//   bounced      a DSN went back to the sender                 id, to, rcpts, dsn, delayed
//                (delayed: a delay warning, still being tried)
//   removed      nothing is left to deliver: removed           id, age
//   lease_lost   another process took the message over         id, detail
//   error        the storage failed; tried again at `retry`    id, detail, retry
//
// `delay` and `age` are seconds since the message was received (Postfix's delay=); a
// `hop` says where the reply came from and how the delay was spent (Postfix's relay=,
// delays= and its TLS line).
// A reply or address is as the peer sent it: a renderer escapes it for its medium.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "slimta/clock.h"

namespace slimta {

namespace events {

struct Enqueued {
  std::string id;
  std::string sender;
  size_t rcpts = 0;
  size_t size = 0;  // octets of the message
  // Who sent it, as Postfix logs client=, helo=, sasl_username= and message-id=:
  // empty when unknown (the CLI's enqueue has no client).
  std::string client_ip, helo, auth, message_id;
};
struct NotEnqueued {
  std::string sender;
  std::string error;  // may name hosts, ports and paths: for the log only
  bool retryable = false;
};
struct Attempt {
  std::string id;
  uint32_t attempt = 1;  // 1 for the first
  size_t rcpts = 0;      // recipients attempted now
  double seconds = 0;    // how long the attempt took
};
// The peer that answered for a recipient and the parts of its delay: empty `relay`
// when no connection was made (a destination down, a refusal of our own routing).
struct Hop {
  std::string relay;    // "host[ip]:port"
  std::string tls;      // "TLSv1.3 TLS_AES_256_GCM_SHA384"; "" without TLS
  double queued = 0;    // seconds from receipt to this attempt's start
  double connect = 0;   // setting up the connection (0 on a kept one but its RSET)
  double transmit = 0;  // MAIL FROM to the final reply
};
struct Delivered {
  std::string id;
  std::string rcpt;
  uint32_t attempt = 1;
  double delay = 0;
  std::string reply;
  Hop hop;
};
struct Failed {
  std::string id;
  std::string rcpt;
  uint32_t attempt = 1;
  double delay = 0;
  std::string reply;
  // Empty for a 5xx that is bounced; else why the queue gave up (expired), or why it
  // is not bounced (QueuePolicy::from_outsider).
  std::string gave_up;
  Hop hop;
};
struct Deferred {
  std::string id;
  uint32_t attempt = 1;  // attempts made so far
  Timestamp next = 0;    // when it is tried again
  std::string reply;     // the first deferring reply
  size_t rcpts = 0;      // recipients deferred by this attempt
  std::string rcpt;      // the first of them (the one `reply` is for)
  Hop hop;               // of that one
};
struct Bounced {
  std::string id;
  std::string to;  // the original sender
  size_t rcpts = 0;
  std::string dsn;  // the bounce's id
  // A delay warning (Action: delayed, QueuePolicy::delay_warning): the message is still
  // being tried; not counted as a bounce.
  bool delayed = false;
};
struct Removed {
  std::string id;
  double age = 0;  // 0 when the time it was received is unknown
};
struct LeaseLost {
  std::string id;
  std::string detail;
};
struct Error {
  std::string id;
  std::string detail;  // may name hosts, ports and paths: for the log only
  Timestamp retry = 0;
};

}  // namespace events

using QueueEvent = std::variant<events::Enqueued, events::NotEnqueued, events::Attempt,
                                events::Delivered, events::Failed, events::Deferred,
                                events::Bounced, events::Removed, events::LeaseLost, events::Error>;

// "enqueued", "delivered", ... (the table above).
const char* event_name(const QueueEvent& event);

// The event as the queue's log line: "ID EVENT key=value ..." with the message id
// first, after the component "queue: " when `component`; quoted values have their
// control characters escaped (a reply cannot forge a log line).
std::string event_text(const QueueEvent& event, bool component = true);

class QueueObserver {
 public:
  virtual ~QueueObserver() = default;
  // Called on the thread where the event happened, possibly several at once: must be
  // thread-safe and quick (no network round trip). Throwing is logged and ignored.
  virtual void on_event(const QueueEvent& event) = 0;
};
using QueueObservers = std::vector<std::shared_ptr<QueueObserver>>;

// Writes each event's event_text() to spdlog's default logger (info; lease_lost
// warn; error and not_enqueued error/warn): the queue's log.
class LogObserver : public QueueObserver {
 public:
  void on_event(const QueueEvent& event) override;
};

// Hands `event` to each of `observers` (skipping nulls).
void notify(const QueueObservers& observers, const QueueEvent& event);

}  // namespace slimta
