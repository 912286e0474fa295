#include "slimta/queue.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <queue>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "queue/bounce.h"
#include "queue/recipient_groups.h"
#include "slimta/ascii.h"

namespace slimta {
namespace {

// The events the queue logs and counts; the names are the log's and the counters'.
enum Event : size_t {
  kEnqueued,
  kAttempt,
  kDelivered,  // recipients delivered
  kDeferred,
  kBounced,
  kRemoved,
  kLeaseLost,
  kError,
  kEventCount
};
constexpr std::array<const char*, kEventCount> kEventNames = {
    "enqueued", "attempt", "delivered", "deferred", "bounced", "removed", "lease_lost", "error"};

// "2026-11-22T21:50:44Z"
std::string iso_time(Timestamp t) { return utc_time(t, "%Y-%m-%dT%H:%M:%SZ"); }

void validate(const QueuePolicy& p) {
  auto bad = [](const std::string& what) { throw InvalidArgument("queue policy: " + what); };
  if (!(p.initial_backoff > 0)) bad("initial_backoff must be more than 0 seconds");
  if (!(p.multiplier >= 1)) bad("multiplier must be at least 1");
  if (!(p.max_backoff >= p.initial_backoff)) bad("max_backoff must be at least initial_backoff");
  if (!(p.max_age > 0)) bad("max_age must be more than 0 seconds");
  if (p.lease.count() <= 0) bad("lease must be more than 0 ms");
  if (p.workers == 0) bad("workers must be at least 1");
  if (!(p.hold_recheck > 0)) bad("hold_recheck must be more than 0 seconds");
  if (!(p.error_retry > 0)) bad("error_retry must be more than 0 seconds");
  if (!(p.counters_interval > 0)) bad("counters_interval must be more than 0 seconds");
  if (!(p.rescan_interval >= 0)) bad("rescan_interval must be 0 (never) or more seconds");
  if (!(p.due_poll > 0)) bad("due_poll must be more than 0 seconds");
  if (p.due_batch == 0) bad("due_batch must be at least 1");
  if (p.max_line_waiting == 0) bad("max_line_waiting must be at least 1");
  if (!(p.repair_interval >= 0)) bad("repair_interval must be 0 (never) or more seconds");
  if (p.shaping.slot_lease.count() <= 0) bad("shaping.slot_lease must be more than 0 ms");
  if (p.shaping.max_parallel_destinations == 0)
    bad("shaping.max_parallel_destinations must be at least 1");
  auto check_limits = [&](const std::string& name, const DestinationLimits& l) {
    if (l.max_connections == 0) bad("destination " + name + ": max-connections must be at least 1");
    if (!(l.max_rate >= 0)) bad("destination " + name + ": max-rate must not be negative");
  };
  check_limits("defaults", p.shaping.defaults);
  for (const auto& [name, l] : p.shaping.destinations) check_limits("'" + name + "'", l);
}

// What became of a message after a worker took it.
struct Next {
  enum class Kind { done, at, wait } kind = Kind::done;
  Timestamp at = 0;                 // at: look at it again then
  std::optional<std::string> line;  // wait: the destination whose turn it waits for;
                                    // at: the one it will wait for, when known
  static Next done() { return {}; }
  static Next when(Timestamp t, std::optional<std::string> line = std::nullopt) {
    return {Kind::at, t, std::move(line)};
  }
  static Next wait(std::string line) { return {Kind::wait, 0, std::move(line)}; }
};

}  // namespace

std::string Relay::destination(const std::string&) const { return {}; }

RecipientResult RecipientResult::delivered(std::string reply) {
  return RecipientResult{Kind::delivered, std::move(reply)};
}
RecipientResult RecipientResult::transient(std::string reply) {
  return RecipientResult{Kind::transient, std::move(reply)};
}
RecipientResult RecipientResult::permanent(std::string reply) {
  return RecipientResult{Kind::permanent, std::move(reply)};
}

double QueuePolicy::backoff(uint32_t attempts) const {
  double exponent = attempts == 0 ? 0 : static_cast<double>(attempts - 1);
  return std::min(max_backoff, initial_backoff * std::pow(multiplier, exponent));
}

DeliveryCounters delivery_counters(metrics::Registry& registry) {
  const char* help = "Delivery results by recipient: delivered, deferred or failed";
  return {registry.counter("slimta_deliveries_total", help, {{"result", "delivered"}}),
          registry.counter("slimta_deliveries_total", help, {{"result", "deferred"}}),
          registry.counter("slimta_deliveries_total", help, {{"result", "failed"}}),
          registry.counter("slimta_bounces_total", "Bounces (DSNs) this process queued")};
}

struct Queue::Impl {
  Impl(QueueStorage& s, Relay& r, QueuePolicy p, const Clock& c)
      : storage(s),
        relay(r),
        policy(std::move(p)),
        clock(c),
        mta(policy.reporting_mta.empty() ? host_name() : policy.reporting_mta),
        board(policy.destinations ? policy.destinations : s.destinations()),
        pull(policy.use_due_index && s.capabilities().due_index) {
    if (metrics::Registry* m = policy.metrics) {
      metric.received = &m->counter("slimta_messages_received_total",
                                    "Messages accepted into the queue by this process");
      DeliveryCounters deliveries = delivery_counters(*m);
      metric.delivered = &deliveries.delivered;
      metric.deferred = &deliveries.deferred;
      metric.failed = &deliveries.failed;
      metric.bounces = &deliveries.bounced;
      metric.lease_lost =
          &m->counter("slimta_lease_lost_total", "Attempts whose lease another process took over");
      metric.attempt_seconds = &m->histogram("slimta_delivery_attempt_duration_seconds",
                                             "Time of one delivery attempt of one message",
                                             metrics::duration_buckets(0.001, 600));
      metric.queue_seconds = &m->histogram(
          "slimta_message_queue_time_seconds",
          "Time from a message's acceptance to its last recipient's final result",
          {1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 5 * 86400});
    }
  }

