// The engine behind Queue (queue.h), split along its seams as Postfix's qmgr is:
//   schedule.h    when each message is due, and the destinations' lines;
//   feeder.h      where due work comes from: the storage's due index, or the whole
//                 schedule held here (one feeder per mode);
//   attempt.cc    one claim-and-attempt of a message, its recipients at their
//                 destinations (on the PartPool), and the outcome stored;
//   engine.cc     the worker, renewer and counters threads, events and counts.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "queue/bounce.h"
#include "queue/part_pool.h"
#include "queue/schedule.h"
#include "slimta/queue.h"
#include "slimta/queue_events.h"

namespace slimta::engine {

class Feeder;

// The events counted into the storage's shared counters (slimta-queue info), by the
// names there.
enum Counted : size_t {
  kEnqueued,
  kAttempt,
  kDelivered,  // recipients delivered
  kDeferred,
  kBounced,
  kRemoved,
  kLeaseLost,
  kError,
  kCountedCount
};
inline constexpr std::array<const char*, kCountedCount> kCountedNames = {
    "enqueued", "attempt", "delivered", "deferred", "bounced", "removed", "lease_lost", "error"};

// What one attempt's results come to, and one destination's part of it (attempt.cc).
struct Outcome;
struct Part;

// Why a message not finished is deferred: its first deferred recipient, that one's
// reply, where it came from, how many were deferred, and each pending recipient's
// reply (QueueStorage::set_timestamp's `deferred`).
struct Deferral {
  std::string_view reply;
  size_t count = 0;
  std::string_view rcpt;
  events::Hop hop;
  std::vector<RecipientReply> replies;
};

// Writes `envelope` into `storage` due at `now` (its timestamp set to `now` if 0),
// reporting enqueued or not_enqueued to `emit` (queue.cc; store_message() with an
// engine's counting).
EnqueueResult write_message(QueueStorage& storage, const Envelope& envelope, Timestamp now,
                            const std::function<void(const QueueEvent&)>& emit);

class Engine {
 public:
  Engine(QueueStorage& storage, Relay& relay, QueuePolicy policy, const Clock& clock);
  ~Engine();

  // The event to every observer, and counted.
  void emit(const QueueEvent& event);

  // Schedules `id` at `due` (Schedule::add; owed when this process owes it a retry of
  // its own); the first wakes an idle worker, the second is under the lock.
  void schedule(const std::string& id, Timestamp due,
                std::optional<std::string> line = std::nullopt);
  bool schedule_locked(const std::string& id, Timestamp due, std::optional<std::string> line);
  // Writes the envelope to the storage (store_message), counting it.
  EnqueueResult store(const Envelope& envelope);
  // The queue lifetime of `env`: bounce_max_age for a bounce, else max_age.
  double lifetime(const Envelope& env) const;
  // The destination `env` waits for first: that of its first recipient.
  std::string first_destination(const Envelope& env) const;

  // Runs a job: a classification, or one claim-and-attempt.
  Next run(const Job& job);
  // Takes the next job by now, under the lock (the feeder is asked for more when the
  // schedule runs low).
  std::optional<Job> take();
  void finish(const Job& job, const Next& next);

  size_t load();
  void start();
  void stop();
  void flush_counters();
  Counters pending_counters() const;
  size_t run_pending();
  std::optional<Timestamp> next_due();
  size_t scheduled() const;

  QueueStorage& storage;
  const QueuePolicy policy;
  const Clock& clock;

  // Guards the schedule and what is marked "guarded by mu". The engine never calls the
  // storage, the relay or an observer while holding it.
  mutable std::mutex mu;
  std::condition_variable work_cv;  // workers: something was scheduled, or stop
  std::condition_variable stop_cv;  // the other threads: stop
  std::condition_variable feed_cv;  // the feeder: room for due work, or stop
  Schedule schedule_;               // guarded by mu
  bool stopping = false;            // guarded by mu
  size_t idle_workers = 0;          // guarded by mu
  std::vector<std::thread> threads;

 private:
  bool owed_locked(const std::string& id) const;

  // attempt.cc
  Next classify(const std::string& id);
  std::optional<Fence> claim(const std::string& id, Timestamp now, std::optional<Next>& next);
  Next process(const std::string& id, const std::string* line);
  Next deliver(const std::string& id, Fence fence, Timestamp now, const std::string* line);
  bool attempt_shaped(const Envelope& env, uint32_t attempt, const std::string* line, Outcome& out);
  SlotGrant take_slot(const std::string& dest, bool own, Timestamp now, bool& placed);
  void attempt_part(const Envelope& env, uint32_t attempt, bool own, const Part& p, Outcome& out);
  Next settle(const std::string& id, Fence fence, const Envelope& env, Outcome& out);
  Next defer_while_down(const std::string& id, Fence fence, const QueuedMessage& msg,
                        const Outcome& out);
  std::optional<Next> store_unsaved(const std::string& id, Fence fence, Timestamp now);
  Next finish_attempt(const std::string& id, Fence fence, const std::vector<size_t>& done,
                      const std::vector<RecipientFailure>& failed, bool finished, Timestamp after,
                      double age, const Deferral& deferral);
  // A bounce for `failures`; with `retry_until`, a delay warning for them instead.
  void send_bounce(const Envelope& original, const std::string& id,
                   const std::vector<bounce::Failure>& failures, Timestamp now,
                   std::optional<Timestamp> retry_until = std::nullopt);
  bool delay_warning_due(const Envelope& env, uint32_t attempt, double age) const;
  std::string destination_of(const std::string& recipient) const;
  size_t max_connections(const std::string& destination) const;

  // engine.cc
  void worker();
  void housekeeper();
  void renewer();

  Relay& relay_;
  const std::string mta_;
  const std::shared_ptr<Destinations> board_;
  QueueObservers observers_;  // the policy's, then the metrics'
  std::unique_ptr<Feeder> feeder_;
  PartPool parts_;
  std::array<std::atomic<int64_t>, kCountedCount> counts_{};

  // What an attempt learnt but could not store (the storage failed after the relay
  // answered): recipients delivered or failed for good, by original index (and which
  // failed, why), and whether the message is done. Stored before anything else is tried
  // for the message, so a delivered recipient is never attempted again by this
  // process. Guarded by mu.
  struct Unsaved {
    std::vector<size_t> done;
    std::vector<RecipientFailure> failed;
    bool finished = false;  // nothing left to deliver: remove it
    double age = 0;         // of the message then, for the removed event
  };
  std::unordered_map<std::string, Unsaved> unsaved_;
  // Claims an attempt could not give back (the storage failed): the next attempt
  // resumes them (renew) rather than waiting, claim refused, for their lease to run
  // out. Guarded by mu.
  std::unordered_map<std::string, Fence> unreleased_;
  bool running_ = false;  // guarded by mu

  // Destination slots held, renewed by renewer(); under their own lock, off the
  // schedule's.
  std::mutex slots_mu_;
  std::set<std::pair<std::string, uint64_t>> slots_;  // guarded by slots_mu_
};

}  // namespace slimta::engine
