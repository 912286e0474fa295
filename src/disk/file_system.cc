#include "disk/file_system.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/xattr.h>
#include <unistd.h>

namespace slimta::disk {
namespace {

class PosixFileSystem final : public FileSystem {
 public:
  int openat(int dirfd, const char* name, int flags, mode_t mode) override {
    return ::openat(dirfd, name, flags, mode);
  }
  ssize_t writev(int fd, const iovec* iov, int count) override { return ::writev(fd, iov, count); }
  ssize_t pwrite(int fd, const void* data, size_t n, off_t offset) override {
    return ::pwrite(fd, data, n, offset);
  }
  ssize_t pread(int fd, void* data, size_t n, off_t offset) override {
    return ::pread(fd, data, n, offset);
  }
  int ftruncate(int fd, off_t length) override { return ::ftruncate(fd, length); }
  int fdatasync(int fd) override { return ::fdatasync(fd); }
  int fsync(int fd) override { return ::fsync(fd); }
  int fstat(int fd, struct stat* st) override { return ::fstat(fd, st); }
  int fstatat(int dirfd, const char* name, struct stat* st, int flags) override {
    return ::fstatat(dirfd, name, st, flags);
  }
  int renameat2(int from_dir, const char* from, int to_dir, const char* to,
                unsigned flags) override {
    return ::renameat2(from_dir, from, to_dir, to, flags);
  }
  int linkat(int from_dir, const char* from, int to_dir, const char* to) override {
    return ::linkat(from_dir, from, to_dir, to, 0);
  }
  int unlinkat(int dirfd, const char* name, int flags) override {
    return ::unlinkat(dirfd, name, flags);
  }
  int mkdirat(int dirfd, const char* name, mode_t mode) override {
    return ::mkdirat(dirfd, name, mode);
  }
  int mknodat(int dirfd, const char* name, mode_t mode) override {
    return ::mknodat(dirfd, name, S_IFREG | mode, 0);
  }
  int fchmod(int fd, mode_t mode) override { return ::fchmod(fd, mode); }
  ssize_t fgetxattr(int fd, const char* name, void* value, size_t size) override {
    return ::fgetxattr(fd, name, value, size);
  }
  int fsetxattr(int fd, const char* name, const void* value, size_t size) override {
    return ::fsetxattr(fd, name, value, size, 0);
  }
  int fremovexattr(int fd, const char* name) override { return ::fremovexattr(fd, name); }
  int flock(int fd, int operation) override { return ::flock(fd, operation); }
};

}  // namespace

FileSystem& posix_file_system() {
  static PosixFileSystem fs;
  return fs;
}

}  // namespace slimta::disk