  QueueStorage& storage;
  Relay& relay;
  const QueuePolicy policy;
  const Clock& clock;
  const std::string mta;
  const std::shared_ptr<Destinations> board;
  // Whether due work is pulled from the storage's index (QueuePolicy::use_due_index):
  // then only what is due about now is kept here; the index keeps the rest.
  const bool pull;

  // The schedule: a min-heap of (due, seq, id). `pending` holds the due time of each
  // id's live heap entry; an entry whose time differs is stale and skipped (lazy
  // deletion, so rescheduling earlier is a push). Ids being attempted are in_flight,
  // with the Fence of their claim once it is made (token 0 before), which renewer()
  // keeps alive in start() mode.
  struct Item {
    Timestamp due;
    uint64_t seq;
    std::string id;
    bool operator>(const Item& o) const { return due != o.due ? due > o.due : seq > o.seq; }
  };
  mutable std::mutex mu;
  std::condition_variable work_cv;  // workers: something was scheduled, or stop
  std::condition_variable stop_cv;  // the other threads: stop
  std::condition_variable pull_cv;  // puller(): room for due work, or stop
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap;
  // The due time of each scheduled id, and the destination it will wait for when
  // known (enqueued here, read, or attempted): it then joins that line unread.
  struct Pending {
    Timestamp due;
    std::optional<std::string> line;
  };
  std::unordered_map<std::string, Pending> pending;
  // Ids taken from the schedule: being attempted, or waiting in their destination's
  // line (with no claim, token 0).
  std::unordered_map<std::string, Fence> in_flight;
  // Shaping: the due messages of each destination in line, the attempts this process
  // has under way there, and until when the destination refused a slot (not asked
  // again before). A line goes when empty and idle.
  struct Line {
    std::deque<std::string> ids;
    size_t active = 0;
    Timestamp blocked_until = 0;
  };
  std::map<std::string, Line> lines;
  std::string last_line;  // the line served last: the next one is after it (round robin)
  // Slots held, renewed by renewer(); under their own lock, off the schedule's.
  std::mutex slots_mu;
  std::set<std::pair<std::string, uint64_t>> slots;
  // What an attempt learnt but could not store (the storage failed after the relay
  // answered): recipients delivered or failed for good, by original index, and whether
  // the message is done. Stored before anything else is tried for the message, so a
  // delivered recipient is never attempted again by this process.
  struct Unsaved {
    std::vector<size_t> done;
    bool finished = false;  // nothing left to deliver: remove it
  };
  std::unordered_map<std::string, Unsaved> unsaved;
  // Claims an attempt could not give back (the storage failed): the next attempt resumes
  // them (renew) rather than waiting, claim refused, for their lease to run out.
  std::unordered_map<std::string, Fence> unreleased;
  uint64_t seq = 0;
  size_t idle_workers = 0;  // workers waiting on work_cv
  bool running = false;
  bool stopping = false;
  std::vector<std::thread> threads;

  std::array<std::atomic<int64_t>, kEventCount> counts{};
  // Prometheus instruments (policy.metrics), or null.
  struct {
    metrics::Counter *received = nullptr, *delivered = nullptr, *deferred = nullptr,
                     *failed = nullptr, *bounces = nullptr, *lease_lost = nullptr;
    metrics::Histogram *attempt_seconds = nullptr, *queue_seconds = nullptr;
  } metric;
  // Seconds since the message was received (Postfix's delay=), for the log.
  double delay(const Envelope& env) const {
    return env.timestamp > 0 ? std::max(0.0, clock.now() - env.timestamp) : 0.0;
  }
  static void inc(metrics::Counter* c, uint64_t n = 1) {
    if (c && n) c->inc(n);
  }

  void count(Event e, int64_t n = 1) { counts[e].fetch_add(n, std::memory_order_relaxed); }

  // Returns whether it was scheduled (not already, and not in flight). With the due
  // index, what is not due soon is left to the index (which has it at its time, or at
  // the end of its hand-out), unless this process owes it a retry of its own (unsaved,
  // unreleased); so is what comes beyond a few batches while the workers are behind.
  bool schedule_locked(const std::string& id, Timestamp due,
                       std::optional<std::string> line = std::nullopt) {
    if (in_flight.contains(id)) return false;  // its attempt reschedules it
    if (pull && !unsaved.contains(id) && !unreleased.contains(id) &&
        (due > clock.now() + policy.due_poll || pending.size() >= 4 * policy.due_batch) &&
        !pending.contains(id))
      return false;
    auto [it, inserted] = pending.try_emplace(id, Pending{due, line});
    if (!inserted) {
      if (line && !it->second.line) it->second.line = std::move(line);
      if (it->second.due <= due) return false;
      it->second.due = due;
    }
    heap.push(Item{due, seq++, id});
    return true;
  }

  // schedule_locked() under the lock, then wakes an idle worker, after unlocking (a
  // worker woken while the lock is held would only block on it). Workers also look
  // at the schedule at least once a second, so a wake-up is never needed for
  // correctness, only for latency.
  void schedule(const std::string& id, Timestamp due,
                std::optional<std::string> line = std::nullopt) {
    bool wake;
    {
      std::lock_guard lock(mu);
      wake = schedule_locked(id, due, std::move(line)) && idle_workers > 0;
    }
    if (wake) work_cv.notify_one();
  }

  // A message just stored, due now, for `line`: known, so it is not read to line it up.
  void schedule_new(const std::string& id, std::string line) {
    schedule(id, clock.now(), std::move(line));
  }

