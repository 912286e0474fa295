// Power loss: DiskStorage on a FaultFileSystem (tests/support/fault_file_system.h),
// which forgets whatever was not synced when the power goes. Random workloads from
// several threads are cut at random points, over many seeds; after each restore and
// reopen, every write and metadata change that returned is there byte for byte,
// nothing removed comes back, and nothing torn is served. doc/format.md ("Durability")
// lists which sync each test here guards.
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "slimta/disk_storage.h"
#include "slimta/errors.h"
#include "support/fault_file_system.h"
#include "support/test_util.h"

namespace slimta {
namespace {

namespace fs = std::filesystem;
using testing::FaultFileSystem;
using Op = FaultFileSystem::Op;

// What get() of a message may return, in the terms the test tracks.
struct State {
  Envelope envelope;  // as written, every recipient
  Timestamp timestamp = 0;
  uint32_t attempts = 0;
  std::set<size_t> delivered;
  std::optional<Hold> hold;
  bool operator==(const State&) const = default;
};
using Outcome = std::optional<State>;  // nullopt: not stored (removed)

std::string describe(const Outcome& s) {
  if (!s) return "not stored";
  std::string out = "timestamp " + std::to_string(s->timestamp) + ", attempts " +
                    std::to_string(s->attempts) + ", delivered {";
  for (size_t i : s->delivered) out += " " + std::to_string(i);
  out += " }";
  if (s->hold) out += ", held (" + s->hold->reason + ")";
  return out;
}

State observed(const QueuedMessage& q, const State& like) {
  State s;
  s.envelope = like.envelope;  // checked below: q.envelope is it minus the delivered
  s.timestamp = q.timestamp;
  s.attempts = q.attempts;
  s.delivered = {q.delivered.begin(), q.delivered.end()};
  s.hold = q.hold;
  return s;
}

bool same_content(const QueuedMessage& q, const State& s) {
  Envelope expect = s.envelope;
  expect.recipients.clear();
  std::set<size_t> delivered(q.delivered.begin(), q.delivered.end());
  for (size_t i = 0; i < s.envelope.recipients.size(); ++i)
    if (!delivered.count(i)) expect.recipients.push_back(s.envelope.recipients[i]);
  return q.envelope == expect && q.original_recipients == s.envelope.recipients.size();
}

struct Tracked {
  Envelope envelope;               // as written
  Outcome acked;                   // as of the last call that returned
  std::optional<Outcome> pending;  // a call was in flight at the cut: it may have landed
};

// One thread's share of the workload: its own messages, so that the outcome of each
// call is known unless the power went during it.
struct Worker {
  std::map<std::string, Tracked> messages;
  std::vector<Envelope> maybe_written;  // writes cut short: may be stored (not acked)
  unsigned seed = 0;

  // Runs up to `ops` random calls; stops at the first that fails (the power went).
  void run(DiskStorage& storage, FaultFileSystem& faults, int ops) {
    std::mt19937 rng(seed);
    try {
      for (int i = 0; i < ops; ++i) step(storage, rng, i);
    } catch (const QueueError& e) {
      if (!faults.is_cut()) ADD_FAILURE() << "failed with the power on: " << e.what();
    }
  }

  std::vector<std::string> live() const {
    std::vector<std::string> out;
    for (const auto& [id, t] : messages)
      if (t.acked) out.push_back(id);
    return out;
  }

  // Applies `change` to the acknowledged state of `id` around `call`.
  template <class Change, class Call>
  void apply(const std::string& id, Change change, Call call) {
    Tracked& t = messages[id];
    Outcome next = t.acked;
    change(next);
    t.pending = next;
    call();
    t.acked = std::move(next);
    t.pending.reset();
  }

