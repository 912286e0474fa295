#include "queue/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/overloaded.h"
#include "queue/feeder.h"

namespace slimta::engine {
namespace {

// QueuePolicy::metrics: the queue's events counted and timed for Prometheus.
class MetricsObserver : public QueueObserver {
 public:
  explicit MetricsObserver(metrics::Registry& m)
      : received_(m.counter("slimta_messages_received_total",
                            "Messages accepted into the queue by this process")),
        deliveries_(delivery_counters(m)),
        lease_lost_(
            m.counter("slimta_lease_lost_total", "Attempts whose lease another process took over")),
        attempt_seconds_(m.histogram("slimta_delivery_attempt_duration_seconds",
                                     "Time of one delivery attempt of one message",
                                     metrics::duration_buckets(0.001, 600))),
        queue_seconds_(m.histogram(
            "slimta_message_queue_time_seconds",
            "Time from a message's acceptance to its last recipient's final result",
            {1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 5 * 86400})) {}

  void on_event(const QueueEvent& event) override {
    std::visit(Overloaded{
                   [&](const events::Enqueued&) { received_.inc(); },
                   [&](const events::Attempt& a) { attempt_seconds_.observe(a.seconds); },
                   [&](const events::Delivered&) { deliveries_.delivered.inc(); },
                   [&](const events::Failed&) { deliveries_.failed.inc(); },
                   [&](const events::Deferred& d) {
                     if (d.rcpts) deliveries_.deferred.inc(d.rcpts);
                   },
                   [&](const events::Bounced& b) {
                     if (!b.delayed) deliveries_.bounced.inc();
                   },
                   [&](const events::Removed& r) {
                     if (r.age > 0) queue_seconds_.observe(r.age);
                   },
                   [&](const events::LeaseLost&) { lease_lost_.inc(); },
                   [](const auto&) {},
               },
               event);
  }

