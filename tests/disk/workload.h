// The random workload of the disk spool's crash tests, and its checks: shared by the
// power-loss tests (power_loss_test.cc: a simulated power loss under a fault-injecting
// file layer) and the SIGKILL test (crash_test.cc: a real process killed at random).
//
// A Worker runs random writes, metadata updates, holds, leased delivery attempts and
// removals on its own messages, tracking for each what was acknowledged and what call
// was in flight; check_after_restore() then holds a reopened spool to that record.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "slimta/disk_storage.h"

namespace slimta::testing {

// What get() of a message may return, in the terms the workload tracks.
struct State {
  Envelope envelope;  // as written, every recipient
  Timestamp timestamp = 0;
  uint32_t attempts = 0;
  std::set<size_t> delivered;
  std::optional<Hold> hold;
  bool operator==(const State&) const = default;
};
using Outcome = std::optional<State>;  // nullopt: not stored (removed)

struct Tracked {
  Envelope envelope;               // as written
  Outcome acked;                   // as of the last call that returned
  std::optional<Outcome> pending;  // a call was in flight at the cut: it may have landed
};

// A message the workload writes: sample_envelope(recipients, size, seed) at `timestamp`.
struct Written {
  size_t recipients = 1;
  size_t size = 0;
  unsigned seed = 0;
  Timestamp timestamp = 0;
  Envelope envelope() const;
};

// Told of each change before it is made and once it has returned: what a process that
// may be killed at any moment reports to the test that kills it.
class Journal {
 public:
  virtual ~Journal() = default;
  virtual void writing(const Written& w) = 0;
  virtual void written(const std::string& id) = 0;
  virtual void changing(const std::string& id, const Outcome& next) = 0;
  virtual void changed(const std::string& id) = 0;
};

// A Journal as lines on a file descriptor (a pipe to the test), each one write(), so a
// kill never leaves half a line.
class LineJournal : public Journal {
 public:
  explicit LineJournal(int fd) : fd_(fd) {}
  void writing(const Written& w) override;
  void written(const std::string& id) override;
  void changing(const std::string& id, const Outcome& next) override;
  void changed(const std::string& id) override;

 private:
  void line(const std::string& text);
  int fd_;
};

// One thread's (or process's) share of the workload: its own messages, so that the
// outcome of each call is known unless the power went (or the process died) during it.
struct Worker {
  std::map<std::string, Tracked> messages;
  std::vector<Envelope> maybe_written;  // writes cut short: may be stored (not acked)
  unsigned seed = 0;

  // Runs up to `ops` random calls, telling `journal` (if any); stops at the first that
  // fails, which is a test failure unless `failure_expected()` (the power is off).
  void run(DiskStorage& storage, int ops, const std::function<bool()>& failure_expected,
           Journal* journal = nullptr);
  // Applies the lines of a LineJournal, as another process's run() left them.
  void replay(const std::string& lines);

 private:
  std::vector<std::string> live() const;
  // Applies `change` to the acknowledged state of `id` around `call`.
  template <class Change, class Call>
  void apply_change(const std::string& id, Change change, Call call, Journal* journal) {
    Tracked& t = messages[id];
    t.pending = t.acked;
    change(*t.pending);
    if (journal) journal->changing(id, *t.pending);
    call();
    if (journal) journal->changed(id);
    t.acked = std::move(*t.pending);
    t.pending.reset();
  }
  void step(DiskStorage& storage, std::mt19937& rng, int i, Journal* journal);
};

// Checks a spool reopened after a power loss or a kill against every worker's record:
// each acknowledged write is there byte for byte and each acknowledged change (or the
// one in flight), nothing removed is back, anything else stored is a write cut short,
// whole; then takes what is stored as the acknowledged state of the next round.
// `context` names the round in failure messages.
void check_after_restore(DiskStorage& storage, std::vector<Worker>& workers,
                         const std::string& context);

}  // namespace slimta::testing
