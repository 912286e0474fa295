// Crash consistency: a child process writing messages and updating metadata is killed
// with SIGKILL at random points, many times. After each kill, every write and update
// the child saw return must be there, and load()/get() never return a partial record.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "slimta/disk_storage.h"
#include "support/test_util.h"

namespace slimta {
namespace {

// The child: writes messages of random sizes, and increments the attempts of earlier
// ones; reports each acknowledged operation on `fd` as "W id" or "A id n" lines.
[[noreturn]] void crash_child(const std::string& spool, int fd, unsigned seed) {
  DiskStorage storage(spool);
  std::mt19937 rng(seed);
  std::vector<std::string> mine;
  for (unsigned i = 0;; ++i) {
    std::string line;
    if (!mine.empty() && rng() % 3 == 0) {
      const std::string& id = mine[rng() % mine.size()];
      line = "A " + id + " " + std::to_string(storage.increment_attempts(id)) + "\n";
    } else {
      // Up to 2 MiB, so that some kills land in the middle of writing a file.
      size_t size = 100 + rng() % (2 << 20);
      std::string id = storage.write(testing::sample_envelope(2, size, seed * 1000 + i), i);
      mine.push_back(id);
      line = "W " + id + "\n";
    }
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) ::_exit(3);
  }
}

TEST(CrashTest, NothingAcknowledgedIsLostAndNoPartialRecordIsReturned) {
  testing::TempDir dir;
  std::string spool = dir.sub("spool");
  { DiskStorage init(spool); }
  std::mt19937 rng(12345);
  std::set<std::string> acked;
  std::map<std::string, uint32_t> acked_attempts;
  size_t set_aside = 0;
  constexpr int kRounds = 60;
  for (int round = 0; round < kRounds; ++round) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(p[0]);
      crash_child(spool, p[1], static_cast<unsigned>(round + 1));
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
    // Let the child acknowledge a few operations (so every round does work, however
    // slow the build), then kill it at a random moment after that.
    size_t want = 1 + rng() % 4;
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (static_cast<size_t>(std::count(reports.begin(), reports.end(), '\n')) < want &&
           std::chrono::steady_clock::now() < give_up) {
      read_some(100);
    }
    auto kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(rng() % 40);
    while (std::chrono::steady_clock::now() < kill_at) read_some(1);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
    while (read_some(0)) {
    }
    ::close(p[0]);
    std::istringstream in(reports);
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // a line cut by the kill was not fully reported
      std::istringstream l(line);
      std::string op, id;
      l >> op >> id;
      if (op == "W") acked.insert(id);
      if (op == "A") {
        uint32_t n = 0;
        l >> n;
        acked_attempts[id] = std::max(acked_attempts[id], n);
      }
    }

    DiskStorage storage(spool);
    auto stream = storage.load();
    std::set<std::string> loaded;
    while (auto e = stream->next()) {
      // Every listed message is complete and readable.
      QueuedMessage m = storage.get(e->id);
      EXPECT_EQ(m.envelope.recipients.size(), 2u);
      loaded.insert(e->id);
    }
    set_aside += stream->corrupt();
    for (const auto& id : acked) {
      ASSERT_TRUE(loaded.count(id)) << "acknowledged message " << id << " lost in round " << round;
    }
    for (const auto& [id, n] : acked_attempts) {
      EXPECT_GE(storage.get(id).attempts, n) << "acknowledged attempt count lost for " << id;
    }
  }
  EXPECT_GE(acked.size(), size_t{kRounds} / 2);  // the child did real work between kills
  std::printf("crash test: %zu acknowledged writes survived %d kills; %zu torn writes set aside\n",
              acked.size(), kRounds, set_aside);
}

}  // namespace
}  // namespace slimta
