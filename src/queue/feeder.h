// Where the engine's due work comes from, one feeder per mode (QueuePolicy::use_due_index):
//   DueIndexFeeder  the storage's due-time index hands out what is due (puller), and a
//                   sweep puts back what is missing from it (repairer);
//   ScheduleFeeder  the whole schedule is held here: load() at start, what wait()
//                   reports as it comes (waiter), and a rescan every rescan_interval.
#pragma once

#include <memory>

namespace slimta::engine {

class Engine;

class Feeder {
 public:
  virtual ~Feeder() = default;
  // Says which way this process works, loads what it must, and starts its threads
  // (into Engine::threads; they end once Engine::stopping).
  virtual void start(Engine& engine) = 0;
  // For run_pending(): takes what the source has due now, if the schedule has room.
  // Returns whether more may be had by asking again.
  virtual bool top_up(Engine& engine) = 0;

  // The feeder for the engine's mode.
  static std::unique_ptr<Feeder> make(bool pull);
};

}  // namespace slimta::engine