 private:
  metrics::Counter& received_;
  DeliveryCounters deliveries_;
  metrics::Counter& lease_lost_;
  metrics::Histogram& attempt_seconds_;
  metrics::Histogram& queue_seconds_;
};

// The counter an event adds to, if any.
std::optional<Counted> counted_as(const QueueEvent& event) {
  return std::visit(
      Overloaded{
          [](const events::Enqueued&) -> std::optional<Counted> { return kEnqueued; },
          [](const events::Attempt&) -> std::optional<Counted> { return kAttempt; },
          [](const events::Delivered&) -> std::optional<Counted> { return kDelivered; },
          [](const events::Deferred&) -> std::optional<Counted> { return kDeferred; },
          [](const events::Bounced& b) -> std::optional<Counted> {
            return b.delayed ? std::nullopt : std::optional<Counted>(kBounced);
          },
          [](const events::Removed&) -> std::optional<Counted> { return kRemoved; },
          [](const events::LeaseLost&) -> std::optional<Counted> { return kLeaseLost; },
          [](const events::Error&) -> std::optional<Counted> { return kError; },
          [](const auto&) -> std::optional<Counted> { return std::nullopt; },
      },
      event);
}

// Whether due work comes from the storage's index (QueuePolicy::use_due_index).
bool pulls(const QueuePolicy& p, QueueStorage& s) {
  return p.use_due_index && s.capabilities().due_index;
}

ScheduleLimits limits_of(const QueuePolicy& p, bool pull,
                         std::function<size_t(const std::string&)> max_connections) {
  return {pull,
          p.due_poll,
          4 * p.due_batch,
          p.max_line_waiting,
          p.due_batch / 2,
          std::move(max_connections)};
}

}  // namespace

Engine::Engine(QueueStorage& s, Relay& r, QueuePolicy p, const Clock& c)
    : storage(s),
      policy(std::move(p)),
      clock(c),
      schedule_(limits_of(policy, pulls(policy, s),
                          [this](const std::string& d) { return max_connections(d); })),
      relay_(r),
      mta_(policy.reporting_mta.empty() ? host_name() : policy.reporting_mta),
      board_(policy.destinations ? policy.destinations : s.destinations()),
      observers_(policy.log_events ? QueueObservers{std::make_shared<LogObserver>()}
                                   : QueueObservers{}),
      feeder_(Feeder::make(pulls(policy, s))),
      parts_(policy.workers * (policy.shaping.max_parallel_destinations - 1)) {
  observers_.insert(observers_.end(), policy.observers.begin(), policy.observers.end());
  if (policy.metrics) observers_.push_back(std::make_shared<MetricsObserver>(*policy.metrics));
}

Engine::~Engine() = default;

void Engine::emit(const QueueEvent& event) {
  if (auto c = counted_as(event)) counts_[*c].fetch_add(1, std::memory_order_relaxed);
  notify(observers_, event);
}

bool Engine::owed_locked(const std::string& id) const {
  return unsaved_.contains(id) || unreleased_.contains(id);
}

bool Engine::schedule_locked(const std::string& id, Timestamp due,
                             std::optional<std::string> line) {
  return schedule_.add(id, due, clock.now(), std::move(line), owed_locked(id));
}

// Wakes an idle worker after unlocking (a worker woken while the lock is held would
// only block on it). Workers also look at the schedule at least once a second, so a
// wake-up is never needed for correctness, only for latency.
void Engine::schedule(const std::string& id, Timestamp due, std::optional<std::string> line) {
  bool wake;
  {
    std::lock_guard lock(mu);
    wake = schedule_locked(id, due, std::move(line)) && idle_workers > 0;
  }
  if (wake) work_cv.notify_one();
}

EnqueueResult Engine::store(const Envelope& envelope) {
  return write_message(storage, envelope, clock.now(),
                       [this](const QueueEvent& event) { emit(event); });
}

std::optional<Job> Engine::take() {
  bool refill = false;
  std::optional<Job> job;
  {
    std::lock_guard lock(mu);
    job = schedule_.take(clock.now(), refill);
  }
  if (refill) feed_cv.notify_one();
  return job;
}

void Engine::finish(const Job& job, const Next& next) {
  std::lock_guard lock(mu);
  schedule_.finish(job, next, clock.now(), owed_locked(job.id));
}

void Engine::worker() {
  std::unique_lock lock(mu);
  while (!stopping) {
    Timestamp now = clock.now();
    bool refill = false;
    if (auto job = schedule_.take(now, refill)) {
      lock.unlock();
      if (refill) feed_cv.notify_one();
      Next next = run(*job);
      lock.lock();
      schedule_.finish(*job, next, clock.now(), owed_locked(job->id));  // under the lock anyway
      continue;
    }
    auto due = schedule_.next_due();
    double wait = due ? std::clamp(*due - now, 0.001, 1.0) : 1.0;
    ++idle_workers;
    work_cv.wait_for(lock, std::chrono::duration<double>(wait));
    --idle_workers;
  }
}

void Engine::housekeeper() {
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
void Engine::renewer() {
  const auto every =
      std::max(std::min(policy.lease, policy.shaping.slot_lease) / 3, std::chrono::milliseconds(1));
  std::unique_lock lock(mu);
  while (!stop_cv.wait_for(lock, every, [&] { return stopping; })) {
    std::vector<std::pair<std::string, Fence>> claimed = schedule_.claimed();
    lock.unlock();
    std::vector<std::pair<std::string, uint64_t>> held;
    {
      std::lock_guard slots_lock(slots_mu_);
      held.assign(slots_.begin(), slots_.end());
    }
    for (const auto& [dest, slot] : held) {
      try {
        board_->renew(dest, slot, policy.shaping.slot_lease);
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
        auto now = schedule_.fence_of(id);
        if (now && now->token == fence.token)  // still under way
          spdlog::warn("queue: {} could not renew its lease: {}", id, e.what());
      }
    }
    lock.lock();
  }
}

void Engine::flush_counters() {
  Counters delta;
  for (size_t e = 0; e < kCountedCount; ++e) {
    int64_t n = counts_[e].exchange(0);
    if (n != 0) delta[kCountedNames[e]] = n;
  }
  if (delta.empty()) return;
  try {
    storage.add_counters(delta);
  } catch (const QueueError& e) {
    spdlog::warn("queue: could not store event counters ({}); keeping them for the next try",
                 e.what());
    for (size_t e = 0; e < kCountedCount; ++e) {
      auto it = delta.find(kCountedNames[e]);
      if (it != delta.end()) counts_[e].fetch_add(it->second);
    }
  }
}

Counters Engine::pending_counters() const {
  Counters out;
  for (size_t e = 0; e < kCountedCount; ++e) {
    int64_t n = counts_[e].load();
    if (n != 0) out[kCountedNames[e]] = n;
  }
  return out;
}

size_t Engine::load() {
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

size_t Engine::run_pending() {
  size_t n = 0;
  bool more = true;  // until the feeder has nothing more
  while (true) {
    if (more) more = feeder_->top_up(*this);
    std::optional<Job> job = take();
    if (!job) return n;
    finish(*job, run(*job));
    n += !job->classify;
  }
}

std::optional<Timestamp> Engine::next_due() {
  std::lock_guard lock(mu);
  return schedule_.next_due();
}

size_t Engine::scheduled() const {
  std::lock_guard lock(mu);
  return schedule_.size();
}

void Engine::start() {
  {
    std::lock_guard lock(mu);
    if (running_) return;
    running_ = true;
    stopping = false;
  }
  feeder_->start(*this);
  for (size_t i = 0; i < policy.workers; ++i) threads.emplace_back([this] { worker(); });
  threads.emplace_back([this] { housekeeper(); });
  threads.emplace_back([this] { renewer(); });
}

void Engine::stop() {
  {
    std::lock_guard lock(mu);
    if (!running_) return;
    stopping = true;
  }
  work_cv.notify_all();
  stop_cv.notify_all();
  feed_cv.notify_all();
  for (auto& t : threads) t.join();
  threads.clear();
  flush_counters();
  std::lock_guard lock(mu);
  running_ = false;
}

}  // namespace slimta::engine
