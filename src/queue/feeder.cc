#include "queue/feeder.h"

#include <spdlog/spdlog.h>

#include "queue/engine.h"

namespace slimta::engine {
namespace {

// Waits on `cv` for `seconds`, or until the engine stops; returns whether it stops.
template <class Lock>
bool wait_or_stop(Engine& e, std::condition_variable& cv, Lock& lock, double seconds) {
  return cv.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return e.stopping; });
}

class DueIndexFeeder : public Feeder {
 public:
  void start(Engine& e) override {
    spdlog::info("queue: pulling due work from the storage's due-time index every {} s",
                 e.policy.due_poll);
    // The index hands out whatever is due, written by whichever process: no notices
    // needed, and nothing to rescan.
    e.threads.emplace_back([&e] { puller(e); });
    if (e.policy.repair_interval > 0) e.threads.emplace_back([&e] { repairer(e); });
  }

  bool top_up(Engine& e) override {
    {
      std::lock_guard lock(e.mu);
      if (e.schedule_.pending() > e.policy.due_batch / 2) return true;
    }
    return pull_due(e);
  }

 private:
  // Takes due work from the storage's index while there is room for it here. Returns
  // whether it got any.
  static bool pull_due(Engine& e) {
    size_t room;
    {
      std::lock_guard lock(e.mu);
      room = e.policy.due_batch - std::min(e.policy.due_batch, e.schedule_.pending());
    }
    if (room == 0) return false;
    std::vector<QueueEntry> got = e.storage.due(e.clock.now(), room, e.policy.lease);
    if (got.empty()) return false;
    bool idle;
    {
      std::lock_guard lock(e.mu);
      for (const auto& entry : got) e.schedule_locked(entry.id, entry.timestamp, std::nullopt);
      idle = e.idle_workers > 0;
    }
    if (idle) e.work_cv.notify_all();
    return true;
  }

  // Pulls due work: at once while the index has more and there is room, else after
  // due_poll (or when the workers have made room).
  static void puller(Engine& e) {
    std::unique_lock lock(e.mu);
    while (!e.stopping) {
      lock.unlock();
      double wait = e.policy.due_poll;
      try {
        if (pull_due(e)) wait = 0;
      } catch (const QueueError& err) {
        spdlog::error("queue: taking due work failed: {}; trying again in {} s", err.what(),
                      e.policy.due_poll);
      }
      lock.lock();
      bool room = e.schedule_.pending() < e.policy.due_batch / 2 + 1;
      if (wait == 0 && room) continue;
      e.feed_cv.wait_for(lock, std::chrono::duration<double>(e.policy.due_poll));
    }
  }

  // Steps through the storage's index repair sweep (QueueStorage::repair_due), one
  // step every repair_interval, pass after pass.
  static void repairer(Engine& e) {
    std::string cursor;
    size_t repaired = 0;
    std::unique_lock lock(e.mu);
    while (!wait_or_stop(e, e.stop_cv, lock, e.policy.repair_interval)) {
      lock.unlock();
      try {
        repaired += e.storage.repair_due(cursor);
        if (cursor.empty()) {
          if (repaired > 0)
            spdlog::warn("queue: put {} messages missing from the due index back in it", repaired);
          repaired = 0;
        }
      } catch (const QueueError& err) {
        spdlog::error("queue: repairing the due index failed: {}; trying again in {} s", err.what(),
                      e.policy.repair_interval);
      }
      lock.lock();
    }
  }
};

class ScheduleFeeder : public Feeder {
 public:
  void start(Engine& e) override {
    spdlog::info(
        "queue: keeping the whole schedule in memory ({}), rescanned every {} s",
        e.storage.capabilities().due_index ? "asked for" : "the storage has no due-time index",
        e.policy.rescan_interval);
    e.load();
    if (e.storage.capabilities().can_wait) e.threads.emplace_back([&e] { waiter(e); });
    if (e.policy.rescan_interval > 0) e.threads.emplace_back([&e] { rescanner(e); });
  }

  bool top_up(Engine&) override { return false; }  // all of it is here

 private:
  // Schedules what wait() reports: messages written (or deferred) by other processes.
  static void waiter(Engine& e) {
    while (true) {
      {
        std::lock_guard lock(e.mu);
        if (e.stopping) return;
      }
      try {
        for (const auto& entry : e.storage.wait(std::chrono::milliseconds(500)))
          e.schedule(entry.id, entry.timestamp);
      } catch (const QueueError& err) {
        spdlog::error("queue: wait() failed: {}; trying again in 1 s", err.what());
        std::unique_lock lock(e.mu);
        wait_or_stop(e, e.stop_cv, lock, 1);
      }
    }
  }

  // Schedules the whole storage again every rescan_interval: what no notice announced
  // to this process (SQS hands each notice to one process only; a process that took
  // one may have died) is found this way.
  static void rescanner(Engine& e) {
    std::unique_lock lock(e.mu);
    while (!wait_or_stop(e, e.stop_cv, lock, e.policy.rescan_interval)) {
      lock.unlock();
      try {
        e.load();
      } catch (const QueueError& err) {
        spdlog::error("queue: rescan failed: {}; trying again in {} s", err.what(),
                      e.policy.rescan_interval);
      }
      lock.lock();
    }
  }
};

}  // namespace

std::unique_ptr<Feeder> Feeder::make(bool pull) {
  if (pull) return std::make_unique<DueIndexFeeder>();
  return std::make_unique<ScheduleFeeder>();
}

}  // namespace slimta::engine
