// The engine's schedule (Postfix's qmgr active queue): when each known message is due,
// which ones are taken (being attempted, or waiting in their destination's line), and
// the destinations' lines that shaping serves in turn. Not thread-safe: the engine
// holds its lock around every call.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "slimta/clock.h"
#include "slimta/storage.h"

namespace slimta::engine {

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

// What a worker does next.
struct Job {
  std::string id;
  bool classify = false;  // read it to learn its destination, then line it up
  // Attempt it, with a place of this line (Line::active) taken, if any.
  std::optional<std::string> line;
};

struct ScheduleLimits {
  // Due work comes from the storage's index: only what is due within `horizon`
  // seconds, and at most `max_pending` messages, are kept here (the index keeps the
  // rest); a line keeps at most `max_line_waiting`.
  bool pull = false;
  double horizon = 1;
  size_t max_pending = 400;
  size_t max_line_waiting = 1000;
  // When fewer than this many are due here, the index is asked for more (take()).
  size_t refill_at = 50;
  // Attempts at once per destination (shaping's max_connections; SIZE_MAX: none).
  std::function<size_t(const std::string& destination)> max_connections;
};

class Schedule {
 public:
  explicit Schedule(ScheduleLimits limits) : limits_(std::move(limits)) {}

  // Schedules `id` at `due` (earlier wins), waiting for `line` when known. Returns
  // whether it was scheduled (not already, not taken). With the due index, what is not
  // due within the horizon, or beyond max_pending, is left to the index unless `owed`
  // (this process owes it a retry of its own).
  bool add(const std::string& id, Timestamp due, Timestamp now, std::optional<std::string> line,
           bool owed);
  // The next job by `now`: a due message of a known destination joins its line; the
  // lines are served in turn; else the first due message, to classify. `refill` is set
  // when taking it left refill_at due here (time to ask the index for more).
  std::optional<Job> take(Timestamp now, bool& refill);
  // What a job left: the message rescheduled (as add() would, `owed` alike), in line
  // or done; its place given back.
  void finish(const Job& job, const Next& next, Timestamp now, bool owed);

  // Takes a place in line `name` for an attempt, unless it is full or blocked.
  bool enter_line(const std::string& name, Timestamp now);
  // Gives back a place taken in a line, blocking it until `blocked_until`.
  void leave_line(const std::string& name, Timestamp now, Timestamp blocked_until = 0);
  // Asks nothing of line `name` (if it exists) before `until`.
  void block_line(const std::string& name, Timestamp until);

  // When the schedule or a line next has something to do.
  std::optional<Timestamp> next_due();
  // Scheduled, and waiting in lines.
  size_t size() const;
  // Scheduled (not in lines).
  size_t pending() const { return pending_.size(); }

  // The claim under which a taken message is being attempted.
  void set_fence(const std::string& id, Fence fence) { taken_[id] = fence; }
  std::optional<Fence> fence_of(const std::string& id) const;
  // The taken messages with a claim (those being attempted).
  std::vector<std::pair<std::string, Fence>> claimed() const;

 private:
  // A min-heap of (due, seq, id). pending_ holds the due time of each id's live heap
  // entry; an entry whose time differs is stale and skipped (lazy deletion, so
  // rescheduling earlier is a push).
  struct Item {
    Timestamp due;
    uint64_t seq;
    std::string id;
    bool operator>(const Item& o) const { return due != o.due ? due > o.due : seq > o.seq; }
  };
  // The due time of each scheduled id, and the destination it will wait for when
  // known (enqueued here, read, or attempted): it then joins that line unread.
  struct Pending {
    Timestamp due;
    std::optional<std::string> line;
  };
  // The due messages of a destination in line, the attempts this process has under way
  // there, and until when it refused a slot. A line goes when empty and idle.
  struct Line {
    std::deque<std::string> ids;
    size_t active = 0;
    Timestamp blocked_until = 0;
  };

  const std::string* peek_due(Timestamp now);
  std::optional<std::string> pop_due(Timestamp now, bool& refill);
  void join_line(const std::string& name, std::string id, bool first);

  const ScheduleLimits limits_;
  std::priority_queue<Item, std::vector<Item>, std::greater<>> heap_;
  std::unordered_map<std::string, Pending> pending_;
  // Ids taken from the schedule: being attempted (with their claim's Fence once made),
  // or waiting in their destination's line (token 0).
  std::unordered_map<std::string, Fence> taken_;
  std::map<std::string, Line> lines_;
  std::string last_line_;  // the line served last: the next one is after it
  uint64_t seq_ = 0;
};

}  // namespace slimta::engine
