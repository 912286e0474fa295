// The file operations of the disk spool, behind one interface: the POSIX calls in
// production, and in tests an implementation that fails calls on command and forgets
// whatever was not synced when it "loses power" (tests/support/fault_file_system.h),
// the model of leveldb's FaultInjectionTestEnv.
//
// Every method has the contract of the system call it is named after: it returns what
// the call returns and sets errno on failure. Reading directories (readdir) and inotify
// stay direct calls: they change nothing that must survive a power loss.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

namespace slimta::disk {

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  virtual int openat(int dirfd, const char* name, int flags, mode_t mode) = 0;
  virtual ssize_t writev(int fd, const iovec* iov, int count) = 0;
  virtual ssize_t pwrite(int fd, const void* data, size_t n, off_t offset) = 0;
  virtual ssize_t pread(int fd, void* data, size_t n, off_t offset) = 0;
  virtual int ftruncate(int fd, off_t length) = 0;
  virtual int fdatasync(int fd) = 0;
  virtual int fsync(int fd) = 0;  // files and directories
  virtual int fstat(int fd, struct stat* st) = 0;
  virtual int fstatat(int dirfd, const char* name, struct stat* st, int flags) = 0;
  virtual int renameat2(int from_dir, const char* from, int to_dir, const char* to,
                        unsigned flags) = 0;
  virtual int linkat(int from_dir, const char* from, int to_dir, const char* to) = 0;
  virtual int unlinkat(int dirfd, const char* name, int flags) = 0;
  virtual int mkdirat(int dirfd, const char* name, mode_t mode) = 0;
  virtual int mknodat(int dirfd, const char* name, mode_t mode) = 0;  // regular files only
  virtual int fchmod(int fd, mode_t mode) = 0;
  virtual ssize_t fgetxattr(int fd, const char* name, void* value, size_t size) = 0;
  virtual int fsetxattr(int fd, const char* name, const void* value, size_t size) = 0;
  virtual int fremovexattr(int fd, const char* name) = 0;
  virtual int flock(int fd, int operation) = 0;
};

// The process's POSIX file system: each method is the system call itself.
FileSystem& posix_file_system();

}  // namespace slimta::disk
