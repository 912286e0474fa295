// Delivery shaping: limits per destination (the next hop of a delivery: an MX domain,
// a route, the smarthost) and the state behind them, shared by every process on one
// storage so that a limit holds for the cluster, not per node.
//
// A destination has
//   slots      at most max_connections deliveries under way at once; a slot is
//              taken with a lease (renewed while the delivery runs), so a process that
//              dies gives its slots back when their leases run out;
//   a rate     at most max_rate messages per second, evenly spaced (a token bucket
//              of one token: no bursts);
//   a health   consecutive unreachable attempts (no connection, a 421, a broken
//              session) past DownPolicy::after mark it down for
//              DownPolicy::initial seconds, doubling per further failure up to
//              DownPolicy::max: while down it is not attempted; once the interval ends
//              one probe at a time (across all processes) tests it;
//   a suspension  set by an operator (slimta-queue suspend), until a time or resumed.
//
// What "shared" means per storage (Destinations implementation):
//   Redis     all of it, in Lua scripts on the server's clock: exact for the cluster;
//   disk      all of it, in a state file under the spool locked with flock(): exact
//             for the processes of one host (a disk spool is one host's);
//   memory, S3+SQS   per process (S3 has no cheap atomic counter: give each node its
//             share of a cluster-wide limit); S3 has no shared suspension.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/clock.h"

namespace slimta {

struct DestinationLimits {
  size_t max_connections = 20;  // deliveries under way at once; at least 1
  double max_rate = 0;          // messages per second; 0: no limit
  // Messages one connection carries before it is closed; 0: no limit.
  size_t max_messages_per_connection = 0;
  // The relay's connection settings for it; 0: the relay's own.
  std::chrono::milliseconds connect_timeout{0};
  std::chrono::milliseconds idle_timeout{0};
};

// When unreachable attempts mark a destination down, and for how long.
struct DownPolicy {
  uint32_t after = 3;   // consecutive unreachable attempts; 0: never down
  double initial = 60;  // seconds down after the `after`-th
  double max = 1800;    // doubling per further failure, up to this

  // Seconds down after `failures` consecutive unreachable attempts (0: not down).
  double interval(uint32_t failures) const;
};

struct ShapingPolicy {
  // false: no destinations, no limits, no shared state: every due message is attempted
  // as a worker is free, in the order due.
  bool enabled = true;
  DestinationLimits defaults;
  std::map<std::string, DestinationLimits, std::less<>> destinations;  // by lower-case name
  DownPolicy down;
  // How long a slot lasts unless renewed: a dead process's slots come back this late.
  std::chrono::milliseconds slot_lease = std::chrono::seconds(60);
  // Parts of one message (its destinations) attempted at once.
  size_t max_parallel_destinations = 4;

  const DestinationLimits& limits(std::string_view destination) const;

  // The most of one process's `workers` that one destination may hold at once, whatever
  // its max_connections: all but an eighth of them (at least one kept back when there
  // are two or more), so that a destination that never answers (a tarpit holds each
  // connection for the whole connect timeout) cannot take every worker from the others
  // (issue 34: with 20 connections a destination and 16 workers, it took all 16).
  static size_t worker_cap(size_t workers);
};

// Parses "10/s", "600/m", "5/min", "3600/h", "2.5/second": messages per second.
// Throws InvalidArgument naming the text otherwise.
double parse_rate(std::string_view text);

// What acquire() answered.
struct SlotGrant {
  enum class Status { granted, busy, rate, down, suspended };
  Status status = Status::busy;
  uint64_t slot = 0;       // granted: give it back with release()
  bool probe = false;      // granted to test a destination that was down
  double retry_after = 0;  // not granted: seconds until asking again makes sense
  std::string reason;      // not granted: for the log and the deferral, e.g. the down reply
  bool granted() const { return status == Status::granted; }
};

struct DestinationStatus {
  std::string name;
  size_t in_use = 0;        // slots held now
  double rate_tokens = -1;  // tokens left in its bucket; -1: no rate kept
  uint32_t failures = 0;    // consecutive unreachable attempts
  Timestamp down_until = 0;
  Timestamp suspended_until = 0;  // kForever when suspended with no end
  std::string suspend_reason;
  std::string last_reply;
  Timestamp last_attempt = 0;
  static constexpr Timestamp kForever = -1;
  bool suspended(Timestamp now) const {
    return suspended_until == kForever || suspended_until > now;
  }
};

// The state of the destinations, shared as the storage allows (see the top).
// Thread safety: every method may be called from any thread.
class Destinations {
 public:
  virtual ~Destinations() = default;

  // Takes a slot of `destination` when it is not suspended, not down (or this is its
  // one probe), below `limits.max_connections` and within its rate.
  virtual SlotGrant acquire(const std::string& destination, const DestinationLimits& limits,
                            std::chrono::milliseconds lease) = 0;
  // Extends a slot's lease (a long delivery).
  virtual void renew(const std::string& destination, uint64_t slot,
                     std::chrono::milliseconds lease) = 0;
  // Gives the slot back with what the delivery found: `reachable` false when the
  // destination could not be reached (counts toward down), true resets the count.
  // `reply` is kept as its last reply.
  virtual void release(const std::string& destination, uint64_t slot, bool reachable,
                       std::string_view reply, const DownPolicy& down) = 0;

  // An operator's control: `until` a time or DestinationStatus::kForever.
  virtual void suspend(const std::string& destination, Timestamp until,
                       std::string_view reason) = 0;
  // Ends a suspension, and forgets the unreachable attempts (forget_failures()): an
  // operator who resumes a destination wants it tried now.
  virtual void resume(const std::string& destination) = 0;
  // Forgets its consecutive unreachable attempts: no longer down, tried at once (an
  // operator's retry or flush, as Postfix's flush forgets dead destinations). A probe
  // under way ends as it would.
  virtual void forget_failures(const std::string& destination) = 0;
  // Every destination with state (used, suspended or with failures), by name.
  virtual std::vector<DestinationStatus> status() = 0;
};

// Per-process state on `clock` (the engine's tests run it on a ManualClock).
std::shared_ptr<Destinations> local_destinations(const Clock& clock = system_clock());

}  // namespace slimta