  void step(DiskStorage& storage, std::mt19937& rng, int i) {
    auto ids = live();
    unsigned pick = rng() % 100;
    if (ids.empty() || pick < 30) {
      size_t size = rng() % 10 == 0 ? 1 + rng() % (200 << 10) : 50 + rng() % 4000;
      Envelope env = testing::sample_envelope(1 + rng() % 3, size, seed * 7919 + i);
      Timestamp ts = 1000 + rng() % 1000;
      maybe_written.push_back(env);
      std::string id = storage.write(env, ts);
      maybe_written.pop_back();
      messages[id] = Tracked{env, State{env, ts, 0, {}, std::nullopt}, std::nullopt};
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
      Hold h{static_cast<Timestamp>(3000 + rng() % 100), "held " + std::to_string(i)};
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
};

// Reopens after a power loss and checks every worker's messages; then takes what is
// stored as the acknowledged state of the next round.
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
        State like{t.envelope, 0, 0, {}, std::nullopt};
        EXPECT_TRUE(same_content(q, like)) << context << ": " << id << " changed its content";
        actual = observed(q, like);
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
      if (!actual) {
        it = w.messages.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Whatever else is stored must be a write that was cut short, whole and unchanged.
  for (const std::string& id : listed) {
    QueuedMessage q = storage.get(id);
    bool found = false;
    for (Worker& w : workers) {
      for (auto e = w.maybe_written.begin(); e != w.maybe_written.end() && !found; ++e) {
        State fresh{*e, q.timestamp, 0, {}, std::nullopt};
        if (q.envelope == *e && q.attempts == 0 && q.delivered.empty() && !q.hold) {
          w.messages[id] = Tracked{*e, fresh, std::nullopt};
          w.maybe_written.erase(e);
          found = true;
        }
      }
    }
    EXPECT_TRUE(found) << context << ": message " << id << " was never written";
  }
  for (Worker& w : workers) w.maybe_written.clear();
  EXPECT_NO_THROW(storage.counters()) << context;
}

// Where the spools of these tests go: memory (/dev/shm) when it has user extended
// attributes (tmpfs from Linux 6.6), as the fault layer makes the durability decisions
// and the tests create and delete files by the thousand, which an ext4 without journal
// makes slow (it scans recently freed inodes on every create).
std::string spool_parent() {
  static const std::string parent = [] {
    std::string probe = "/dev/shm/slimta-xattr-probe-" + std::to_string(::getpid());
    bool ok = false;
    if (FILE* f = std::fopen(probe.c_str(), "w")) {
      std::fclose(f);
      ok = ::setxattr(probe.c_str(), "user.probe", "1", 1, 0) == 0;
      ::unlink(probe.c_str());
    }
    return ok ? std::string("/dev/shm") : std::string();
  }();
  return parent;
}

DiskOptions on(const std::shared_ptr<FaultFileSystem>& faults, size_t reuse_pool) {
  DiskOptions options;
  options.file_system = faults;
  options.reuse_pool = reuse_pool;
  return options;
}

// One seed: a spool created on the fault layer, then rounds of work cut by a power
// loss at a random call, each followed by a restore, a reopen and the checks.
void power_loss_rounds(unsigned seed, int rounds) {
  testing::TempDir dir(spool_parent());
  std::string spool = dir.sub("spool");
  fs::create_directory(spool);
  auto faults = std::make_shared<FaultFileSystem>(spool);
  std::mt19937 rng(seed);
  const size_t pools[] = {0, 1, 4, 256};
  const size_t reuse_pool = pools[rng() % 4];
  std::vector<Worker> workers(3);
  for (int round = 0; round < rounds; ++round) {
    std::string context = "seed " + std::to_string(seed) + " round " + std::to_string(round) +
                          " pool " + std::to_string(reuse_pool);
    faults->cut_after(1 + rng() % 700);
    try {
      DiskStorage storage(spool, on(faults, reuse_pool));
      std::vector<std::thread> threads;
      for (size_t w = 0; w < workers.size(); ++w) {
        workers[w].seed = seed * 1000 + static_cast<unsigned>(round * 10 + w);
        threads.emplace_back([&, w] { workers[w].run(storage, *faults, 60); });
      }
      for (auto& t : threads) t.join();
      faults->cut();  // if the work ended first
    } catch (const QueueError& e) {
      ASSERT_TRUE(faults->is_cut()) << context << ": " << e.what();  // opening was cut
    }
    auto unsynced =
        rng() % 2 ? FaultFileSystem::Unsynced::torn : FaultFileSystem::Unsynced::dropped;
    faults->restore(unsynced, rng);
    DiskStorage storage(spool, on(faults, reuse_pool));
    check_after_restore(storage, workers, context);
    if (::testing::Test::HasFailure()) return;
  }
  // What is left is a spool the real file system opens as it is.
  DiskStorage plain(spool, false);
  size_t stored = 0;
  for (const Worker& w : workers) stored += w.messages.size();
  EXPECT_EQ(plain.load_all().size(), stored);
}

TEST(PowerLossTest, AcknowledgedWritesAndChangesSurviveAndNothingRemovedOrTornReturns) {
  for (unsigned seed = 1; seed <= 100; ++seed) {
    power_loss_rounds(seed, 5);
    if (HasFailure()) return;
  }
}

TEST(PowerLossTest, ANewSpoolSurvivesAPowerLossRightAfterItIsCreated) {
  testing::TempDir dir(spool_parent());
  std::string spool = dir.sub("spool");
  fs::create_directory(spool);
  auto faults = std::make_shared<FaultFileSystem>(spool);
  { DiskStorage storage(spool, on(faults, 256)); }
  faults->cut();
  std::mt19937 rng(1);
  faults->restore(FaultFileSystem::Unsynced::dropped, rng);
  DiskStorage again(spool, false);  // FORMAT and the directories are there and readable
  EXPECT_EQ(again.write(testing::sample_envelope(), 1).size(), 32u);
}

TEST(PowerLossTest, ARecordSetAsideAsCorruptIsNeverLost) {
  testing::TempDir dir(spool_parent());
  std::string spool = dir.sub("spool");
  fs::create_directory(spool);
  auto faults = std::make_shared<FaultFileSystem>(spool);
  std::string torn, id;
  {
    DiskStorage storage(spool, on(faults, 0));
    id = storage.write(testing::sample_envelope(2, 5000), 1);
    std::string other = storage.write(testing::sample_envelope(), 1);
    fs::resize_file(spool + "/msg/" + id, 3000);  // a bad sector, say
    torn = testing::read_file(spool + "/msg/" + id);
    EXPECT_EQ(storage.load_all().size(), 1u);  // sets it aside
    ASSERT_TRUE(fs::exists(spool + "/corrupt/" + id + ".msg"));
    storage.remove(other);  // syncs msg/, making the record's move out of it durable
    faults->cut();
  }
  std::mt19937 rng(1);
  faults->restore(FaultFileSystem::Unsynced::dropped, rng);
  DiskStorage storage(spool, on(faults, 0));
  EXPECT_TRUE(storage.load_all().empty());
  ASSERT_TRUE(fs::exists(spool + "/corrupt/" + id + ".msg")) << "the torn record was lost";
  // (The fault layer never saw the truncation, a change behind its back, so the record
  // may come back whole: either is the record.)
  EXPECT_TRUE(testing::read_file(spool + "/corrupt/" + id + ".msg").starts_with(torn));
}

// A failing call (disk full, quota, I/O error) is an error of that call alone: it
// stores nothing half-done and changes nothing, and the next call works.
TEST(FileFaultTest, ADiskFullOrIoErrorFailsTheCallAndLeavesTheSpoolIntact) {
  testing::TempDir dir(spool_parent());
  std::string spool = dir.sub("spool");
  fs::create_directory(spool);
  auto faults = std::make_shared<FaultFileSystem>(spool);
  DiskStorage storage(spool, on(faults, 4));
  std::string kept = storage.write(testing::sample_envelope(), 10);

  faults->fail(Op::write, ENOSPC);
  EXPECT_THROW(storage.write(testing::sample_envelope(), 1), StorageFull);
  faults->fail(Op::sync, EIO);  // the fdatasync of the message (fsyncgate: do not retry it)
  try {
    storage.write(testing::sample_envelope(), 1);
    ADD_FAILURE() << "a write whose sync failed returned";
  } catch (const StorageFull&) {
    ADD_FAILURE() << "EIO reported as a full disk";
  } catch (const QueueError& e) {
    EXPECT_TRUE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("Input/output error"), std::string::npos) << e.what();
  }
  faults->fail(Op::rename, EDQUOT);  // the metadata file's rename
  EXPECT_THROW(storage.set_timestamp(kept, 99), StorageFull);
  EXPECT_EQ(storage.get(kept).timestamp, 10);
  faults->fail(Op::truncate, EIO);  // emptying the removed message's file
  EXPECT_THROW(storage.remove(kept), QueueError);
  EXPECT_EQ(storage.get(kept).envelope, testing::sample_envelope());

  auto entries = storage.load_all();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].id, kept);
  EXPECT_TRUE(fs::is_empty(spool + "/tmp")) << "a failed metadata update left its temp file";
  std::string next = storage.write(testing::sample_envelope(), 2);
  storage.remove(kept);
  EXPECT_EQ(storage.load_all().size(), 1u);
  EXPECT_EQ(storage.get(next).timestamp, 2);
}

}  // namespace
}  // namespace slimta
