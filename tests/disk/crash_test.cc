// Crash consistency: a child process running the random workload of the power-loss
// tests (disk/workload.h) is killed with SIGKILL at random points, many times. After
// each kill, every write and change the child saw return must be there, nothing removed
// comes back, and load()/get() never return a partial record.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "disk/workload.h"
#include "slimta/disk_storage.h"
#include "support/test_util.h"

namespace slimta {
namespace {

// A child process runs the shared random workload (disk/workload.h) on the spool and
// reports each call before and after it on a pipe; it is killed at a random moment.
TEST(CrashTest, NothingAcknowledgedIsLostAndNoPartialRecordIsReturned) {
  testing::TempDir dir;
  std::string spool = dir.sub("spool");
  { DiskStorage init(spool); }
  std::mt19937 rng(12345);
  std::vector<testing::Worker> workers(1);  // one process at a time
  size_t acknowledged = 0;
  constexpr int kRounds = 60;
  for (int round = 0; round < kRounds; ++round) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    workers[0].seed = static_cast<unsigned>(round + 1);
    pid_t pid = ::fork();
    if (pid == 0) {  // runs on its copy of the worker's record until killed
      ::close(p[0]);
      testing::LineJournal journal(p[1]);
      DiskStorage storage(spool);
      workers[0].run(
          storage, INT_MAX, [] { return false; }, &journal);
      ::_exit(3);  // a call failed
    }
    ::close(p[1]);
    std::string reports;
    char buf[8192];
    auto read_some = [&](int timeout_ms) {
      pollfd pfd{p[0], POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) <= 0) return false;
      ssize_t n = ::read(p[0], buf, sizeof(buf));
      if (n <= 0) return false;
      reports.append(buf, static_cast<size_t>(n));
      return true;
    };
    auto acks = [&] {  // calls that returned: "W" and "C" lines
      size_t n = 0;
      std::istringstream in(reports);
      for (std::string l; std::getline(in, l);) n += l.starts_with("W ") || l.starts_with("C ");
      return n;
    };
    // Let the child acknowledge a few calls (so every round does work, however slow the
    // build), then kill it at a random moment after that.
    size_t want = 1 + rng() % 4;
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (acks() < want && std::chrono::steady_clock::now() < give_up) read_some(100);
    auto kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(rng() % 40);
    while (std::chrono::steady_clock::now() < kill_at) read_some(1);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
    while (read_some(0)) {
    }
    ::close(p[0]);
    acknowledged += acks();
    workers[0].replay(reports);
    DiskStorage storage(spool);
    testing::check_after_restore(storage, workers, "round " + std::to_string(round));
    if (HasFailure()) return;
  }
  EXPECT_GE(acknowledged, size_t{kRounds});  // the child did real work between kills
  std::printf("crash test: %zu acknowledged calls checked across %d kills\n", acknowledged,
              kRounds);
}

}  // namespace
}  // namespace slimta
