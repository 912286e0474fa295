// Behaviour specific to DiskStorage: the spool layout, corrupt and half-written files,
// several processes on one directory, and wait() across processes.
#include "slimta/disk_storage.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "support/test_util.h"

namespace slimta {
namespace {

namespace fs = std::filesystem;
using testing::sample_envelope;
using testing::TempDir;

size_t count_files(const std::string& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

size_t count_nonempty_files(const std::string& dir) {
  return static_cast<size_t>(std::count_if(fs::directory_iterator(dir), fs::directory_iterator(),
                                           [](const auto& e) { return e.file_size() != 0; }));
}

ino_t inode_of(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

// Runs `fn` in a child process; returns its exit status (0 = success).
template <typename Fn>
pid_t spawn(Fn&& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 1;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    }
    ::_exit(rc);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(DiskStorageTest, CreatesTheSpoolLayout) {
  TempDir dir;
  DiskStorage storage(dir.sub("a/b/spool"));
  for (const char* sub : {"msg", "meta", "tmp", "corrupt"}) {
    EXPECT_TRUE(fs::is_directory(dir.sub(std::string("a/b/spool/") + sub))) << sub;
  }
  EXPECT_EQ(testing::read_file(dir.sub("a/b/spool/FORMAT")), "slimta-spool 1\n");
  std::string id = storage.write(sample_envelope(), 1);
  EXPECT_TRUE(fs::exists(dir.sub("a/b/spool/msg/" + id)));
  EXPECT_EQ(fs::status(dir.sub("a/b/spool/msg/" + id)).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

// Found by probing: under umask 000 the spool root was 0777 (anyone could read mail).
TEST(DiskStorageTest, ANewSpoolIsPrivateWhateverTheUmask) {
  testing::TempDir dir;
  mode_t old = ::umask(0);
  std::string id;
  {
    DiskStorage s(dir.sub("spool"));
    id = s.write(testing::sample_envelope(), 1);
  }
  ::umask(old);
  struct stat st;
  ASSERT_EQ(::stat(dir.sub("spool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir.sub("spool") + "/msg/" + id).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // An existing spool keeps what its operator gave it.
  ASSERT_EQ(::chmod(dir.sub("spool").c_str(), 0750), 0);
  DiskStorage again(dir.sub("spool"));
  ASSERT_EQ(::stat(dir.sub("spool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
}

TEST(DiskStorageTest, RefusesADirectoryThatIsNotASpool) {
  TempDir dir;
  testing::write_file(dir.sub("important.txt"), "keep me");
  try {
    DiskStorage storage(dir.path());
    FAIL() << "opened a non-empty directory";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("not a slimta spool"), std::string::npos) << e.what();
  }
  EXPECT_EQ(count_files(dir.path()), 1u);  // nothing scattered into it
}

TEST(DiskStorageTest, RefusesAFileAndAnotherFormatVersion) {
  TempDir dir;
  testing::write_file(dir.sub("file"), "x");
  EXPECT_THROW(DiskStorage(dir.sub("file")), QueueError);
  { DiskStorage s(dir.sub("spool")); }
  testing::write_file(dir.sub("spool/FORMAT"), "slimta-spool 9\n");
  try {
    DiskStorage storage(dir.sub("spool"));
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("slimta-spool 9"), std::string::npos) << e.what();
  }
}

TEST(DiskStorageTest, CorruptFileIsReportedByGetAndSetAsideByLoad) {
  TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  std::string good = storage.write(sample_envelope(1, 500, 1), 1);
  std::string bad = storage.write(sample_envelope(1, 500, 2), 2);
  std::string path = dir.sub("spool/msg/" + bad);
  std::string bytes = testing::read_file(path);
  bytes[bytes.size() - 100] ^= 0x40;  // same length, wrong checksum
  testing::write_file(path, bytes);

  EXPECT_THROW(storage.get(bad), CorruptRecord);
  // load() only reads the prefix: the file looks complete, so it is listed; get() is
  // what verifies the checksum. Truncation, the crash case, is caught by load (below).
  auto entries = storage.load_all();
  EXPECT_EQ(entries.size(), 2u);

  // A truncated file (a write that never completed) is set aside, not listed.
  testing::write_file(path, bytes.substr(0, bytes.size() / 2));
  auto stream = storage.load();
  std::vector<std::string> ids;
  while (auto e = stream->next()) ids.push_back(e->id);
  EXPECT_EQ(ids, std::vector<std::string>{good});
  EXPECT_EQ(stream->corrupt(), 1u);
  EXPECT_TRUE(fs::exists(dir.sub("spool/corrupt/" + bad + ".msg")));
  EXPECT_EQ(testing::read_file(dir.sub("spool/corrupt/" + bad + ".msg")),
            bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(storage.get(bad), KeyError);
  EXPECT_EQ(storage.get(good).envelope.sender, "sender1@example.com");
}

// Found by probing: a directory named like a message id in msg/ made serve and list
// refuse to start; a FIFO hung startup, and even SIGTERM.
TEST(DiskStorageTest, ADirectoryFifoOrLinkNamedLikeAMessageIsSetAside) {
  TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  std::string good = storage.write(sample_envelope(), 1);
  std::string d = new_message_id(), f = new_message_id(), l = new_message_id();
  fs::create_directory(dir.sub("spool/msg/" + d));
  ASSERT_EQ(::mkfifo(dir.sub("spool/msg/" + f).c_str(), 0600), 0);
  fs::create_symlink(dir.sub("spool/msg/" + good), dir.sub("spool/msg/" + l));
  EXPECT_THROW(storage.get(f), KeyError);  // not a message, and no hang
  EXPECT_THROW(storage.get(d), KeyError);
  auto stream = storage.load();  // returns: a FIFO is never opened for reading
  std::vector<std::string> ids;
  while (auto e = stream->next()) ids.push_back(e->id);
  EXPECT_EQ(ids, std::vector<std::string>{good});
  EXPECT_EQ(stream->corrupt(), 3u);
  for (const auto& id : {d, f, l}) {
    EXPECT_TRUE(fs::exists(fs::symlink_status(dir.sub("spool/corrupt/" + id + ".msg")))) << id;
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir.sub("spool/msg/" + id)))) << id;
  }
  EXPECT_EQ(storage.get(good).envelope.sender, sample_envelope().sender);
}

TEST(DiskStorageTest, GarbageFileIsSetAsideAndTheRestStillLoads) {
  TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  for (int i = 0; i < 10; ++i) storage.write(sample_envelope(1, 100, i), i);
  testing::write_file(dir.sub("spool/msg/deadbeef"), "this is not a record at all");
  testing::write_file(dir.sub("spool/msg/onebyte"), "S");
  auto stream = storage.load();
  size_t n = 0;
  while (stream->next()) ++n;
  EXPECT_EQ(n, 10u);
  EXPECT_EQ(stream->corrupt(), 2u);
  EXPECT_EQ(count_files(dir.sub("spool/corrupt")), 2u);
}

TEST(DiskStorageTest, ReservedEmptyFilesAreNotMessagesAndAreCleanedUp) {
  TempDir dir;
  std::string id;
  {
    DiskStorage storage(dir.sub("spool"));
    for (int i = 0; i < 5; ++i) id = storage.write(sample_envelope(), i);  // reserves 1+2+4 slots
    EXPECT_GT(count_files(dir.sub("spool/msg")), 5u);
    auto stream = storage.load();
    size_t n = 0;
    while (stream->next()) ++n;
    EXPECT_EQ(n, 5u);  // the empty slots are neither listed nor set aside
    EXPECT_EQ(stream->corrupt(), 0u);
  }
  EXPECT_EQ(count_files(dir.sub("spool/msg")), 5u);  // unused slots released on destruction

  // A slot left by a process that died is invisible, and deleted once a day old.
  testing::write_file(dir.sub("spool/msg/abandoned0001"), "");
  DiskStorage storage(dir.sub("spool"));
  EXPECT_THROW(storage.get("abandoned0001"), KeyError);
  EXPECT_THROW(storage.increment_attempts("abandoned0001"), KeyError);
  EXPECT_EQ(storage.load_all().size(), 5u);
  EXPECT_TRUE(fs::exists(dir.sub("spool/msg/abandoned0001")));
  fs::last_write_time(dir.sub("spool/msg/abandoned0001"),
                      fs::file_time_type::clock::now() - std::chrono::hours(25));
  EXPECT_EQ(storage.load_all().size(), 5u);
  EXPECT_FALSE(fs::exists(dir.sub("spool/msg/abandoned0001")));
}

TEST(DiskStorageTest, AFileBeingWrittenIsNeitherListedNorSetAside) {
  TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  // Simulate another process mid-write: a partial file under an exclusive lock.
  std::string path = dir.sub("spool/msg/inprogress0001");
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  ASSERT_EQ(::write(fd, "SLMTAQ\x01\x00", 8), 8);
  auto stream = storage.load();
  EXPECT_FALSE(stream->next());
  EXPECT_EQ(stream->corrupt(), 0u);
  EXPECT_TRUE(fs::exists(path));
  ::close(fd);
  // Once the lock is gone the partial file is a dead writer's leftover.
  auto again = storage.load();
  EXPECT_FALSE(again->next());
  EXPECT_EQ(again->corrupt(), 1u);
}

TEST(DiskStorageTest, MetadataSurvivesReopening) {
  TempDir dir;
  std::string id;
  {
    DiskStorage storage(dir.sub("spool"));
    id = storage.write(sample_envelope(3), 10);
    storage.increment_attempts(id);
    storage.set_timestamp(id, 99);
    const size_t idx[] = {1};
    storage.set_recipients_delivered(id, idx);
  }
  DiskStorage reopened(dir.sub("spool"));
  QueuedMessage got = reopened.get(id);
  EXPECT_EQ(got.attempts, 1u);
  EXPECT_EQ(got.timestamp, 99);
  EXPECT_EQ(got.delivered, (std::vector<size_t>{1}));
  EXPECT_EQ(reopened.load_all(), (std::vector<QueueEntry>{{99, id}}));
}

TEST(DiskStorageTest, RemoveLeavesNoFilesBehind) {
  TempDir dir;
  {
    DiskStorage storage(dir.sub("spool"));
    std::string id = storage.write(sample_envelope(), 1);
    storage.increment_attempts(id);
    storage.claim(id, std::chrono::seconds(60));
    storage.remove(id);
    // Its file is kept, emptied, for a later write: no message, no metadata.
    EXPECT_EQ(count_nonempty_files(dir.sub("spool/msg")), 0u);
    EXPECT_EQ(count_files(dir.sub("spool/meta")), 0u);
    EXPECT_EQ(count_files(dir.sub("spool/tmp")), 0u);
    EXPECT_THROW(storage.get(id), KeyError);
    EXPECT_THROW(storage.claim(id, std::chrono::seconds(1)), KeyError);
    EXPECT_NO_THROW(storage.remove(id));  // already gone: nothing to do
    EXPECT_TRUE(storage.load_all().empty());
  }
  EXPECT_EQ(count_files(dir.sub("spool/msg")), 0u);  // released with its object
}

TEST(DiskStorageTest, ARemovedMessagesFileIsReusedWithoutItsPast) {
  TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  std::set<ino_t> removed_inodes;
  std::vector<std::string> old_ids;
  for (int i = 0; i < 20; ++i) {
    std::string id = storage.write(sample_envelope(1, 100, i), i);
    storage.claim(id, std::chrono::hours(1));  // a lease that has not run out
    removed_inodes.insert(inode_of(dir.sub("spool/msg/" + id)));
    storage.remove(id);
    old_ids.push_back(id);
  }
  std::map<std::string, int> fresh;
  size_t reused = 0;
  for (int i = 0; i < 20; ++i) {
    std::string id = storage.write(sample_envelope(1, 100, 100 + i), 100 + i);
    fresh[id] = 100 + i;
    reused += removed_inodes.count(inode_of(dir.sub("spool/msg/" + id)));
  }
  // The first 11 take the slots reserved before (1+2+4+8+16 for 20 writes); the rest
  // the removed messages' files, renamed, with the new slots' batch.
  EXPECT_GE(reused, 5u);
  for (const auto& [id, n] : fresh) {
    EXPECT_EQ(storage.get(id).envelope.body, sample_envelope(1, 100, n).body);
    ClaimResult c = storage.claim(id, std::chrono::seconds(60));
    EXPECT_EQ(c.status, ClaimResult::Status::claimed);  // the old lease is gone
    EXPECT_EQ(c.lease.token, 1u);
  }
  for (const auto& id : old_ids) EXPECT_THROW(storage.get(id), KeyError);
  EXPECT_EQ(storage.load_all().size(), 20u);

  // A steady flow goes round the same few files (no inode allocated or freed).
  std::set<ino_t> used;
  for (int i = 0; i < 300; ++i) {
    std::string id = storage.write(sample_envelope(), i);
    used.insert(inode_of(dir.sub("spool/msg/" + id)));
    storage.claim(id, std::chrono::seconds(60));
    storage.remove(id);
  }
  EXPECT_LE(used.size(), 64u);
}

TEST(DiskStorageTest, DeadWritersLeftoversAreSwept) {
  TempDir dir;
  { DiskStorage s(dir.sub("spool")); }
  // A temp file of a process that no longer exists, and metadata of a removed message.
  pid_t dead = spawn([] { return 0; });
  wait_status(dead);
  testing::write_file(dir.sub("spool/tmp/" + std::to_string(dead) + ".0.abc"), "partial");
  testing::write_file(dir.sub("spool/tmp/" + std::to_string(::getpid()) + ".0.live"), "in use");
  testing::write_file(dir.sub("spool/meta/orphan123"), "stale");
  DiskStorage storage(dir.sub("spool"));
  EXPECT_FALSE(fs::exists(dir.sub("spool/tmp/" + std::to_string(dead) + ".0.abc")));
  EXPECT_TRUE(fs::exists(dir.sub("spool/tmp/" + std::to_string(::getpid()) + ".0.live")));
  std::string id = storage.write(sample_envelope(), 1);
  storage.increment_attempts(id);  // its meta file is not an orphan
  EXPECT_EQ(storage.load_all().size(), 1u);
  EXPECT_FALSE(fs::exists(dir.sub("spool/meta/orphan123")));
  EXPECT_TRUE(fs::exists(dir.sub("spool/meta/" + id)));
}

TEST(DiskStorageTest, TwoProcessesIncrementingOneMessageLoseNoUpdate) {
  TempDir dir;
  std::string spool = dir.sub("spool");
  std::string id = DiskStorage(spool).write(sample_envelope(20), 0);
  std::vector<pid_t> kids;
  for (int k = 0; k < 2; ++k) {
    kids.push_back(spawn([&, k] {
      DiskStorage storage(spool);
      for (int i = 0; i < 300; ++i) {
        storage.increment_attempts(id);
        if (i % 30 == 0) {
          const size_t idx[] = {static_cast<size_t>(k * 10 + i / 30)};
          storage.set_recipients_delivered(id, idx);
        }
      }
      return 0;
    }));
  }
  for (pid_t p : kids) EXPECT_EQ(wait_status(p), 0);
  QueuedMessage got = DiskStorage(spool).get(id);
  EXPECT_EQ(got.attempts, 600u);
  EXPECT_EQ(got.delivered.size(), 20u);
}

TEST(DiskStorageTest, WaitSeesEveryMessageAnotherProcessWritesExactlyOnce) {
  TempDir dir;
  std::string spool = dir.sub("spool");
  DiskStorage waiter(spool);
  EXPECT_TRUE(waiter.load_all().empty());  // starts watching
  auto run = testing::write_in_child_and_wait(
      waiter, [&] { return std::make_unique<DiskStorage>(spool); }, 1000,
      std::chrono::milliseconds(500), std::chrono::seconds(120));
  EXPECT_TRUE(run.child_ok);
  EXPECT_EQ(run.written.size(), 1000u);
  EXPECT_EQ(run.seen.size(), 1000u);
  EXPECT_EQ(run.wrong_timestamps, 0u);
  for (const auto& id : run.written) EXPECT_EQ(run.seen[id], 1) << id;
  EXPECT_TRUE(waiter.wait(std::chrono::milliseconds(100)).empty());
}

TEST(DiskStorageTest, WaitDoesNotReportTheObjectsOwnWrites) {
  TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  DiskStorage other(dir.sub("spool"));
  EXPECT_TRUE(storage.wait(std::chrono::milliseconds(10)).empty());
  storage.write(sample_envelope(), 1);
  std::string theirs = other.write(sample_envelope(), 2);
  auto got = storage.wait(std::chrono::milliseconds(2000));
  EXPECT_EQ(got, (std::vector<QueueEntry>{{2, theirs}}));
}

}  // namespace
}  // namespace slimta