  // The id of the first live entry, when it is due by `now`.
  const std::string* peek_due_locked(Timestamp now) {
    while (!heap.empty()) {
      const Item& top = heap.top();
      auto it = pending.find(top.id);
      if (it == pending.end() || it->second.due != top.due) {
        heap.pop();  // stale
        continue;
      }
      return top.due <= now ? &top.id : nullptr;
    }
    return nullptr;
  }
  // The first live entry due by `now`, moved to in_flight.
  std::optional<std::string> pop_due_locked(Timestamp now) {
    const std::string* top = peek_due_locked(now);
    if (!top) return std::nullopt;
    std::string id = *top;
    heap.pop();
    pending.erase(id);
    in_flight.emplace(id, Fence{});
    if (pull && pending.size() == policy.due_batch / 2) pull_cv.notify_one();  // room
    return id;
  }
  // Puts `id` (taken from the schedule) in line `name`, first or last; with the due
  // index, a line already max_line_waiting long leaves it to the index instead.
  void join_line_locked(const std::string& name, std::string id, bool first) {
    Line& line = lines[name];
    if (pull && line.ids.size() >= policy.max_line_waiting) {
      in_flight.erase(id);
      return;
    }
    in_flight[id] = Fence{};  // waiting: nothing to renew
    if (first) {
      line.ids.push_front(std::move(id));
    } else {
      line.ids.push_back(std::move(id));
    }
  }

  // When the schedule or a line next has something to do.
  std::optional<Timestamp> next_due_locked() {
    std::optional<Timestamp> next;
    while (!heap.empty()) {
      auto it = pending.find(heap.top().id);
      if (it != pending.end() && it->second.due == heap.top().due) {
        next = heap.top().due;
        break;
      }
      heap.pop();
    }
    for (const auto& [name, line] : lines) {
      if (line.ids.empty() || line.active >= max_connections(name)) continue;
      if (!next || line.blocked_until < *next) next = line.blocked_until;
    }
    return next;
  }

  // What a worker does next.
  struct Job {
    std::string id;
    bool classify = false;  // read it to learn its destination, then line it up
    // Attempt it, with a place of this line (Line::active) taken, if any.
    std::optional<std::string> line;
  };
  std::optional<Job> take_locked(Timestamp now) {
    // Due messages of a known destination join its line, unread.
    while (const std::string* top = peek_due_locked(now)) {
      auto known = pending.find(*top);
      if (!known->second.line) break;
      std::string line = std::move(*known->second.line);
      join_line_locked(line, *pop_due_locked(now), /*first=*/false);
    }
    // The lines in turn, from the one after the last served.
    for (size_t n = 0, total = lines.size(); n < total; ++n) {
      auto it = lines.upper_bound(last_line);
      if (it == lines.end()) it = lines.begin();
      last_line = it->first;
      Line& line = it->second;
      if (line.ids.empty() && line.active == 0 && line.blocked_until <= now) {
        lines.erase(it);
        continue;
      }
      if (line.ids.empty() || line.blocked_until > now || line.active >= max_connections(it->first))
        continue;
      Job job{line.ids.front(), false, it->first};
      line.ids.pop_front();
      ++line.active;
      return job;
    }
    if (auto id = pop_due_locked(now)) return Job{*id, true, std::nullopt};
    return std::nullopt;
  }

  // Gives back a place taken in a line; the line goes when empty and idle.
  void leave_line_locked(const std::string& name, Timestamp blocked_until = 0) {
    auto it = lines.find(name);
    if (it == lines.end()) return;
    Line& line = it->second;
    if (line.active > 0) --line.active;
    line.blocked_until = std::max(line.blocked_until, blocked_until);
    // A blocked line stays, so that what joins it meanwhile waits too.
    if (line.ids.empty() && line.active == 0 && line.blocked_until <= clock.now()) lines.erase(it);
  }
  // Takes a place in line `name` for an attempt, unless it is full or blocked.
  bool enter_line_locked(const std::string& name, Timestamp now) {
    Line& line = lines[name];
    if (line.blocked_until > now || line.active >= max_connections(name)) {
      return false;
    }
    ++line.active;
    return true;
  }

  // What a job left: the message rescheduled, in line or done, and the job's place in
  // its line given back.
  void finish_locked(const Job& job, const Next& next) {
    const std::string& id = job.id;
    if (job.line) leave_line_locked(*job.line);
    switch (next.kind) {
      case Next::Kind::done:
        in_flight.erase(id);
        break;
      case Next::Kind::at:
        in_flight.erase(id);
        schedule_locked(id, next.at, next.line);
        break;
      case Next::Kind::wait:  // first when the destination's turn comes
        join_line_locked(*next.line, id, /*first=*/true);
        break;
    }
  }
  void finish(const Job& job, const Next& next) {
    std::lock_guard lock(mu);
    finish_locked(job, next);
  }

  // Runs a job: a classification, or one claim-and-attempt.
  Next run(const Job& job);
  // Reads `id` to learn the destination it waits for.
  Next classify(const std::string& id);
  // One claim-and-attempt of `id`, holding a place in `line` if not null.
  Next process(const std::string& id, const std::string* line);
  Next deliver(const std::string& id, Fence fence, Timestamp now, const std::string* line);
  // The recipients of `env` attempted at their destinations as shaping allows, into
  // `results` (one per recipient); a recipient whose destination has no slot for it
  // now is left out (`waiting`), and `wait_line` names the first such destination.
  // Returns whether any recipient was attempted.
  bool attempt_shaped(const Envelope& env, uint32_t attempt, const std::string* line,
                      std::vector<RecipientResult>& results, std::vector<char>& waiting,
                      std::string& wait_line);
  // Stores what an earlier attempt could not (see unsaved), counting that attempt;
  // nullopt when there was nothing to store.
  std::optional<Next> store_unsaved(const std::string& id, Fence fence, Timestamp now);
  // The end of an attempt: `done` marked, the bounce sent, then the message removed or
  // deferred by its backoff.
  Next finish_attempt(const std::string& id, Fence fence, const std::vector<size_t>& done,
                      bool finished, Timestamp after, std::string_view reply);
  void send_bounce(const Envelope& original, const std::string& id,
                   const std::vector<bounce::Failure>& failures, Timestamp now);
  // Writes the envelope to the storage; the caller schedules it when stored.
  EnqueueResult store(const Envelope& envelope);
  // The destination `env` waits for first: that of its first recipient.
  std::string first_destination(const Envelope& env) const {
    return env.recipients.empty() ? std::string() : destination_of(env.recipients.front());
  }
  // Shaping off: one destination without limits.
  std::string destination_of(const std::string& recipient) const {
    return policy.shaping.enabled ? relay.destination(recipient) : std::string();
  }
  size_t max_connections(const std::string& destination) const {
    return policy.shaping.enabled ? policy.shaping.limits(destination).max_connections : SIZE_MAX;
  }

