// One claim-and-attempt of a message: claimed, read, its recipients attempted at their
// destinations as shaping allows, the results sorted, and the outcome stored (marked,
// bounced, removed or deferred), all under the claim's Fence.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <span>

#include "queue/engine.h"
#include "queue/recipient_groups.h"

namespace slimta::engine {

// What one attempt's results come to.
struct Outcome {
  std::vector<size_t> original;  // the recipients' indexes in the stored message
  uint32_t attempt = 1;
  std::vector<RecipientResult> results;  // one per recipient
  std::vector<char> waiting;             // left out: their destination has no slot now
  std::string wait_line;                 // the first destination waited for
  Timestamp started = 0;                 // when the attempt began
  Timestamp after = 0;                   // when the results were in
  // A destination found down (deferred without a connection): the first such, and the
  // soonest its down time ends (seconds from now); down_retry < 0: none.
  std::string down_line;
  double down_retry = -1;

  std::vector<size_t> done;                // original indexes: delivered or failed for good
  std::vector<size_t> delivered;           // original indexes: delivered now
  std::vector<bounce::Failure> failed;     // to bounce
  std::vector<RecipientFailure> failures;  // of done, those that failed (stored)
  std::vector<size_t> retry;               // indexes into the envelope's recipients
  // The pending recipients' stored replies, ascending: the message read for this attempt.
  std::span<const RecipientReply> earlier;
};

namespace {

// Seconds since the message was received (Postfix's delay=).
double age_of(const Envelope& env, Timestamp now) {
  return env.timestamp > 0 ? std::max(0.0, now - env.timestamp) : 0.0;
}

// The reply of each recipient still pending after the attempt: this attempt's for
// those deferred now, the stored one for those left waiting for their destination.
std::vector<RecipientReply> pending_replies(const Outcome& out) {
  std::vector<RecipientReply> replies;
  for (size_t i : out.retry) replies.push_back({out.original[i], out.results[i].reply});
  for (size_t i = 0; i < out.waiting.size(); ++i) {
    if (!out.waiting[i]) continue;
    auto e =
        std::lower_bound(out.earlier.begin(), out.earlier.end(), out.original[i],
                         [](const RecipientReply& r, size_t index) { return r.index < index; });
    if (e != out.earlier.end() && e->index == out.original[i]) replies.push_back(*e);
  }
  return replies;
}

// Where recipient `i`'s result came from, and how its delay was spent.
events::Hop hop_of(const Envelope& env, const Outcome& out, size_t i) {
  const RecipientResult& r = out.results[i];
  return {r.relay, r.tls, age_of(env, out.started), r.connect_seconds, r.transmit_seconds};
}

// The recipients of `env` by destination, in order of first appearance.
std::vector<std::pair<std::string, std::vector<size_t>>> by_destination(
    const Envelope& env, const std::function<std::string(const std::string&)>& destination_of) {
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
  return groups;
}

}  // namespace

std::string Engine::destination_of(const std::string& recipient) const {
  return policy.shaping.enabled ? relay_.destination(recipient) : std::string();
}

size_t Engine::max_connections(const std::string& destination) const {
  if (!policy.shaping.enabled) return SIZE_MAX;
  return std::min(policy.shaping.limits(destination).max_connections,
                  ShapingPolicy::worker_cap(policy.workers));
}

std::string Engine::first_destination(const Envelope& env) const {
  return env.recipients.empty() ? std::string() : destination_of(env.recipients.front());
}

Next Engine::run(const Job& job) {
  if (job.classify) return classify(job.id);
  Next next = process(job.id, job.line ? &*job.line : nullptr);
  if (next.kind == Next::Kind::at && !next.line) next.line = job.line;
  return next;
}

// Reads `id` to learn the destination it waits for.
Next Engine::classify(const std::string& id) {
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

// Claims `id` (or resumes a claim an earlier attempt could not give back). Returns the
// claim's Fence, or nullopt with what to do instead in `next`.
std::optional<Fence> Engine::claim(const std::string& id, Timestamp now,
                                   std::optional<Next>& next) {
  ClaimResult claim;
  std::optional<Fence> held;
  {
    std::lock_guard lock(mu);
    if (auto it = unreleased_.find(id); it != unreleased_.end()) {
      held = it->second;
      unreleased_.erase(it);
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
    next = Next::done();  // gone: delivered by another process, or removed
    return std::nullopt;
  } catch (const QueueError& e) {
    if (held) {
      std::lock_guard lock(mu);
      unreleased_.emplace(id, *held);
    }
    emit(events::Error{id, std::string("claiming: ") + e.what(), now + policy.error_retry});
    next = Next::when(now + policy.error_retry);
    return std::nullopt;
  }
  switch (claim.status) {
    case ClaimResult::Status::held:
      spdlog::debug("queue: {} held; looking again in {} s", id, policy.hold_recheck);
      next = Next::when(now + policy.hold_recheck);
      return std::nullopt;
    case ClaimResult::Status::busy: {
      // Another process is on it: look again when its lease runs out (it will have
      // removed or rescheduled the message by then, unless it died).
      thread_local std::mt19937 rng(std::random_device{}());
      next = Next::when(std::max(now, claim.lease.expires) + (rng() % 250) / 1000.0);
      return std::nullopt;
    }
    case ClaimResult::Status::claimed:
      break;
  }
  return Fence{claim.lease.token};
}

// One claim-and-attempt of `id`, holding a place in `line` if not null.
Next Engine::process(const std::string& id, const std::string* line) {
  Timestamp now = clock.now();
  std::optional<Next> instead;
  std::optional<Fence> fence = claim(id, now, instead);
  if (!fence) return *instead;
  {
    std::lock_guard lock(mu);
    schedule_.set_fence(id, *fence);
  }
  try {
    return deliver(id, *fence, now, line);
  } catch (const LeaseLost& e) {
    emit(events::LeaseLost{id, e.what()});
    return Next::done();
  } catch (const KeyError&) {
    spdlog::info("queue: {} removed while being attempted (by an operator?)", id);
    return Next::done();
  } catch (const QueueError& e) {
    Timestamp retry = clock.now() + policy.error_retry;
    emit(events::Error{id, e.what(), retry});
    try {
      storage.release(id, *fence);
    } catch (const LeaseLost&) {
    } catch (const QueueError&) {
      std::lock_guard lock(mu);
      unreleased_.emplace(id, *fence);  // resumed by the retry (else its lease runs out)
    }
    return Next::when(retry);
  }
}

// Stores what an earlier attempt could not (see unsaved_); nullopt when there was
// nothing to store.
std::optional<Next> Engine::store_unsaved(const std::string& id, Fence fence, Timestamp now) {
  Unsaved u;
  {
    std::lock_guard lock(mu);
    auto it = unsaved_.find(id);
    if (it == unsaved_.end()) return std::nullopt;
    u = it->second;
  }
  auto forget = [&] {
    std::lock_guard lock(mu);
    unsaved_.erase(id);
  };
  Next next;
  try {
    next = finish_attempt(id, fence, u.done, u.failed, u.finished, now, u.age,
                          {"(stored after a storage failure)", 0, "", {}, {}});
  } catch (const KeyError&) {  // removed meanwhile (by an operator): nothing left to store
    forget();
    throw;
  }
  forget();
  spdlog::info("queue: {} stored what an earlier attempt could not", id);
  return next;
}

// The end of an attempt: `done` marked, then the message removed or deferred by its
// backoff.
Next Engine::finish_attempt(const std::string& id, Fence fence, const std::vector<size_t>& done,
                            const std::vector<RecipientFailure>& failed, bool finished,
                            Timestamp after, double age, const Deferral& deferral) {
  if (finished) {
    storage.remove(id, fence);
    emit(events::Removed{id, age});
    return Next::done();
  }
  if (!done.empty()) storage.set_recipients_delivered(id, done, fence, failed);
  uint32_t attempts = storage.increment_attempts(id, fence);
  Timestamp next = after + policy.backoff(attempts);
  storage.set_timestamp(id, next, fence, deferral.reply, deferral.replies);
  storage.release(id, fence);
  emit(events::Deferred{id, attempts, next, std::string(deferral.reply), deferral.count,
                        std::string(deferral.rcpt), deferral.hop});
  return Next::when(next);
}

// One destination's share of an attempt: its recipients, and the slot taken there.
struct Part {
  std::string dest;
  std::vector<size_t> indexes;  // of the envelope's recipients
  uint64_t slot = 0;            // 0: none (shaping off)
  bool probe = false;           // the destination was down: this attempt tests it
};

// A place in `dest`'s line (this job's own, when `own`) and a slot there; `placed`
// says whether a place was taken (given back by the caller if not granted).
SlotGrant Engine::take_slot(const std::string& dest, bool own, Timestamp now, bool& placed) {
  placed = own;
  if (!placed) {
    std::lock_guard lock(mu);
    placed = schedule_.enter_line(dest, now);
  }
  SlotGrant grant;
  if (!placed) {
    grant.reason = "this process's connections to it are all in use";
  } else if (!policy.shaping.enabled) {
    grant.status = SlotGrant::Status::granted;  // no limits: no slot
  } else {
    try {
      grant = board_->acquire(dest, policy.shaping.limits(dest), policy.shaping.slot_lease);
    } catch (const QueueError& e) {
      grant.retry_after = policy.error_retry;
      grant.reason = std::string("destination state unavailable: ") + e.what();
      spdlog::error("queue: destination {}: {}", dest, e.what());
    }
  }
  if (grant.granted() && grant.slot) {
    std::lock_guard lock(slots_mu_);
    slots_.emplace(dest, grant.slot);
  }
  return grant;
}

// Delivers one part, gives back its slot (saying whether the destination answered)
// and its place in line (unless the job's own), and puts the results in `out`.
void Engine::attempt_part(const Envelope& env, uint32_t attempt, bool own, const Part& p,
                          Outcome& out) {
  std::vector<RecipientResult> got = deliver_part(
      env, p.indexes,
      "relay error: ", [&](const Envelope& part) { return relay_.attempt(part, attempt); });
  bool reachable = !std::all_of(got.begin(), got.end(), [](const RecipientResult& r) {
    return r.kind == RecipientResult::Kind::transient && r.unreachable;
  });
  try {
    if (p.slot) board_->release(p.dest, p.slot, reachable, got.front().reply, policy.shaping.down);
  } catch (const QueueError& e) {
    spdlog::warn("queue: destination {}: could not give back slot {}: {} (its lease runs out)",
                 p.dest, p.slot, e.what());
  }
  if (p.probe)
    spdlog::info("queue: destination {} probed: {}", p.dest,
                 reachable ? "reachable again" : "still not reachable");
  if (p.slot) {
    std::lock_guard lock(slots_mu_);
    slots_.erase({p.dest, p.slot});
  }
  if (!own) {  // the job's own place is given back as it ends
    {
      std::lock_guard lock(mu);
      schedule_.leave_line(p.dest, clock.now());
    }
    work_cv.notify_one();
  }
  for (size_t k = 0; k < p.indexes.size(); ++k) out.results[p.indexes[k]] = std::move(got[k]);
}

// The recipients of `env` attempted at their destinations as shaping allows, into
// out.results; a recipient whose destination has no slot for it now is left out
// (out.waiting), and out.wait_line names the first such destination. Returns whether
// any recipient was attempted.
bool Engine::attempt_shaped(const Envelope& env, uint32_t attempt, const std::string* line,
                            Outcome& out) {
  auto own = [line](const std::string& dest) { return line && *line == dest; };
  std::vector<Part> parts;
  bool attempted = false;
  for (auto& [dest, indexes] :
       by_destination(env, [this](const std::string& r) { return destination_of(r); })) {
    Timestamp now = clock.now();
    bool placed = false;
    SlotGrant grant = take_slot(dest, own(dest), now, placed);
    if (grant.granted()) {
      parts.push_back({dest, std::move(indexes), grant.slot, grant.probe});
      continue;
    }
    // A line refused a slot is not asked again before retry_after; a destination that
    // is down has its messages deferred instead, each in turn.
    bool down = grant.status == SlotGrant::Status::down;
    Timestamp block = down ? 0 : now + std::max(grant.retry_after, 0.001);
    {
      std::lock_guard lock(mu);
      if (placed && !own(dest)) {
        schedule_.leave_line(dest, clock.now(), block);
      } else {
        schedule_.block_line(dest, block);
      }
    }
    if (down) {  // deferred without a connection while the destination is down
      for (size_t i : indexes)
        out.results[i] = RecipientResult::transient("451 4.4.1 " + grant.reason);
      if (out.down_line.empty()) out.down_line = dest;
      if (out.down_retry < 0 || grant.retry_after < out.down_retry)
        out.down_retry = grant.retry_after;
      continue;
    }
    spdlog::debug("queue: destination {} waits: {}", dest, grant.reason);
    for (size_t i : indexes) out.waiting[i] = 1;
    if (out.wait_line.empty()) out.wait_line = dest;
  }
  // Each part to its destination; up to max_parallel_destinations at once.
  const size_t batch = policy.shaping.max_parallel_destinations;
  for (size_t first = 0; first < parts.size(); first += batch) {
    std::vector<std::function<void()>> tasks;
    for (size_t k = first; k < std::min(parts.size(), first + batch); ++k) {
      tasks.emplace_back([&, &p = parts[k]] { attempt_part(env, attempt, own(p.dest), p, out); });
    }
    parts_.run_all(std::move(tasks));
  }
  return attempted || !parts.empty();
}

// Sorts the results into out's lists, each recipient's result an event; gives up on
// what is retried past the policy's attempts or age.
static void sort_results(Engine& e, const std::string& id, const Envelope& env, Outcome& out) {
  const double age = age_of(env, out.after);
  std::optional<bool> outsider;  // asked once, when a local refusal needs it
  for (size_t i = 0; i < out.results.size(); ++i) {
    if (out.waiting[i]) continue;
    const auto& r = out.results[i];
    switch (r.kind) {
      case RecipientResult::Kind::delivered:
        e.emit(events::Delivered{id, env.recipients[i], out.attempt, age, r.reply,
                                 hop_of(env, out, i)});
        out.done.push_back(out.original[i]);
        out.delivered.push_back(out.original[i]);
        break;
      case RecipientResult::Kind::permanent:
        if (r.local && e.policy.from_outsider && !outsider) outsider = e.policy.from_outsider(env);
        if (r.local && outsider.value_or(false)) {
          e.emit(events::Failed{id, env.recipients[i], out.attempt, age, r.reply,
                                "not bounced: our own routing refused it, and the sender is "
                                "an unauthenticated outsider's",
                                hop_of(env, out, i)});
          out.done.push_back(out.original[i]);
          out.failures.push_back({out.original[i], r.reply, false});
          break;
        }
        e.emit(events::Failed{
            id, env.recipients[i], out.attempt, age, r.reply, {}, hop_of(env, out, i)});
        out.done.push_back(out.original[i]);
        out.failed.push_back({env.recipients[i], r.reply});
        out.failures.push_back({out.original[i], r.reply, !env.sender.empty()});
        break;
      case RecipientResult::Kind::transient:
        out.retry.push_back(i);
        break;
    }
  }
  if (out.retry.empty()) return;
  std::string give_up;
  if (e.policy.max_attempts != 0 && out.attempt >= e.policy.max_attempts) {
    give_up = "after " + std::to_string(out.attempt) + " attempts";
  } else if (env.timestamp > 0 && out.after - env.timestamp >= e.lifetime(env)) {
    give_up = "the message is older than " + std::to_string(e.lifetime(env)) + " s";
  }
  if (give_up.empty()) return;
  for (size_t i : out.retry) {
    e.emit(events::Failed{id, env.recipients[i], out.attempt, age, out.results[i].reply, give_up,
                          hop_of(env, out, i)});
    out.done.push_back(out.original[i]);  // never attempted again, waiting parts or not
    out.failed.push_back({env.recipients[i], out.results[i].reply});
    out.failures.push_back({out.original[i], out.results[i].reply, !env.sender.empty()});
  }
  out.retry.clear();
}

Next Engine::deliver(const std::string& id, Fence fence, Timestamp now, const std::string* line) {
  if (auto stored = store_unsaved(id, fence, now)) return *stored;
  QueuedMessage msg = storage.get(id);
  if (msg.timestamp > now) {
    // Rescheduled since we scheduled it (by another process, or an operator).
    storage.release(id, fence);
    return Next::when(msg.timestamp);
  }
  const Envelope& env = msg.envelope;
  const size_t n = env.recipients.size();
  Outcome out;
  out.original = msg.remaining_indexes();
  out.attempt = msg.attempts + 1;
  out.results.resize(n);
  out.waiting.assign(n, 0);
  out.earlier = msg.deferred;
  out.started = clock.now();
  if (size_t hops = env.headers.count("Received");
      n > 0 && policy.max_hops && hops > policy.max_hops) {
    emit(events::Attempt{id, out.attempt, n, 0});
    out.results.assign(
        n, RecipientResult::refused_here("554 5.4.6 Too many hops (" + std::to_string(hops) +
                                         " Received: headers): a mail loop"));
  } else if (n > 0) {
    auto began = std::chrono::steady_clock::now();
    if (!attempt_shaped(env, out.attempt, line, out)) {
      if (out.wait_line.empty() && out.down_retry >= 0 &&
          (env.timestamp <= 0 || clock.now() - env.timestamp < lifetime(env))) {
        return defer_while_down(id, fence, msg, out);
      }
      // Every destination of it is busy, rate-limited or suspended: it waits for its
      // turn without counting an attempt.
      storage.release(id, fence);
      return Next::wait(out.wait_line.empty() ? out.down_line : out.wait_line);
    }
    emit(events::Attempt{
        id, out.attempt, static_cast<size_t>(std::count(out.waiting.begin(), out.waiting.end(), 0)),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count()});
  }
  out.after = clock.now();
  sort_results(*this, id, env, out);
  return settle(id, fence, env, out);
}

// Every destination of the message is down: nothing was attempted, so no attempt is
// counted (issue 34: after an outage each message was charged one, and pushed out by
// the backoff, for a connection never made). It is due again when the first down time
// ends, with the down reply as its last.
Next Engine::defer_while_down(const std::string& id, Fence fence, const QueuedMessage& msg,
                              const Outcome& out) {
  Timestamp next = clock.now() + std::max(out.down_retry, 1.0);
  const std::string& reply = out.results.front().reply;  // every one is the down reply
  std::vector<RecipientReply> replies;
  for (size_t i : out.original) replies.push_back({i, reply});
  storage.set_timestamp(id, next, fence, reply, replies);
  storage.release(id, fence);
  emit(events::Deferred{id,
                        msg.attempts,
                        next,
                        reply,
                        msg.envelope.recipients.size(),
                        msg.envelope.recipients.front(),
                        {}});
  return Next::when(next, out.down_line);
}

// Stores the outcome: the bounce, the recipients done, then the message removed,
// deferred, or left waiting for its destination's turn.
Next Engine::settle(const std::string& id, Fence fence, const Envelope& env, Outcome& out) {
  const bool any_waiting = !out.wait_line.empty();
  const bool finished = out.retry.empty() && !any_waiting;
  const double age = age_of(env, out.after);
  // From here on the relay's answers must not be lost to a storage failure: what
  // could not be stored is kept (unsaved_) and stored before the next try.
  Unsaved learnt{out.delivered, {}, false, age};
  try {
    // The bounce is stored before the recipients are marked: a crash in between can
    // send a bounce twice, but never lose one.
    if (!out.failed.empty()) send_bounce(env, id, out.failed, out.after);
    if (!out.retry.empty() && delay_warning_due(env, out.attempt, age)) {
      std::vector<bounce::Failure> pending;
      for (size_t i : out.retry) pending.push_back({env.recipients[i], out.results[i].reply});
      send_bounce(env, id, pending, out.after, env.timestamp + lifetime(env));
    }
    learnt = Unsaved{out.done, out.failures, finished, age};
    if (out.retry.empty() && any_waiting) {
      // What was attempted is settled; the rest waits for its destination's turn.
      if (!out.done.empty()) storage.set_recipients_delivered(id, out.done, fence, out.failures);
      storage.release(id, fence);
      return Next::wait(out.wait_line);
    }
    if (finished)
      return finish_attempt(id, fence, out.done, out.failures, true, out.after, age, {});
    const size_t first = out.retry.front();
    Next next = finish_attempt(id, fence, out.done, out.failures, false, out.after, age,
                               {out.results[first].reply, out.retry.size(), env.recipients[first],
                                hop_of(env, out, first), pending_replies(out)});
    if (next.kind == Next::Kind::at) next.line = destination_of(env.recipients[first]);
    return next;
  } catch (const LeaseLost&) {
    throw;  // another process holds it now: its own attempt decides
  } catch (const KeyError&) {
    throw;
  } catch (const QueueError&) {
    if (!learnt.done.empty() || learnt.finished) {
      std::lock_guard lock(mu);
      Unsaved& u = unsaved_[id];
      u.done.insert(u.done.end(), learnt.done.begin(), learnt.done.end());
      u.failed.insert(u.failed.end(), learnt.failed.begin(), learnt.failed.end());
      u.finished |= learnt.finished;
      u.age = learnt.age;
    }
    throw;
  }
}

double Engine::lifetime(const Envelope& env) const {
  return env.sender.empty() ? policy.bounce_max_age : policy.max_age;
}

// The attempt past delay_warning, the one before it (by the retry schedule) not: one
// warning a message, without a stored mark (QueuePolicy::delay_warning).
bool Engine::delay_warning_due(const Envelope& env, uint32_t attempt, double age) const {
  const double w = policy.delay_warning;
  if (w <= 0 || env.sender.empty() || env.timestamp <= 0 || age < w) return false;
  return attempt <= 1 || age - policy.backoff(attempt - 1) < w;
}

void Engine::send_bounce(const Envelope& original, const std::string& id,
                         const std::vector<bounce::Failure>& failures, Timestamp now,
                         std::optional<Timestamp> retry_until) {
  if (original.sender.empty()) {
    spdlog::info("queue: {} not bounced: it has the null sender (a bounce is never bounced)", id);
    return;
  }
  Envelope dsn = bounce::make(original, id, failures, mta_, now, retry_until);
  std::string bounce_id = storage.write(dsn, now);
  emit(events::Bounced{id, original.sender, failures.size(), bounce_id, retry_until.has_value()});
  schedule(bounce_id, clock.now(), first_destination(dsn));
}

}  // namespace slimta::engine
