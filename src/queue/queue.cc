#include "slimta/queue.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <queue>
#include <random>
#include <thread>
#include <unordered_map>

#include "queue/bounce.h"

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
}

}  // namespace

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
        mta(policy.reporting_mta.empty() ? host_name() : policy.reporting_mta) {
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
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap;
  std::unordered_map<std::string, Timestamp> pending;
  std::unordered_map<std::string, Fence> in_flight;
  // What an attempt learnt but could not store (the storage failed after the relay
  // answered): recipients delivered or failed for good, by original index, and whether
  // the message is done. Stored before anything else is tried for the message, so a
  // delivered recipient is never attempted again by this process.
  struct Unsaved {
    std::vector<size_t> done;
    bool finished = false;  // nothing left to deliver: remove it
  };
  std::unordered_map<std::string, Unsaved> unsaved;
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

  // Returns whether it was scheduled (not already, and not in flight).
  bool schedule_locked(const std::string& id, Timestamp due) {
    if (in_flight.contains(id)) return false;  // its attempt reschedules it
    auto [it, inserted] = pending.try_emplace(id, due);
    if (!inserted) {
      if (it->second <= due) return false;
      it->second = due;
    }
    heap.push(Item{due, seq++, id});
    return true;
  }

  // schedule_locked() under the lock, then wakes an idle worker, after unlocking (a
  // worker woken while the lock is held would only block on it). Workers also look
  // at the schedule at least once a second, so a wake-up is never needed for
  // correctness, only for latency.
  void schedule(const std::string& id, Timestamp due) {
    bool wake;
    {
      std::lock_guard lock(mu);
      wake = schedule_locked(id, due) && idle_workers > 0;
    }
    if (wake) work_cv.notify_one();
  }

  // The first live entry due by `now`, moved to in_flight.
  std::optional<std::string> pop_due_locked(Timestamp now) {
    while (!heap.empty()) {
      const Item& top = heap.top();
      auto it = pending.find(top.id);
      if (it == pending.end() || it->second != top.due) {
        heap.pop();  // stale
        continue;
      }
      if (top.due > now) return std::nullopt;
      std::string id = top.id;
      heap.pop();
      pending.erase(it);
      in_flight.emplace(id, Fence{});
      return id;
    }
    return std::nullopt;
  }

  std::optional<Timestamp> next_due_locked() {
    while (!heap.empty()) {
      auto it = pending.find(heap.top().id);
      if (it != pending.end() && it->second == heap.top().due) return heap.top().due;
      heap.pop();
    }
    return std::nullopt;
  }

  void finish_locked(const std::string& id, std::optional<Timestamp> next) {
    in_flight.erase(id);
    if (next) schedule_locked(id, *next);
  }
  void finish(const std::string& id, std::optional<Timestamp> next) {
    std::lock_guard lock(mu);
    finish_locked(id, next);
  }

  // One claim-and-attempt of `id`. Returns when to look at it again; nullopt when
  // this process is done with it (removed, or another process owns it now).
  std::optional<Timestamp> process(const std::string& id);
  std::optional<Timestamp> deliver(const std::string& id, Fence fence, Timestamp now);
  // Stores what an earlier attempt could not (see unsaved), counting that attempt;
  // nullopt when there was nothing to store.
  std::optional<std::optional<Timestamp>> store_unsaved(const std::string& id, Fence fence,
                                                        Timestamp now);
  // The end of an attempt: `done` marked, the bounce sent, then the message removed or
  // deferred by its backoff.
  std::optional<Timestamp> finish_attempt(const std::string& id, Fence fence,
                                          const std::vector<size_t>& done, bool finished,
                                          Timestamp after, std::string_view reply);
  void send_bounce(const Envelope& original, const std::string& id,
                   const std::vector<bounce::Failure>& failures, Timestamp now);
  // Writes the envelope to the storage; the caller schedules it when stored.
  EnqueueResult store(const Envelope& envelope);

  void worker();
  void waiter();
  void housekeeper();
  void renewer();
  void rescanner();
  size_t load();
  void flush_counters();
};