  // Takes due work from the storage's index while there is room for it here.
  // Returns whether it got any.
  bool pull_due();
  void worker();
  void waiter();
  void puller();
  void repairer();
  void housekeeper();
  void renewer();
  void rescanner();
  size_t load();
  void flush_counters();
};

Next Queue::Impl::run(const Job& job) {
  if (job.classify) return classify(job.id);
  Next next = process(job.id, job.line ? &*job.line : nullptr);
  if (next.kind == Next::Kind::at && !next.line) next.line = job.line;
  return next;
}

Next Queue::Impl::classify(const std::string& id) {
  Timestamp now = clock.now();
  try {
    QueuedMessage msg = storage.get(id);
    std::string line = first_destination(msg.envelope);
    if (msg.timestamp > now) return Next::when(msg.timestamp, line);  // deferred meanwhile
    return Next::wait(std::move(line));
  } catch (const KeyError&) {
    return Next::done();  // gone: delivered by another process, or removed
  } catch (const QueueError&) {
    return process(id, nullptr);  // unreadable now: the attempt says what to do
  }
}

Next Queue::Impl::process(const std::string& id, const std::string* line) {
  Timestamp now = clock.now();
  ClaimResult claim;
  std::optional<Fence> held;
  {
    std::lock_guard lock(mu);
    if (auto it = unreleased.find(id); it != unreleased.end()) {
      held = it->second;
      unreleased.erase(it);
    }
  }
  try {
    if (held) {
      try {
        claim = ClaimResult{ClaimResult::Status::claimed, storage.renew(id, *held, policy.lease)};
      } catch (const LeaseLost&) {
        held.reset();  // ran out, or taken: claimed as any other
      }
    }
    if (!held) claim = storage.claim(id, policy.lease);
  } catch (const KeyError&) {
    return Next::done();  // gone: delivered by another process, or removed
  } catch (const QueueError& e) {
    if (held) {
      std::lock_guard lock(mu);
      unreleased.emplace(id, *held);
    }
    count(kError);
    spdlog::error("queue: {} error claiming: {}; retry at {}", id, e.what(),
                  iso_time(now + policy.error_retry));
    return Next::when(now + policy.error_retry);
  }
  switch (claim.status) {
    case ClaimResult::Status::held:
      spdlog::debug("queue: {} held; looking again in {} s", id, policy.hold_recheck);
      return Next::when(now + policy.hold_recheck);
    case ClaimResult::Status::busy: {
      // Another process is on it: look again when its lease runs out (it will have
      // removed or rescheduled the message by then, unless it died).
      thread_local std::mt19937 rng(std::random_device{}());
      return Next::when(std::max(now, claim.lease.expires) + (rng() % 250) / 1000.0);
    }
    case ClaimResult::Status::claimed:
      break;
  }
  Fence fence{claim.lease.token};
  {
    std::lock_guard lock(mu);
    in_flight[id] = fence;
  }
  try {
    return deliver(id, fence, now, line);
  } catch (const LeaseLost& e) {
    count(kLeaseLost);
    inc(metric.lease_lost);
    spdlog::warn("queue: {} lease_lost: {}", id, e.what());
    return Next::done();
  } catch (const KeyError&) {
    spdlog::info("queue: {} removed while being attempted (by an operator?)", id);
    return Next::done();
  } catch (const QueueError& e) {
    count(kError);
    Timestamp retry = clock.now() + policy.error_retry;
    spdlog::error("queue: {} error: {}; retry at {}", id, e.what(), iso_time(retry));
    try {
      storage.release(id, fence);
    } catch (const LeaseLost&) {
    } catch (const QueueError&) {
      std::lock_guard lock(mu);
      unreleased.emplace(id, fence);  // resumed by the retry (else its lease runs out)
    }
    return Next::when(retry);
  }
}

std::optional<Next> Queue::Impl::store_unsaved(const std::string& id, Fence fence, Timestamp now) {
  Unsaved u;
  {
    std::lock_guard lock(mu);
    auto it = unsaved.find(id);
    if (it == unsaved.end()) return std::nullopt;
    u = it->second;
  }
  auto forget = [&] {
    std::lock_guard lock(mu);
    unsaved.erase(id);
  };
  Next next;
  try {
    next = finish_attempt(id, fence, u.done, u.finished, now, "(stored after a storage failure)");
  } catch (const KeyError&) {  // removed meanwhile (by an operator): nothing left to store
    forget();
    throw;
  }
  forget();
  spdlog::info("queue: {} stored what an earlier attempt could not", id);
  return next;
}

Next Queue::Impl::finish_attempt(const std::string& id, Fence fence,
                                 const std::vector<size_t>& done, bool finished, Timestamp after,
                                 std::string_view reply) {
  if (finished) {
    storage.remove(id, fence);
    count(kRemoved);
    spdlog::info("queue: {} removed", id);
    return Next::done();
  }
  if (!done.empty()) storage.set_recipients_delivered(id, done, fence);
  uint32_t attempts = storage.increment_attempts(id, fence);
  Timestamp next = after + policy.backoff(attempts);
  storage.set_timestamp(id, next, fence, reply);
  storage.release(id, fence);
  count(kDeferred);
  if (policy.on_deferral) policy.on_deferral(std::string(reply));
  spdlog::info("queue: {} deferred attempt={} next={} reply=\"{}\"", id, attempts, iso_time(next),
               reply);
  return Next::when(next);
}

bool Queue::Impl::attempt_shaped(const Envelope& env, uint32_t attempt, const std::string* line,
                                 std::vector<RecipientResult>& results, std::vector<char>& waiting,
                                 std::string& wait_line) {
  // The recipients by destination, in order of first appearance.
  std::vector<std::pair<std::string, std::vector<size_t>>> groups;
  for (size_t i = 0; i < env.recipients.size(); ++i) {
    std::string dest = destination_of(env.recipients[i]);
    auto g =
        std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == dest; });
    if (g == groups.end()) {
      groups.emplace_back(std::move(dest), std::vector<size_t>{i});
    } else {
      g->second.push_back(i);
    }
  }
  struct Part {
    const std::string* dest;
    const std::vector<size_t>* indexes;
    uint64_t slot;
    bool probe;
  };
  std::vector<Part> parts;
  bool attempted = false;
  for (const auto& [dest, indexes] : groups) {
    Timestamp now = clock.now();
    // This job's own place in its line counts for that destination; others need one.
    bool placed = line && *line == dest;
    if (!placed) {
      std::lock_guard lock(mu);
      placed = enter_line_locked(dest, now);
    }
    SlotGrant grant;
    if (placed && !policy.shaping.enabled) {
      grant.status = SlotGrant::Status::granted;  // no limits: no slot
    } else if (placed) {
      try {
        grant = board->acquire(dest, policy.shaping.limits(dest), policy.shaping.slot_lease);
      } catch (const QueueError& e) {
        grant.status = SlotGrant::Status::busy;
        grant.retry_after = policy.error_retry;
        grant.reason = std::string("destination state unavailable: ") + e.what();
        spdlog::error("queue: destination {}: {}", dest, e.what());
      }
    } else {
      grant.reason = "this process's connections to it are all in use";
    }
    if (grant.granted()) {
      if (grant.slot) {
        std::lock_guard lock(slots_mu);
        slots.emplace(dest, grant.slot);
      }
      parts.push_back({&dest, &indexes, grant.slot, grant.probe});
      continue;
    }
    // A line refused a slot is not asked again before retry_after; a destination that
    // is down has its messages deferred instead, each in turn.
    Timestamp block =
        grant.status == SlotGrant::Status::down ? 0 : now + std::max(grant.retry_after, 0.001);
    {
      std::lock_guard lock(mu);
      if (placed && !(line && *line == dest)) {
        leave_line_locked(dest, block);
      } else if (auto it = lines.find(dest); it != lines.end()) {
        it->second.blocked_until = std::max(it->second.blocked_until, block);
      }
    }
    if (grant.status == SlotGrant::Status::down) {
      // Deferred without a connection while the destination is down.
      for (size_t i : indexes) results[i] = RecipientResult::transient("451 4.4.1 " + grant.reason);
      attempted = true;
      continue;
    }
    spdlog::debug("queue: destination {} waits: {}", dest, grant.reason);
    for (size_t i : indexes) waiting[i] = 1;
    if (wait_line.empty()) wait_line = dest;
  }
  if (parts.empty()) return attempted;

  // Each part to its destination; up to max_parallel_destinations at once.
  auto deliver = [&](const Part& p) {
    std::vector<RecipientResult> got = deliver_part(
        env, *p.indexes,
        "relay error: ", [&](const Envelope& part) { return relay.attempt(part, attempt); });
    bool reachable = !std::all_of(got.begin(), got.end(), [](const RecipientResult& r) {
      return r.kind == RecipientResult::Kind::transient && r.unreachable;
    });
    try {
      if (p.slot)
        board->release(*p.dest, p.slot, reachable, got.front().reply, policy.shaping.down);
    } catch (const QueueError& e) {
      spdlog::warn("queue: destination {}: could not give back slot {}: {} (its lease runs out)",
                   *p.dest, p.slot, e.what());
    }
    if (p.probe)
      spdlog::info("queue: destination {} probed: {}", *p.dest,
                   reachable ? "reachable again" : "still not reachable");
    if (p.slot) {
      std::lock_guard lock(slots_mu);
      slots.erase({*p.dest, p.slot});
    }
    if (!(line && *line == *p.dest)) {  // the job's own place is given back as it ends
      {
        std::lock_guard lock(mu);
        leave_line_locked(*p.dest);
      }
      work_cv.notify_one();
    }
    for (size_t k = 0; k < p.indexes->size(); ++k) results[(*p.indexes)[k]] = std::move(got[k]);
  };
  const size_t batch = policy.shaping.max_parallel_destinations;
  for (size_t first = 0; first < parts.size(); first += batch) {
    size_t last = std::min(parts.size(), first + batch);
    std::vector<std::future<void>> others;
    for (size_t k = first + 1; k < last; ++k)
      others.push_back(std::async(std::launch::async, deliver, std::cref(parts[k])));
    deliver(parts[first]);
    for (auto& f : others) f.get();
  }
  return true;
}

