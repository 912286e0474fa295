// Thin RAII helpers over file descriptors for the disk backend, each call made through
// a FileSystem (disk/file_system.h). Every errno is turned into a QueueError in exactly
// one place, io_error().
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <initializer_list>
#include <string>
#include <string_view>

#include "disk/file_system.h"

namespace slimta::posix {

using disk::FileSystem;

// Throws QueueError "OP PATH: strerror(err)", retryable when waiting can help
// (disk full, quota, too many open files, out of memory).
[[noreturn]] void io_error(std::string_view op, const std::string& path, int err);

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// openat() retried on EINTR. Returns an empty Fd for ENOENT when `missing_ok`;
// throws for every other error.
Fd open_at(FileSystem& fs, int dirfd, const std::string& name, int flags, mode_t mode,
           const std::string& path, bool missing_ok = false);

void write_all(FileSystem& fs, int fd, std::string_view data, const std::string& path);
// The pieces one after the other, as one write would (writev): no copy into one buffer.
void write_all(FileSystem& fs, int fd, std::initializer_list<std::string_view> pieces,
               const std::string& path);
// Reads from `offset` until `n` bytes or end of file; returns the bytes read.
std::string read_at(FileSystem& fs, int fd, size_t n, off_t offset, const std::string& path);
std::string read_file(FileSystem& fs, int fd, const std::string& path);
off_t file_size(FileSystem& fs, int fd, const std::string& path);
// Replaces the whole content of `fd` with `data` (pwrite at 0, then ftruncate).
void rewrite(FileSystem& fs, int fd, std::string_view data, const std::string& path);
void sync_data(FileSystem& fs, int fd, const std::string& path);  // fdatasync
void sync_all(FileSystem& fs, int fd, const std::string& path);   // fsync (directories)
// flock(); returns false instead of blocking when `nonblocking` and the lock is held.
bool lock(FileSystem& fs, int fd, bool exclusive, bool nonblocking, const std::string& path);
// unlinkat(); true if something was removed, false if it was not there.
bool unlink_at(FileSystem& fs, int dirfd, const std::string& name, const std::string& path);

// A directory being read (readdir: it changes nothing, so it is not a FileSystem call).
class DirHandle {
 public:
  explicit DirHandle(Fd fd);
  ~DirHandle();
  DirHandle(const DirHandle&) = delete;
  DirHandle& operator=(const DirHandle&) = delete;
  // The next entry's name (never "." or ".."), or empty at the end. `path` names the
  // directory in errors.
  std::string next(const std::string& path);

 private:
  DIR* dir_ = nullptr;
};

}  // namespace slimta::posix
