// The group-commit log (src/disk/group_log.h): appends from many writers share syncs,
// none returns before a sync covers it, what returned survives a power loss, a torn
// tail is cut off, and a failed sync is never retried into a false success.
#include "disk/group_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "slimta/errors.h"
#include "support/fault_file_system.h"
#include "support/test_util.h"

namespace slimta::disk {
namespace {

using testing::FaultFileSystem;

// The POSIX file system with a gate on fdatasync: a sync waits until the test lets it
// go, so that a test can see what writers do while one is under way.
class GatedSyncs : public FaultFileSystem {
 public:
  using FaultFileSystem::FaultFileSystem;
  int fdatasync(int fd) override {
    {
      std::unique_lock lock(mu_);
      ++waiting_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return opened_ > 0; });
      --opened_;
      --waiting_;
    }
    return FaultFileSystem::fdatasync(fd);
  }
  // Waits until a sync is at the gate; false if none came within 20 s.
  bool await_sync() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return waiting_ > 0; });
  }
  void let_one_through() {
    std::lock_guard lock(mu_);
    ++opened_;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  int opened_ = 0;
};

struct Dir {
  testing::TempDir tmp;
  posix::Fd fd{::open(tmp.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
};

std::vector<std::string> records_in(FileSystem& fs, const Dir& dir) {
  posix::Fd fd = posix::open_at(fs, dir.fd.get(), "log", O_RDONLY | O_CLOEXEC, 0, "log");
  std::vector<std::string> out;
  read_log(fs, fd.get(), "log", [&](uint64_t, std::string_view r) { out.emplace_back(r); });
  return out;
}

// The error of an append that must fail ("" if it returned), which must be retryable:
// a 4xx to the client, whose message is not stored.
std::string append_error(GroupLog& log, std::string_view record) {
  try {
    log.append(record);
  } catch (const QueueError& e) {
    EXPECT_TRUE(e.retryable()) << e.what();
    return e.what();
  }
  return "";
}

// While one sync is under way, the appends of 15 other writers are written and wait;
// the next sync commits them all: 2 syncs for 16 appends, and none returned early.
TEST(GroupLogTest, WritersThatArriveDuringASyncShareTheNext) {
  Dir dir;
  GatedSyncs fs(dir.tmp.path());
  GroupLog log(fs, dir.fd.get(), "log", "log");
  std::atomic<int> returned{0};
  std::vector<std::thread> writers;
  writers.emplace_back([&] {
    log.append("first");
    ++returned;
  });
  if (!fs.await_sync()) {  // the first writer's sync is at the gate
    writers.front().join();
    FAIL() << "the first append made no sync (returned: " << returned.load() << ")";
  }
  for (int i = 0; i < 15; ++i) {
    writers.emplace_back([&, i] {
      log.append("record " + std::to_string(i));
      ++returned;
    });
  }
  ASSERT_TRUE(testing::eventually([&] { return log.stats().appends == 16; }));
  EXPECT_EQ(returned.load(), 0) << "an append returned before any sync completed";
  fs.let_one_through();  // the first sync: it began before the 15 were written
  ASSERT_TRUE(testing::eventually([&] { return returned.load() >= 1; }));
  const bool second = fs.await_sync();  // the second, which the 15 wait for
  EXPECT_TRUE(second) << "no second sync";
  EXPECT_EQ(returned.load(), 1) << "an append returned before the sync that covers it";
  fs.let_one_through();
  for (auto& w : writers) w.join();
  EXPECT_EQ(returned.load(), 16);
  EXPECT_EQ(log.stats().syncs, 2u);
  std::vector<std::string> got = records_in(fs, dir);
  ASSERT_EQ(got.size(), 16u);
  EXPECT_EQ(got.front(), "first");
}

// Every append that returned is there after a power loss at any moment, whole and in
// order of offset; what had not returned is there whole or not at all.
TEST(GroupLogTest, WhatReturnedSurvivesAPowerLossAtAnyCall) {
  std::mt19937 rng(7);
  for (uint64_t cut = 1; cut <= 40; ++cut) {
    Dir dir;
    FaultFileSystem fs(dir.tmp.path());
    std::map<uint64_t, std::string> returned;
    std::mutex mu;
    {
      std::unique_ptr<GroupLog> log;
      fs.cut_after(cut);
      try {
        log = std::make_unique<GroupLog>(fs, dir.fd.get(), "log", "log");
      } catch (const QueueError&) {
        ASSERT_TRUE(fs.is_cut());
      }
      if (log) {
        std::vector<std::thread> writers;
        for (int w = 0; w < 4; ++w) {
          writers.emplace_back([&, w] {
            for (int i = 0; i < 10 && !fs.is_cut(); ++i) {
              std::string r(100 + w * 37 + i, static_cast<char>('a' + w));
              try {
                uint64_t at = log->append(r);
                std::lock_guard lock(mu);
                returned[at] = r;
              } catch (const QueueError&) {
              }
            }
          });
        }
        for (auto& w : writers) w.join();
      }
      fs.cut();
    }
    fs.restore(FaultFileSystem::Unsynced::torn, rng);
    // Reopened: the torn tail is cut, and appends go on after the last whole record.
    GroupLog again(fs, dir.fd.get(), "log", "log");
    std::map<uint64_t, std::string> there;
    posix::Fd fd = posix::open_at(fs, dir.fd.get(), "log", O_RDONLY | O_CLOEXEC, 0, "log");
    uint64_t end =
        read_log(fs, fd.get(), "log", [&](uint64_t at, std::string_view r) { there[at] = r; });
    EXPECT_EQ(end, again.size()) << "cut " << cut;
    for (const auto& [at, r] : returned) {
      ASSERT_TRUE(there.count(at)) << "cut " << cut << ": a returned append at " << at << " lost";
      EXPECT_EQ(there[at], r) << "cut " << cut;
    }
    uint64_t next = again.append("after");
    EXPECT_EQ(next, end) << "cut " << cut;
    EXPECT_EQ(records_in(fs, dir).back(), "after") << "cut " << cut;
  }
}

TEST(GroupLogTest, ATornTailIsCutOffAndAppendsGoOnAfterTheLastWholeRecord) {
  Dir dir;
  FaultFileSystem fs(dir.tmp.path());
  {
    GroupLog log(fs, dir.fd.get(), "log", "log");
    log.append("one");
    log.append("two");
  }
  const std::string path = dir.tmp.sub("log");
  {
    // Half a frame (a header that promises more than follows), as a crash leaves it.
    posix::Fd fd = posix::open_at(fs, dir.fd.get(), "log", O_WRONLY | O_APPEND, 0, path);
    posix::write_all(fs, fd.get(), frame_header("three") + "th", path);
  }
  GroupLog log(fs, dir.fd.get(), "log", "log");
  EXPECT_EQ(log.size(), 2 * 8 + 3 + 3u);
  log.append("four");
  EXPECT_EQ(records_in(fs, dir), (std::vector<std::string>{"one", "two", "four"}));
  // A frame whose payload does not match its checksum ends the log the same way.
  {
    posix::Fd fd = posix::open_at(fs, dir.fd.get(), "log", O_WRONLY | O_APPEND, 0, path);
    posix::write_all(fs, fd.get(), frame_header("five") + "fivE", path);
  }
  EXPECT_EQ(records_in(fs, dir), (std::vector<std::string>{"one", "two", "four"}));
}

// fsyncgate: after a failed fdatasync the kernel may have dropped the pages it could
// not write, so a second sync would succeed without them. The append fails, and so
// does every later one, naming the file, until the log is reopened.
TEST(GroupLogTest, AFailedSyncIsNeverRetriedIntoASuccess) {
  Dir dir;
  FaultFileSystem fs(dir.tmp.path());
  GroupLog log(fs, dir.fd.get(), "log", "log");
  log.append("one");
  fs.fail(FaultFileSystem::Op::sync, EIO);
  EXPECT_EQ(append_error(log, "two"),
            "fdatasync log: Input/output error (the log takes no "
            "more appends until it is reopened)");
  EXPECT_EQ(append_error(log, "three"), append_error(log, "two"));
  EXPECT_EQ(log.stats().syncs, 1u);
  GroupLog reopened(fs, dir.fd.get(), "log", "log");
  reopened.append("four");
  std::vector<std::string> got = records_in(fs, dir);
  ASSERT_GE(got.size(), 2u);
  EXPECT_EQ(got.front(), "one");
  EXPECT_EQ(got.back(), "four");
}

TEST(GroupLogTest, AFailedWriteLeavesNothingThatAReaderTakesForARecord) {
  Dir dir;
  FaultFileSystem fs(dir.tmp.path());
  GroupLog log(fs, dir.fd.get(), "log", "log");
  log.append("one");
  fs.fail(FaultFileSystem::Op::write, ENOSPC);
  EXPECT_EQ(append_error(log, "two"), "append to log: No space left on device");
  log.append("three");
  EXPECT_EQ(records_in(fs, dir), (std::vector<std::string>{"one", "three"}));
}

}  // namespace
}  // namespace slimta::disk