Next Queue::Impl::deliver(const std::string& id, Fence fence, Timestamp now,
                          const std::string* line) {
  if (auto stored = store_unsaved(id, fence, now)) return *stored;
  QueuedMessage msg = storage.get(id);
  if (msg.timestamp > now) {
    // Rescheduled since we scheduled it (by another process, or an operator).
    storage.release(id, fence);
    return Next::when(msg.timestamp);
  }
  const Envelope& env = msg.envelope;
  std::vector<size_t> original = msg.remaining_indexes();
  uint32_t attempt = msg.attempts + 1;
  std::vector<RecipientResult> results(env.recipients.size());
  std::vector<char> waiting(env.recipients.size(), 0);
  std::string wait_line;
  if (!env.recipients.empty()) {
    if (size_t hops = env.headers.count("Received"); policy.max_hops && hops > policy.max_hops) {
      count(kAttempt);
      results.assign(env.recipients.size(),
                     RecipientResult::permanent("554 5.4.6 Too many hops (" + std::to_string(hops) +
                                                " Received: headers): a mail loop"));
    } else {
      auto began = std::chrono::steady_clock::now();
      if (!attempt_shaped(env, attempt, line, results, waiting, wait_line)) {
        // Every destination of it is busy, rate-limited or suspended: it waits for its
        // turn without counting an attempt.
        storage.release(id, fence);
        return Next::wait(wait_line);
      }
      count(kAttempt);
      spdlog::info("queue: {} attempt n={} rcpts={}", id, attempt,
                   std::count(waiting.begin(), waiting.end(), 0));
      if (metric.attempt_seconds) {
        metric.attempt_seconds->observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
      }
    }
  }

  std::vector<size_t> done;       // original indexes: delivered or failed for good
  std::vector<size_t> delivered;  // original indexes: delivered now
  std::vector<bounce::Failure> failed;
  std::vector<size_t> retry;  // indexes into env.recipients
  for (size_t i = 0; i < results.size(); ++i) {
    if (waiting[i]) continue;
    const auto& r = results[i];
    switch (r.kind) {
      case RecipientResult::Kind::delivered:
        count(kDelivered);
        spdlog::info("queue: {} delivered rcpt=<{}> attempt={} delay={:.1f} reply=\"{}\"", id,
                     env.recipients[i], attempt, delay(env), r.reply);
        done.push_back(original[i]);
        delivered.push_back(original[i]);
        break;
      case RecipientResult::Kind::permanent:
        spdlog::info("queue: {} failed rcpt=<{}> attempt={} delay={:.1f} reply=\"{}\"", id,
                     env.recipients[i], attempt, delay(env), r.reply);
        done.push_back(original[i]);
        failed.push_back({env.recipients[i], r.reply});
        break;
      case RecipientResult::Kind::transient:
        retry.push_back(i);
        break;
    }
  }
  bool any_waiting = !wait_line.empty();

  Timestamp after = clock.now();
  std::string give_up;
  if (!retry.empty()) {
    if (policy.max_attempts != 0 && attempt >= policy.max_attempts) {
      give_up = "after " + std::to_string(attempt) + " attempts";
    } else if (env.timestamp > 0 && after - env.timestamp >= policy.max_age) {
      give_up = "the message is older than " + std::to_string(policy.max_age) + " s";
    }
  }
  if (!give_up.empty()) {
    for (size_t i : retry) {
      spdlog::info("queue: {} failed rcpt=<{}> attempt={} delay={:.1f} gave_up=\"{}\" reply=\"{}\"",
                   id, env.recipients[i], attempt, delay(env), give_up, results[i].reply);
      failed.push_back({env.recipients[i], results[i].reply});
    }
    retry.clear();
  }

  inc(metric.delivered, delivered.size());
  inc(metric.failed, failed.size());
  inc(metric.deferred, retry.size());
  if (retry.empty() && !any_waiting && metric.queue_seconds && env.timestamp > 0)
    metric.queue_seconds->observe(std::max(0.0, after - env.timestamp));

  // From here on the relay's answers must not be lost to a storage failure: what
  // could not be stored is kept (unsaved) and stored before the next try.
  Unsaved learnt{delivered, false};
  try {
    // The bounce is stored before the recipients are marked: a crash in between can
    // send a bounce twice, but never lose one.
    if (!failed.empty()) send_bounce(env, id, failed, after);
    learnt = Unsaved{done, retry.empty() && !any_waiting};
    if (retry.empty() && any_waiting) {
      // What was attempted is settled; the rest waits for its destination's turn.
      if (!done.empty()) storage.set_recipients_delivered(id, done, fence);
      storage.release(id, fence);
      return Next::wait(wait_line);
    }
    Next next = finish_attempt(id, fence, done, retry.empty(), after,
                               retry.empty() ? "" : results[retry.front()].reply);
    if (next.kind == Next::Kind::at) next.line = destination_of(env.recipients[retry.front()]);
    return next;
  } catch (const LeaseLost&) {
    throw;  // another process holds it now: its own attempt decides
  } catch (const KeyError&) {
    throw;
  } catch (const QueueError&) {
    if (!learnt.done.empty() || learnt.finished) {
      std::lock_guard lock(mu);
      Unsaved& u = unsaved[id];
      u.done.insert(u.done.end(), learnt.done.begin(), learnt.done.end());
      u.finished |= learnt.finished;
    }
    throw;
  }
}

