#include "disk/workload.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>

#include <gtest/gtest.h>

#include "slimta/errors.h"
#include "support/test_util.h"

namespace slimta::testing {
namespace {

std::string describe(const Outcome& s) {
  if (!s) return "not stored";
  std::string out = "timestamp " + std::to_string(s->timestamp) + ", attempts " +
                    std::to_string(s->attempts) + ", delivered {";
  for (size_t i : s->delivered) out += " " + std::to_string(i);
  out += " }";
  if (s->hold) out += ", held (" + s->hold->reason + ")";
  return out;
}

// What get() returned, as a State of the message written as `envelope`.
State observed(const QueuedMessage& q, const Envelope& envelope) {
  State s;
  s.envelope = envelope;  // checked by same_content(): q.envelope is it minus the delivered
  s.timestamp = q.timestamp;
  s.attempts = q.attempts;
  s.delivered = {q.delivered.begin(), q.delivered.end()};
  s.hold = q.hold;
  return s;
}

bool same_content(const QueuedMessage& q, const Envelope& written) {
  Envelope expect = written;
  expect.recipients.clear();
  std::set<size_t> delivered(q.delivered.begin(), q.delivered.end());
  for (size_t i = 0; i < written.recipients.size(); ++i)
    if (!delivered.count(i)) expect.recipients.push_back(written.recipients[i]);
  return q.envelope == expect && q.original_recipients == written.recipients.size();
}

// An Outcome in a journal line: "-" (not stored), or "TIMESTAMP ATTEMPTS DELIVERED
// HOLD_SINCE HOLD_REASON" with DELIVERED "i,j,..." and "-" for none. Hold reasons have
// no spaces (the workload makes them).
std::string format_outcome(const Outcome& s) {
  if (!s) return "-";
  std::string delivered;
  for (size_t i : s->delivered) delivered += (delivered.empty() ? "" : ",") + std::to_string(i);
  char ts[64];
  std::snprintf(ts, sizeof ts, "%.17g", s->timestamp);
  std::string out = std::string(ts) + " " + std::to_string(s->attempts) + " " +
                    (delivered.empty() ? "-" : delivered);
  if (!s->hold) return out + " - -";
  std::snprintf(ts, sizeof ts, "%.17g", s->hold->since);
  return out + " " + ts + " " + s->hold->reason;
}

Outcome parse_outcome(std::istream& in, const Envelope& envelope) {
  std::string first;
  in >> first;
  if (first == "-") return std::nullopt;
  State s;
  s.envelope = envelope;
  s.timestamp = std::stod(first);
  std::string delivered, since, reason;
  in >> s.attempts >> delivered >> since >> reason;
  std::istringstream list(delivered == "-" ? "" : delivered);
  for (std::string i; std::getline(list, i, ',');) s.delivered.insert(std::stoul(i));
  if (since != "-") s.hold = Hold{std::stod(since), reason};
  return s;
}

}  // namespace

Envelope Written::envelope() const { return sample_envelope(recipients, size, seed); }

void LineJournal::line(const std::string& text) {
  std::string l = text + "\n";
  if (::write(fd_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) ::_exit(3);
}

void LineJournal::writing(const Written& w) {
  char ts[64];
  std::snprintf(ts, sizeof ts, "%.17g", w.timestamp);
  line("w " + std::to_string(w.recipients) + " " + std::to_string(w.size) + " " +
       std::to_string(w.seed) + " " + ts);
}
void LineJournal::written(const std::string& id) { line("W " + id); }
void LineJournal::changing(const std::string& id, const Outcome& next) {
  line("c " + id + " " + format_outcome(next));
}
void LineJournal::changed(const std::string& id) { line("C " + id); }

void Worker::replay(const std::string& lines) {
  std::istringstream in(lines);
  Written writing;
  bool is_writing = false;  // a "w" line not yet followed by its "W"
  for (std::string text; std::getline(in, text);) {
    std::istringstream l(text);
    std::string op, id;
    l >> op;
    if (op == "w") {
      l >> writing.recipients >> writing.size >> writing.seed >> writing.timestamp;
      is_writing = true;
      continue;
    }
    l >> id;
    if (op == "W" && is_writing) {
      Envelope env = writing.envelope();
      messages[id] = Tracked{env, State{env, writing.timestamp, 0, {}, std::nullopt}, {}};
      is_writing = false;
    } else if (op == "c") {
      Tracked& t = messages.at(id);
      t.pending = parse_outcome(l, t.envelope);
    } else if (op == "C") {
      Tracked& t = messages.at(id);
      t.acked = *t.pending;
      t.pending.reset();
    }
  }
  if (is_writing) maybe_written.push_back(writing.envelope());
}

void Worker::run(DiskStorage& storage, int ops, const std::function<bool()>& failure_expected,
                 Journal* journal) {
  std::mt19937 rng(seed);
  try {
    for (int i = 0; i < ops; ++i) step(storage, rng, i, journal);
  } catch (const QueueError& e) {
    if (!failure_expected()) ADD_FAILURE() << "failed with the power on: " << e.what();
  }
}

std::vector<std::string> Worker::live() const {
  std::vector<std::string> out;
  for (const auto& [id, t] : messages)
    if (t.acked) out.push_back(id);
  return out;
}

void Worker::step(DiskStorage& storage, std::mt19937& rng, int i, Journal* journal) {
  auto apply = [&](const std::string& id, auto change, auto call) {
    apply_change(id, change, call, journal);
  };
  auto ids = live();
  unsigned pick = rng() % 100;
  if (ids.empty() || pick < 30) {
    Written w;
    w.size = rng() % 10 == 0 ? 1 + rng() % (200 << 10) : 50 + rng() % 4000;
    w.recipients = 1 + rng() % 3;
    w.seed = seed * 7919 + i;
    w.timestamp = 1000 + rng() % 1000;
    Envelope env = w.envelope();
    if (journal) journal->writing(w);
    maybe_written.push_back(env);
    std::string id = storage.write(env, w.timestamp);
    maybe_written.pop_back();
    messages[id] = Tracked{env, State{env, w.timestamp, 0, {}, std::nullopt}, std::nullopt};
    if (journal) journal->written(id);
    return;
  }
  const std::string id = ids[rng() % ids.size()];
  const State& now = *messages[id].acked;
  if (pick < 40) {
    Timestamp ts = 2000 + rng() % 1000;
    apply(
        id, [&](Outcome& s) { s->timestamp = ts; }, [&] { storage.set_timestamp(id, ts); });
  } else if (pick < 50) {
    uint32_t want = now.attempts + 1;
    apply(
        id, [&](Outcome& s) { s->attempts = want; },
        [&] { EXPECT_EQ(storage.increment_attempts(id), want); });
  } else if (pick < 58) {
    size_t r = rng() % now.envelope.recipients.size();
    apply(
        id, [&](Outcome& s) { s->delivered.insert(r); },
        [&] { storage.set_recipients_delivered(id, std::vector<size_t>{r}); });
  } else if (pick < 64) {
    Hold h{static_cast<Timestamp>(3000 + rng() % 100), "held-" + std::to_string(i)};
    apply(
        id, [&](Outcome& s) { s->hold = h; }, [&] { storage.hold(id, h.reason, h.since); });
  } else if (pick < 68) {
    apply(
        id, [](Outcome& s) { s->hold.reset(); }, [&] { storage.release_hold(id); });
  } else if (pick < 85) {  // a delivery attempt under a lease
    ClaimResult c = storage.claim(id, std::chrono::seconds(60));
    if (c.status != ClaimResult::Status::claimed) return;
    Fence fence{c.lease.token};
    Timestamp ts = 4000 + rng() % 1000;
    apply(
        id, [&](Outcome& s) { s->attempts++; }, [&] { storage.increment_attempts(id, fence); });
    storage.renew(id, fence, std::chrono::seconds(60));
    if (rng() % 2) {
      apply(
          id, [&](Outcome& s) { s->timestamp = ts; },
          [&] { storage.set_timestamp(id, ts, fence); });
      storage.release(id, fence);
    } else {
      apply(
          id, [](Outcome& s) { s.reset(); }, [&] { storage.remove(id, fence); });
    }
  } else if (pick < 95) {
    apply(
        id, [](Outcome& s) { s.reset(); }, [&] { storage.remove(id); });
  } else {
    storage.add_counters({{"attempts", 1}});  // statistics: not durable, never fatal
  }
}

void check_after_restore(DiskStorage& storage, std::vector<Worker>& workers,
                         const std::string& context) {
  std::set<std::string> listed;
  auto stream = storage.load();
  while (auto e = stream->next()) listed.insert(e->id);
  for (Worker& w : workers) {
    for (auto it = w.messages.begin(); it != w.messages.end();) {
      const std::string& id = it->first;
      Tracked& t = it->second;
      Outcome actual;
      if (listed.count(id)) {
        QueuedMessage q = storage.get(id);
        EXPECT_TRUE(same_content(q, t.envelope)) << context << ": " << id << " changed its content";
        actual = observed(q, t.envelope);
      } else {
        EXPECT_THROW(storage.get(id), KeyError) << context << ": " << id;
      }
      bool allowed = actual == t.acked || (t.pending && actual == *t.pending);
      EXPECT_TRUE(allowed) << context << ": message " << id << " is " << describe(actual)
                           << "; acknowledged as " << describe(t.acked)
                           << (t.pending ? "; in flight: " + describe(*t.pending) : "");
      listed.erase(id);
      t.acked = actual;
      t.pending.reset();
      it = actual ? std::next(it) : w.messages.erase(it);
    }
  }
  // Whatever else is stored must be a write that was cut short, whole and unchanged.
  for (const std::string& id : listed) {
    QueuedMessage q = storage.get(id);
    bool found = false;
    for (Worker& w : workers) {
      auto e = std::find(w.maybe_written.begin(), w.maybe_written.end(), q.envelope);
      if (found || e == w.maybe_written.end() || q.attempts != 0 || !q.delivered.empty() ||
          q.hold) {
        continue;
      }
      w.messages[id] = Tracked{*e, State{*e, q.timestamp, 0, {}, std::nullopt}, std::nullopt};
      w.maybe_written.erase(e);
      found = true;
    }
    EXPECT_TRUE(found) << context << ": message " << id << " was never written";
  }
  for (Worker& w : workers) w.maybe_written.clear();
  EXPECT_NO_THROW(storage.counters()) << context;
}

}  // namespace slimta::testing
