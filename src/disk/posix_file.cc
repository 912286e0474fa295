#include "disk/posix_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "slimta/errors.h"

namespace slimta::posix {

void io_error(std::string_view op, const std::string& path, int err) {
  std::string what = std::string(op) + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) throw StorageFull(what);
  // EROFS: a file system remounted read-only after an error comes back once an
  // operator has repaired it; the call may then succeed.
  bool retryable = err == EMFILE || err == ENFILE || err == ENOMEM || err == EAGAIN ||
                   err == EINTR || err == EROFS || err == EIO;
  throw QueueError(what, retryable);
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd open_at(FileSystem& fs, int dirfd, const std::string& name, int flags, mode_t mode,
           const std::string& path, bool missing_ok) {
  while (true) {
    int fd = fs.openat(dirfd, name.c_str(), flags | O_CLOEXEC, mode);
    if (fd >= 0) return Fd(fd);
    if (errno == EINTR) continue;
    if (errno == ENOENT && missing_ok) return Fd();
    io_error("open", path, errno);
  }
}

void write_all(FileSystem& fs, int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    iovec one{const_cast<char*>(data.data()), data.size()};
    ssize_t n = fs.writev(fd, &one, 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      io_error("write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

void write_all(FileSystem& fs, int fd, std::initializer_list<std::string_view> pieces,
               const std::string& path) {
  std::vector<iovec> iov;
  for (std::string_view p : pieces)
    if (!p.empty()) iov.push_back({const_cast<char*>(p.data()), p.size()});
  size_t first = 0;
  while (first < iov.size()) {
    int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    ssize_t n = fs.writev(fd, iov.data() + first, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      io_error("write", path, errno);
    }
    auto done = static_cast<size_t>(n);
    while (first < iov.size() && done >= iov[first].iov_len) done -= iov[first++].iov_len;
    if (first < iov.size()) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
    }
  }
}

void rewrite(FileSystem& fs, int fd, std::string_view data, const std::string& path) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = fs.pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      io_error("write", path, errno);
    }
    done += static_cast<size_t>(n);
  }
  if (fs.ftruncate(fd, static_cast<off_t>(data.size())) != 0) io_error("truncate", path, errno);
}

std::string read_at(FileSystem& fs, int fd, size_t n, off_t offset, const std::string& path) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = fs.pread(fd, out.data() + got, n - got, offset + static_cast<off_t>(got));
    if (r < 0) {
      if (errno == EINTR) continue;
      io_error("read", path, errno);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

off_t file_size(FileSystem& fs, int fd, const std::string& path) {
  struct stat st;
  if (fs.fstat(fd, &st) != 0) io_error("stat", path, errno);
  return st.st_size;
}

std::string read_file(FileSystem& fs, int fd, const std::string& path) {
  return read_at(fs, fd, static_cast<size_t>(file_size(fs, fd, path)), 0, path);
}

void sync_data(FileSystem& fs, int fd, const std::string& path) {
  if (fs.fdatasync(fd) != 0) io_error("fdatasync", path, errno);
}

void sync_all(FileSystem& fs, int fd, const std::string& path) {
  if (fs.fsync(fd) != 0) io_error("fsync", path, errno);
}

bool lock(FileSystem& fs, int fd, bool exclusive, bool nonblocking, const std::string& path) {
  int op = (exclusive ? LOCK_EX : LOCK_SH) | (nonblocking ? LOCK_NB : 0);
  while (fs.flock(fd, op) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK && nonblocking) return false;
    io_error("lock", path, errno);
  }
  return true;
}

bool unlink_at(FileSystem& fs, int dirfd, const std::string& name, const std::string& path) {
  if (fs.unlinkat(dirfd, name.c_str(), 0) == 0) return true;
  if (errno == ENOENT) return false;
  io_error("unlink", path, errno);
}

DirHandle::DirHandle(Fd fd) : dir_(::fdopendir(fd.get())) {
  if (dir_) fd.release();
}

DirHandle::~DirHandle() {
  if (dir_) ::closedir(dir_);
}

std::string DirHandle::next(const std::string& path) {
  if (!dir_) io_error("opendir", path, EBADF);
  while (true) {
    errno = 0;
    dirent* e = ::readdir(dir_);
    if (!e) {
      if (errno != 0) io_error("readdir", path, errno);
      return {};
    }
    std::string_view name = e->d_name;
    if (name != "." && name != "..") return std::string(name);
  }
}

}  // namespace slimta::posix