void Queue::Impl::send_bounce(const Envelope& original, const std::string& id,
                              const std::vector<bounce::Failure>& failures, Timestamp now) {
  if (original.sender.empty()) {
    spdlog::info("queue: {} not bounced: it has the null sender (a bounce is never bounced)", id);
    return;
  }
  Envelope dsn = bounce::make(original, id, failures, mta, now);
  std::string bounce_id = storage.write(dsn, now);
  count(kBounced);
  inc(metric.bounces);
  spdlog::info("queue: {} bounced to=<{}> rcpts={} dsn={}", id, original.sender, failures.size(),
               bounce_id);
  schedule_new(bounce_id, first_destination(dsn));
}

EnqueueResult store_message(QueueStorage& storage, const Envelope& envelope, Timestamp now) {
  EnqueueResult out;
  try {
    if (envelope.recipients.empty()) throw InvalidArgument("the envelope has no recipients");
    if (envelope.timestamp == 0) {
      Envelope stamped = envelope;
      stamped.timestamp = now;
      out.id = storage.write(stamped, now);
    } else {
      out.id = storage.write(envelope, now);
    }
  } catch (const QueueError& e) {
    out.error = e.what();
    out.retryable = dynamic_cast<const InvalidArgument*>(&e) == nullptr;
    out.storage_full = dynamic_cast<const StorageFull*>(&e) != nullptr;
    spdlog::warn("queue: not enqueued from=<{}>: {}", printable(envelope.sender), e.what());
    return out;
  }
  spdlog::info("queue: {} enqueued from=<{}> rcpts={} size={}", out.id, printable(envelope.sender),
               envelope.recipients.size(), envelope.message_size());
  return out;
}

