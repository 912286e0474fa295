#include "slimta/queue.h"

#include <cmath>

#include "queue/engine.h"
#include "slimta/ascii.h"

namespace slimta {
namespace {

void validate(const QueuePolicy& p) {
  auto bad = [](const std::string& what) { throw InvalidArgument("queue policy: " + what); };
  if (!(p.initial_backoff > 0)) bad("initial_backoff must be more than 0 seconds");
  if (!(p.multiplier >= 1)) bad("multiplier must be at least 1");
  if (!(p.max_backoff >= p.initial_backoff)) bad("max_backoff must be at least initial_backoff");
  if (!(p.max_age > 0)) bad("max_age must be more than 0 seconds");
  if (!(p.bounce_max_age > 0)) bad("bounce_max_age must be more than 0 seconds");
  if (!(p.delay_warning >= 0)) bad("delay_warning must be 0 (none) or more seconds");
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

}  // namespace

std::string Relay::destination(const std::string&) const { return {}; }

namespace {
RecipientResult result(RecipientResult::Kind kind, std::string reply) {
  RecipientResult r;
  r.kind = kind;
  r.reply = std::move(reply);
  return r;
}
}  // namespace

RecipientResult RecipientResult::delivered(std::string reply) {
  return result(Kind::delivered, std::move(reply));
}
RecipientResult RecipientResult::transient(std::string reply) {
  return result(Kind::transient, std::move(reply));
}
RecipientResult RecipientResult::permanent(std::string reply) {
  return result(Kind::permanent, std::move(reply));
}

RecipientResult RecipientResult::refused_here(std::string reply) {
  RecipientResult r = permanent(std::move(reply));
  r.local = true;
  return r;
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

namespace engine {

EnqueueResult write_message(QueueStorage& storage, const Envelope& envelope, Timestamp now,
                            const std::function<void(const QueueEvent&)>& emit) {
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
    emit(events::NotEnqueued{envelope.sender, out.error, out.retryable});
    return out;
  }
  const auto& c = envelope.client;
  emit(events::Enqueued{out.id, envelope.sender, envelope.recipients.size(),
                        envelope.message_size(), c.ip, c.name, c.auth,
                        envelope.headers.get("Message-ID").value_or("").substr(0, 256)});
  return out;
}

}  // namespace engine

EnqueueResult store_message(QueueStorage& storage, const Envelope& envelope, Timestamp now,
                            const QueueObservers& observers) {
  return engine::write_message(storage, envelope, now,
                               [&](const QueueEvent& event) { notify(observers, event); });
}

EnqueueResult store_message(QueueStorage& storage, const Envelope& envelope, Timestamp now) {
  return store_message(storage, envelope, now, {std::make_shared<LogObserver>()});
}

struct Queue::Impl : engine::Engine {
  using Engine::Engine;
};

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
  if (r.ok()) impl_->schedule(r.id, impl_->clock.now(), impl_->first_destination(envelope));
  return r;
}

EnqueueResult Queue::enqueue(Envelope&& envelope) {
  EnqueueResult r = impl_->store(envelope);
  std::string line = impl_->first_destination(envelope);
  { Envelope stored = std::move(envelope); }  // freed before it is due
  if (r.ok()) impl_->schedule(r.id, impl_->clock.now(), std::move(line));
  return r;
}

size_t Queue::load() { return impl_->load(); }

void Queue::schedule(const QueueEntry& entry) { impl_->schedule(entry.id, entry.timestamp); }

size_t Queue::run_pending() { return impl_->run_pending(); }

std::optional<Timestamp> Queue::next_due() const { return impl_->next_due(); }

size_t Queue::scheduled() const { return impl_->scheduled(); }

void Queue::start() { impl_->start(); }

void Queue::stop() { impl_->stop(); }

Counters Queue::pending_counters() const { return impl_->pending_counters(); }

void Queue::flush_counters() { impl_->flush_counters(); }

}  // namespace slimta