std::optional<Timestamp> Queue::Impl::process(const std::string& id) {
  Timestamp now = clock.now();
  ClaimResult claim;
  try {
    claim = storage.claim(id, policy.lease);
  } catch (const KeyError&) {
    return std::nullopt;  // gone: delivered by another process, or removed
  } catch (const QueueError& e) {
    count(kError);
    spdlog::error("queue: {} error claiming: {}; retry at {}", id, e.what(),
                  iso_time(now + policy.error_retry));
    return now + policy.error_retry;
  }
  switch (claim.status) {
    case ClaimResult::Status::held:
      spdlog::debug("queue: {} held; looking again in {} s", id, policy.hold_recheck);
      return now + policy.hold_recheck;
    case ClaimResult::Status::busy: {
      // Another process is on it: look again when its lease runs out (it will have
      // removed or rescheduled the message by then, unless it died).
      thread_local std::mt19937 rng(std::random_device{}());
      return std::max(now, claim.lease.expires) + (rng() % 250) / 1000.0;
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
    return deliver(id, fence, now);
  } catch (const LeaseLost& e) {
    count(kLeaseLost);
    inc(metric.lease_lost);
    spdlog::warn("queue: {} lease_lost: {}", id, e.what());
    return std::nullopt;
  } catch (const KeyError&) {
    spdlog::info("queue: {} removed while being attempted (by an operator?)", id);
    return std::nullopt;
  } catch (const QueueError& e) {
    count(kError);
    Timestamp retry = clock.now() + policy.error_retry;
    spdlog::error("queue: {} error: {}; retry at {}", id, e.what(), iso_time(retry));
    try {
      storage.release(id, fence);
    } catch (const QueueError&) {
      // The lease runs out by itself.
    }
    return retry;
  }
}

std::optional<std::optional<Timestamp>> Queue::Impl::store_unsaved(const std::string& id,
                                                                   Fence fence, Timestamp now) {
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
  std::optional<Timestamp> next;
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

std::optional<Timestamp> Queue::Impl::finish_attempt(const std::string& id, Fence fence,
                                                     const std::vector<size_t>& done, bool finished,
                                                     Timestamp after, std::string_view reply) {
  if (finished) {
    storage.remove(id, fence);
    count(kRemoved);
    spdlog::info("queue: {} removed", id);
    return std::nullopt;
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
  return next;
}

std::optional<Timestamp> Queue::Impl::deliver(const std::string& id, Fence fence, Timestamp now) {
  if (auto stored = store_unsaved(id, fence, now)) return *stored;
  QueuedMessage msg = storage.get(id);
  if (msg.timestamp > now) {
    // Rescheduled since we scheduled it (by another process, or an operator).
    storage.release(id, fence);
    return msg.timestamp;
  }
  const Envelope& env = msg.envelope;
  std::vector<size_t> original = msg.remaining_indexes();
  uint32_t attempt = msg.attempts + 1;
  std::vector<RecipientResult> results;
  if (!env.recipients.empty()) {
    count(kAttempt);
    spdlog::info("queue: {} attempt n={} rcpts={}", id, attempt, env.recipients.size());
    try {
      if (size_t hops = env.headers.count("Received"); policy.max_hops && hops > policy.max_hops) {
        results.assign(
            env.recipients.size(),
            RecipientResult::permanent("554 5.4.6 Too many hops (" + std::to_string(hops) +
                                       " Received: headers): a mail loop"));
      } else {
        auto began = std::chrono::steady_clock::now();
        results = relay.attempt(env, attempt);
        if (metric.attempt_seconds) {
          metric.attempt_seconds->observe(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
        }
      }
      if (results.size() != env.recipients.size()) {
        throw std::runtime_error("relay returned " + std::to_string(results.size()) +
                                 " results for " + std::to_string(env.recipients.size()) +
                                 " recipients");
      }
    } catch (const std::exception& e) {
      results.assign(env.recipients.size(),
                     RecipientResult::transient(std::string("451 4.3.0 relay error: ") + e.what()));
    }
  }

  std::vector<size_t> done;  // original indexes: delivered or failed for good
  std::vector<bounce::Failure> failed;
  std::vector<size_t> retry;  // indexes into env.recipients
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    switch (r.kind) {
      case RecipientResult::Kind::delivered:
        count(kDelivered);
        spdlog::info("queue: {} delivered rcpt=<{}> attempt={} delay={:.1f} reply=\"{}\"", id,
                     env.recipients[i], attempt, delay(env), r.reply);
        done.push_back(original[i]);
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

  size_t delivered_now = 0;
  for (const auto& r : results) delivered_now += r.kind == RecipientResult::Kind::delivered;
  inc(metric.delivered, delivered_now);
  inc(metric.failed, failed.size());
  inc(metric.deferred, retry.size());
  if (retry.empty() && metric.queue_seconds && env.timestamp > 0)
    metric.queue_seconds->observe(std::max(0.0, after - env.timestamp));

  // From here on the relay's answers must not be lost to a storage failure: what
  // could not be stored is kept (unsaved) and stored before the next try.
  Unsaved learnt;
  for (size_t i = 0; i < results.size(); ++i)
    if (results[i].kind == RecipientResult::Kind::delivered) learnt.done.push_back(original[i]);
  try {
    // The bounce is stored before the recipients are marked: a crash in between can
    // send a bounce twice, but never lose one.
    if (!failed.empty()) send_bounce(env, id, failed, after);
    learnt = Unsaved{done, retry.empty()};
    return finish_attempt(id, fence, done, retry.empty(), after,
                          retry.empty() ? "" : results[retry.front()].reply);
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
  schedule(bounce_id, now);
}

EnqueueResult Queue::Impl::store(const Envelope& envelope) {
  Timestamp now = clock.now();
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
    spdlog::warn("queue: not enqueued from=<{}>: {}", envelope.sender, e.what());
    return out;
  }
  count(kEnqueued);
  inc(metric.received);
  spdlog::info("queue: {} enqueued from=<{}> rcpts={} size={}", out.id, envelope.sender,
               envelope.recipients.size(), envelope.message_size());
  return out;
}

void Queue::Impl::worker() {
  std::unique_lock lock(mu);
  while (!stopping) {
    Timestamp now = clock.now();
    if (auto id = pop_due_locked(now)) {
      lock.unlock();
      auto next = process(*id);
      lock.lock();
      finish_locked(*id, next);  // under the lock the next pop takes anyway
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
  const auto every = std::max(policy.lease / 3, std::chrono::milliseconds(1));
  std::unique_lock lock(mu);
  while (!stop_cv.wait_for(lock, every, [&] { return stopping; })) {
    std::vector<std::pair<std::string, Fence>> claimed;
    for (const auto& [id, fence] : in_flight)
      if (fence.token != 0) claimed.emplace_back(id, fence);
    lock.unlock();
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
  if (r.ok()) impl_->schedule(r.id, impl_->clock.now());
  return r;
}

EnqueueResult Queue::enqueue(Envelope&& envelope) {
  EnqueueResult r = impl_->store(envelope);
  { Envelope stored = std::move(envelope); }  // freed before it is due
  if (r.ok()) impl_->schedule(r.id, impl_->clock.now());
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
  while (true) {
    std::optional<std::string> id;
    {
      std::lock_guard lock(impl_->mu);
      id = impl_->pop_due_locked(impl_->clock.now());
    }
    if (!id) return n;
    impl_->finish(*id, impl_->process(*id));
    ++n;
  }
}

std::optional<Timestamp> Queue::next_due() const {
  std::lock_guard lock(impl_->mu);
  return impl_->next_due_locked();
}

size_t Queue::scheduled() const {
  std::lock_guard lock(impl_->mu);
  return impl_->pending.size();
}

void Queue::start() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->running) return;
    impl_->running = true;
    impl_->stopping = false;
  }
  load();
  for (size_t i = 0; i < impl_->policy.workers; ++i)
    impl_->threads.emplace_back([this] { impl_->worker(); });
  if (impl_->storage.capabilities().can_wait)
    impl_->threads.emplace_back([this] { impl_->waiter(); });
  impl_->threads.emplace_back([this] { impl_->housekeeper(); });
  impl_->threads.emplace_back([this] { impl_->renewer(); });
  if (impl_->policy.rescan_interval > 0)
    impl_->threads.emplace_back([this] { impl_->rescanner(); });
}

void Queue::stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->running) return;
    impl_->stopping = true;
  }
  impl_->work_cv.notify_all();
  impl_->stop_cv.notify_all();
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