EnqueueResult Queue::Impl::store(const Envelope& envelope) {
  EnqueueResult out = store_message(storage, envelope, clock.now());
  if (out.ok()) {
    count(kEnqueued);
    inc(metric.received);
  }
  return out;
}

void Queue::Impl::worker() {
  std::unique_lock lock(mu);
  while (!stopping) {
    Timestamp now = clock.now();
    if (auto job = take_locked(now)) {
      lock.unlock();
      Next next = run(*job);
      lock.lock();
      finish_locked(*job, next);  // under the lock the next take needs anyway
      continue;
    }
    auto due = next_due_locked();
    double wait = due ? std::clamp(*due - now, 0.001, 1.0) : 1.0;
    ++idle_workers;
    work_cv.wait_for(lock, std::chrono::duration<double>(wait));
    --idle_workers;
  }
}

void Queue::Impl::waiter() {
  while (true) {
    {
      std::lock_guard lock(mu);
      if (stopping) return;
    }
    try {
      for (const auto& entry : storage.wait(std::chrono::milliseconds(500)))
        schedule(entry.id, entry.timestamp);
    } catch (const QueueError& e) {
      spdlog::error("queue: wait() failed: {}; trying again in 1 s", e.what());
      std::unique_lock lock(mu);
      stop_cv.wait_for(lock, std::chrono::seconds(1), [&] { return stopping; });
    }
  }
}

void Queue::Impl::housekeeper() {
  std::unique_lock lock(mu);
  while (!stopping) {
    stop_cv.wait_for(lock, std::chrono::duration<double>(policy.counters_interval),
                     [&] { return stopping; });
    lock.unlock();
    flush_counters();
    lock.lock();
  }
}

// Renews the lease of every attempt under way every third of policy.lease, so that an
// attempt may last longer than the lease (a slow peer) without another process
// claiming the message meanwhile, while a process that dies still lets its messages
// go within one lease.
void Queue::Impl::renewer() {
  const auto every =
      std::max(std::min(policy.lease, policy.shaping.slot_lease) / 3, std::chrono::milliseconds(1));
  std::unique_lock lock(mu);
  while (!stop_cv.wait_for(lock, every, [&] { return stopping; })) {
    std::vector<std::pair<std::string, Fence>> claimed;
    for (const auto& [id, fence] : in_flight)
      if (fence.token != 0) claimed.emplace_back(id, fence);
    lock.unlock();
    std::vector<std::pair<std::string, uint64_t>> held;
    {
      std::lock_guard slots_lock(slots_mu);
      held.assign(slots.begin(), slots.end());
    }
    for (const auto& [dest, slot] : held) {
      try {
        board->renew(dest, slot, policy.shaping.slot_lease);
      } catch (const QueueError& e) {
        spdlog::warn("queue: destination {} could not renew slot {}: {}", dest, slot, e.what());
      }
    }
    for (const auto& [id, fence] : claimed) {
      try {
        storage.renew(id, fence, policy.lease);
      } catch (const KeyError&) {
        // Removed: its attempt just ended.
      } catch (const QueueError& e) {
        std::lock_guard again(mu);
        auto it = in_flight.find(id);
        if (it != in_flight.end() && it->second.token == fence.token) {  // still under way
          spdlog::warn("queue: {} could not renew its lease: {}", id, e.what());
        }
      }
    }
    lock.lock();
  }
}

bool Queue::Impl::pull_due() {
  size_t room;
  {
    std::lock_guard lock(mu);
    room = policy.due_batch - std::min(policy.due_batch, pending.size());
  }
  if (room == 0) return false;
  std::vector<QueueEntry> got = storage.due(clock.now(), room, policy.lease);
  if (got.empty()) return false;
  std::lock_guard lock(mu);
  for (const auto& e : got) schedule_locked(e.id, e.timestamp);
  if (idle_workers > 0) work_cv.notify_all();
  return true;
}

// Pulls due work: at once while the index has more and there is room, else after
// due_poll (or when the workers have made room).
void Queue::Impl::puller() {
  std::unique_lock lock(mu);
  while (!stopping) {
    lock.unlock();
    double wait = policy.due_poll;
    try {
      if (pull_due()) wait = 0;
    } catch (const QueueError& e) {
      spdlog::error("queue: taking due work failed: {}; trying again in {} s", e.what(),
                    policy.due_poll);
    }
    lock.lock();
    bool room = pending.size() < policy.due_batch / 2 + 1;
    if (wait == 0 && room) continue;
    pull_cv.wait_for(lock, std::chrono::duration<double>(wait == 0 ? policy.due_poll : wait));
  }
}

// Steps through the storage's index repair sweep (QueueStorage::repair_due), one step
// every repair_interval, pass after pass.
void Queue::Impl::repairer() {
  std::string cursor;
  size_t repaired = 0;
  std::unique_lock lock(mu);
  while (!stop_cv.wait_for(lock, std::chrono::duration<double>(policy.repair_interval),
                           [&] { return stopping; })) {
    lock.unlock();
    try {
      repaired += storage.repair_due(cursor);
      if (cursor.empty()) {
        if (repaired > 0)
          spdlog::warn("queue: put {} messages missing from the due index back in it", repaired);
        repaired = 0;
      }
    } catch (const QueueError& e) {
      spdlog::error("queue: repairing the due index failed: {}; trying again in {} s", e.what(),
                    policy.repair_interval);
    }
    lock.lock();
  }
}

