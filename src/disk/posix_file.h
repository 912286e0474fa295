// Thin RAII helpers over POSIX file descriptors for the disk backend. Every errno is
// turned into a QueueError in exactly one place, io_error().
#pragma once

#include <sys/types.h>

#include <initializer_list>
#include <string>
#include <string_view>

namespace slimta::posix {

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
Fd open_at(int dirfd, const std::string& name, int flags, mode_t mode, const std::string& path,
           bool missing_ok = false);

void write_all(int fd, std::string_view data, const std::string& path);
// The pieces one after the other, as one write would (writev): no copy into one buffer.
void write_all(int fd, std::initializer_list<std::string_view> pieces, const std::string& path);
// Reads from `offset` until `n` bytes or end of file; returns the bytes read.
std::string read_at(int fd, size_t n, off_t offset, const std::string& path);
std::string read_file(int fd, const std::string& path);
off_t file_size(int fd, const std::string& path);
// Replaces the whole content of `fd` with `data` (pwrite at 0, then ftruncate).
void rewrite(int fd, std::string_view data, const std::string& path);
void sync_data(int fd, const std::string& path);  // fdatasync
void sync_all(int fd, const std::string& path);   // fsync (directories)
// flock(); returns false instead of blocking when `nonblocking` and the lock is held.
bool lock(int fd, bool exclusive, bool nonblocking, const std::string& path);
// unlinkat(); true if something was removed, false if it was not there.
bool unlink_at(int dirfd, const std::string& name, const std::string& path);

}  // namespace slimta::posix
