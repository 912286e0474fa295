// A disk::FileSystem for tests that injects faults and simulates power loss, after
// leveldb's FaultInjectionTestEnv and rocksdb's FaultInjectionTestFS.
//
// Every call is the real one, on a real directory tree under `root`, and besides:
// * fail(op, errno, n): the next n calls of that kind fail with errno (EIO, ENOSPC,
//   EDQUOT, ...), changing nothing;
// * it records what is durable: a file's content as of its last fsync/fdatasync, a
//   directory's entries as of its last fsync (a new directory starts empty). This is
//   what POSIX promises and stricter than ext4, whose journal also commits a rename
//   with any later sync; so a test passing here does not lean on one file system.
// * cut() (or cut_after(n) changing calls) "loses power": from then on every call
//   fails with EIO, as for a process that is gone. restore() then rewrites the tree to
//   what was durable: entries not made durable disappear, unlinked or renamed ones
//   whose removal was not synced come back, and each file holds its synced content,
//   or with Unsynced::torn a random prefix of what was written after it (a torn
//   append). Extended attributes (never synced by the spool) are lost. Calls work again.
//
// Thread safety: calls may come from any thread. restore() needs them all finished.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <string>

#include "disk/file_system.h"

namespace slimta::testing {

class FaultFileSystem : public disk::FileSystem {
 public:
  enum class Op { open, write, read, truncate, sync, rename, link, unlink, mkdir, chmod, xattr };
  enum class Unsynced { dropped, torn };

  // `root` must exist; what it holds now counts as durable.
  explicit FaultFileSystem(std::string root);
  ~FaultFileSystem() override;

  void fail(Op op, int err, int times = 1);
  // Power loss just before the n-th call from now that changes something.
  void cut_after(uint64_t changes);
  void cut();
  bool is_cut() const { return cut_.load(); }
  void restore(Unsynced unsynced, std::mt19937& rng);

  int openat(int dirfd, const char* name, int flags, mode_t mode) override;
  ssize_t writev(int fd, const iovec* iov, int count) override;
  ssize_t pwrite(int fd, const void* data, size_t n, off_t offset) override;
  ssize_t pread(int fd, void* data, size_t n, off_t offset) override;
  int ftruncate(int fd, off_t length) override;
  int fdatasync(int fd) override;
  int fsync(int fd) override;
  int fstat(int fd, struct stat* st) override;
  int fstatat(int dirfd, const char* name, struct stat* st, int flags) override;
  int renameat2(int from_dir, const char* from, int to_dir, const char* to,
                unsigned flags) override;
  int linkat(int from_dir, const char* from, int to_dir, const char* to) override;
  int unlinkat(int dirfd, const char* name, int flags) override;
  int mkdirat(int dirfd, const char* name, mode_t mode) override;
  int mknodat(int dirfd, const char* name, mode_t mode) override;
  int fchmod(int fd, mode_t mode) override;
  ssize_t fgetxattr(int fd, const char* name, void* value, size_t size) override;
  int fsetxattr(int fd, const char* name, const void* value, size_t size) override;
  int fremovexattr(int fd, const char* name) override;
  int flock(int fd, int operation) override;

 private:
  struct Entry {
    ino_t ino;
    bool dir;
  };
  using Listing = std::map<std::string, Entry>;
  // The regular files and directories in directory `dirfd`, by name.
  static Listing listing_of(int dirfd);

  // Whether a call of `op` may go ahead; false (errno set) if the power is off or a
  // fault is due.
  bool admit(Op op, bool changes);
  int sync(int fd);
  // Keeps the inode of a file about to lose its name alive (in keep_), so its number
  // is not reused while a durable entry may still name it.
  void keep(int dirfd, const char* name);
  void checkpoint();  // everything under root_ is durable

  const std::string root_, keep_;
  ino_t root_ino_ = 0;
  std::atomic<bool> cut_{false};
  std::atomic<uint64_t> changes_{0}, cut_at_{UINT64_MAX}, kept_{0};
  std::mutex mu_;                      // guards what follows; held across a sync so a cut is atomic
  std::map<ino_t, Listing> dirs_;      // durable entries, per directory inode
  std::map<ino_t, std::string> data_;  // durable content, per file inode
  std::map<Op, std::pair<int, int>> faults_;  // op -> (errno, calls left)
};

}  // namespace slimta::testing