// Schedules the whole storage again every rescan_interval: what no notice announced
// to this process (SQS hands each notice to one process only; a process that took one
// may have died) is found this way.
void Queue::Impl::rescanner() {
  std::unique_lock lock(mu);
  while (!stopping) {
    if (stop_cv.wait_for(lock, std::chrono::duration<double>(policy.rescan_interval),
                         [&] { return stopping; }))
      return;
    lock.unlock();
    try {
      load();
    } catch (const QueueError& e) {
      spdlog::error("queue: rescan failed: {}; trying again in {} s", e.what(),
                    policy.rescan_interval);
    }
    lock.lock();
  }
}

void Queue::Impl::flush_counters() {
  Counters delta;
  for (size_t e = 0; e < kEventCount; ++e) {
    int64_t n = counts[e].exchange(0);
    if (n != 0) delta[kEventNames[e]] = n;
  }
  if (delta.empty()) return;
  try {
    storage.add_counters(delta);
  } catch (const QueueError& e) {
    spdlog::warn("queue: could not store event counters ({}); keeping them for the next try",
                 e.what());
    for (size_t e = 0; e < kEventCount; ++e) {
      auto it = delta.find(kEventNames[e]);
      if (it != delta.end()) counts[e].fetch_add(it->second);
    }
  }
}

Queue::Queue(QueueStorage& storage, Relay& relay, QueuePolicy policy, const Clock& clock) {
  validate(policy);
  if (!storage.capabilities().can_lease) {
    throw NotSupported("the queue needs a storage with leases (capabilities().can_lease)");
  }
  impl_ = std::make_unique<Impl>(storage, relay, std::move(policy), clock);
}

Queue::~Queue() { stop(); }

std::vector<EnqueueResult> Queue::enqueue(std::span<const Envelope> envelopes) {
  std::vector<EnqueueResult> out;
  out.reserve(envelopes.size());
  for (const auto& env : envelopes) out.push_back(enqueue(env));
  return out;
}

EnqueueResult Queue::enqueue(const Envelope& envelope) {
  EnqueueResult r = impl_->store(envelope);
  if (r.ok()) impl_->schedule_new(r.id, impl_->first_destination(envelope));
  return r;
}

EnqueueResult Queue::enqueue(Envelope&& envelope) {
  EnqueueResult r = impl_->store(envelope);
  std::string line = impl_->first_destination(envelope);
  { Envelope stored = std::move(envelope); }  // freed before it is due
  if (r.ok()) impl_->schedule_new(r.id, std::move(line));
  return r;
}

size_t Queue::Impl::load() {
  auto stream = storage.load();
  size_t n = 0;
  while (auto entry = stream->next()) {
    schedule(entry->id, entry->timestamp);
    ++n;
  }
  if (stream->corrupt() != 0) {
    spdlog::error("queue: load() found {} corrupt records (set aside; see the log above)",
                  stream->corrupt());
  }
  spdlog::info("queue: loaded {} messages", n);
  return n;
}

size_t Queue::load() { return impl_->load(); }

void Queue::schedule(const QueueEntry& entry) { impl_->schedule(entry.id, entry.timestamp); }

size_t Queue::run_pending() {
  size_t n = 0;
  bool more_due = impl_->pull;  // until the index has nothing more
  while (true) {
    if (more_due) {
      bool low;
      {
        std::lock_guard lock(impl_->mu);
        low = impl_->pending.size() <= impl_->policy.due_batch / 2;
      }
      if (low) more_due = impl_->pull_due();
    }
    std::optional<Impl::Job> job;
    {
      std::lock_guard lock(impl_->mu);
      job = impl_->take_locked(impl_->clock.now());
    }
    if (!job) return n;
    impl_->finish(*job, impl_->run(*job));
    n += !job->classify;
  }
}

std::optional<Timestamp> Queue::next_due() const {
  std::lock_guard lock(impl_->mu);
  return impl_->next_due_locked();
}

size_t Queue::scheduled() const {
  std::lock_guard lock(impl_->mu);
  size_t n = impl_->pending.size();
  for (const auto& [name, line] : impl_->lines) n += line.ids.size();
  return n;
}

void Queue::start() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->running) return;
    impl_->running = true;
    impl_->stopping = false;
  }
  const QueuePolicy& policy = impl_->policy;
  // Said once: an operator wants to know which way this process works (doc/queue.md).
  if (impl_->pull) {
    spdlog::info("queue: pulling due work from the storage's due-time index every {} s",
                 policy.due_poll);
  } else {
    spdlog::info(
        "queue: keeping the whole schedule in memory ({}), rescanned every {} s",
        impl_->storage.capabilities().due_index ? "asked for" : "the storage has no due-time index",
        policy.rescan_interval);
  }
  if (!impl_->pull) load();
  for (size_t i = 0; i < policy.workers; ++i)
    impl_->threads.emplace_back([this] { impl_->worker(); });
  if (impl_->pull) {
    // The index hands out whatever is due, written by whichever process: no notices
    // needed, and nothing to rescan.
    impl_->threads.emplace_back([this] { impl_->puller(); });
    if (policy.repair_interval > 0) impl_->threads.emplace_back([this] { impl_->repairer(); });
  } else {
    if (impl_->storage.capabilities().can_wait)
      impl_->threads.emplace_back([this] { impl_->waiter(); });
    if (policy.rescan_interval > 0) impl_->threads.emplace_back([this] { impl_->rescanner(); });
  }
  impl_->threads.emplace_back([this] { impl_->housekeeper(); });
  impl_->threads.emplace_back([this] { impl_->renewer(); });
}

void Queue::stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->running) return;
    impl_->stopping = true;
  }
  impl_->work_cv.notify_all();
  impl_->stop_cv.notify_all();
  impl_->pull_cv.notify_all();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  impl_->flush_counters();
  std::lock_guard lock(impl_->mu);
  impl_->running = false;
}

Counters Queue::pending_counters() const {
  Counters out;
  for (size_t e = 0; e < kEventCount; ++e) {
    int64_t n = impl_->counts[e].load();
    if (n != 0) out[kEventNames[e]] = n;
  }
  return out;
}

void Queue::flush_counters() { impl_->flush_counters(); }

}  // namespace slimta
