// Power loss: DiskStorage on a FaultFileSystem (tests/support/fault_file_system.h),
// which forgets whatever was not synced when the power goes. Random workloads
// (disk/workload.h) from several threads are cut at random points, over many seeds;
// after each restore and reopen, every write and metadata change that returned is there
// byte for byte, nothing removed comes back, and nothing torn is served. doc/format.md
// ("Durability") lists which sync each test here guards.
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

#include "disk/workload.h"
#include "slimta/disk_storage.h"
#include "slimta/errors.h"
#include "support/fault_file_system.h"
#include "support/test_util.h"

namespace slimta {
namespace {

namespace fs = std::filesystem;
using testing::FaultFileSystem;
using testing::Worker;
using Op = FaultFileSystem::Op;

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
        threads.emplace_back(
            [&, w] { workers[w].run(storage, 60, [&] { return faults->is_cut(); }); });
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
    testing::check_after_restore(storage, workers, context);
    if (::testing::Test::HasFailure()) return;
  }
  // What is left is a spool the real file system opens as it is.
  DiskStorage plain(spool, false);
  size_t stored = 0;
  for (const Worker& w : workers) stored += w.messages.size();
  EXPECT_EQ(plain.load_all().size(), stored);
}

TEST(PowerLossTest, AcknowledgedWritesAndChangesSurviveAndNothingRemovedOrTornReturns) {
#ifdef SLIMTA_SANITIZED
  constexpr unsigned kSeeds = 40;  // each ~5x slower; the plain build runs all 100
#else
  constexpr unsigned kSeeds = 100;
#endif
  for (unsigned seed = 1; seed <= kSeeds; ++seed) {
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
