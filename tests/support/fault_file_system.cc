#include "support/fault_file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace slimta::testing {
namespace {

namespace fs = std::filesystem;

std::runtime_error failure(const std::string& what) {
  return std::runtime_error("FaultFileSystem: " + what + ": " + std::strerror(errno));
}

// The names in directory `fd` (not its own offset: a new descriptor reads it).
std::vector<std::string> names_in(int fd) {
  int copy = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) throw failure("open directory");
  DIR* dir = ::fdopendir(copy);
  if (!dir) {
    ::close(copy);
    throw failure("fdopendir");
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

// The whole content of the file open as `fd`, whatever its access mode.
std::string content_of(int fd) {
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  int rd = ::open(proc.c_str(), O_RDONLY | O_CLOEXEC);
  if (rd < 0) throw failure("reopen " + proc);
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(rd, buf, sizeof buf)) != 0;) {
    if (n < 0) {
      ::close(rd);
      throw failure("read " + proc);
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(rd);
  return out;
}

std::string content_at(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw failure("open " + path);
  std::string out = content_of(fd);
  ::close(fd);
  return out;
}

void write_new(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw failure("create " + path);
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      ::close(fd);
      throw failure("write " + path);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

FaultFileSystem::FaultFileSystem(std::string root)
    : root_(std::move(root)), keep_(root_ + ".fault-keep") {
  struct stat st;
  if (::stat(root_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw failure("stat " + root_);
  root_ino_ = st.st_ino;
  fs::remove_all(keep_);
  fs::create_directory(keep_);
  checkpoint();
}

FaultFileSystem::~FaultFileSystem() {
  std::error_code ec;
  fs::remove_all(keep_, ec);
}

void FaultFileSystem::fail(Op op, int err, int times) {
  std::lock_guard lock(mu_);
  faults_[op] = {err, times};
}

void FaultFileSystem::cut_after(uint64_t changes) { cut_at_ = changes_.load() + changes; }

void FaultFileSystem::cut() {
  std::lock_guard lock(mu_);
  cut_ = true;
}

bool FaultFileSystem::admit(Op op, bool changes) {
  if (changes && ++changes_ >= cut_at_) cut();
  std::lock_guard lock(mu_);
  if (cut_) {
    errno = EIO;
    return false;
  }
  auto it = faults_.find(op);
  if (it != faults_.end() && it->second.second > 0) {
    --it->second.second;
    errno = it->second.first;
    return false;
  }
  return true;
}

void FaultFileSystem::keep(int dirfd, const char* name) {
  struct stat st;
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) return;
  std::string kept = keep_ + "/" + std::to_string(++kept_);
  if (::linkat(dirfd, name, AT_FDCWD, kept.c_str(), 0) != 0) {
    throw std::runtime_error("fault file system: cannot keep " + std::string(name) + ": " +
                             std::strerror(errno));
  }
}

int FaultFileSystem::sync(int fd) {
  if (!admit(Op::sync, true)) return -1;
  std::lock_guard lock(mu_);
  if (cut_) {  // the power went while this call waited for the lock
    errno = EIO;
    return -1;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return -1;
  if (S_ISDIR(st.st_mode)) {
    dirs_[st.st_ino] = listing_of(fd);
  } else if (S_ISREG(st.st_mode)) {
    data_[st.st_ino] = content_of(fd);
  }
  return 0;  // the real sync is skipped: the model, not the disk, decides what survives
}

FaultFileSystem::Listing FaultFileSystem::listing_of(int dirfd) {
  Listing listing;
  for (const std::string& name : names_in(dirfd)) {
    struct stat e;
    if (::fstatat(dirfd, name.c_str(), &e, AT_SYMLINK_NOFOLLOW) != 0) continue;  // just removed
    if (S_ISDIR(e.st_mode) || S_ISREG(e.st_mode)) listing[name] = {e.st_ino, S_ISDIR(e.st_mode)};
  }
  return listing;
}

void FaultFileSystem::checkpoint() {
  dirs_.clear();
  data_.clear();
  auto visit = [&](auto& self, const std::string& path, ino_t ino) -> void {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw failure("open " + path);
    Listing listing = listing_of(fd);
    ::close(fd);
    for (const auto& [name, entry] : listing) {
      std::string child = path + "/" + name;
      if (entry.dir) {
        self(self, child, entry.ino);
      } else {
        data_[entry.ino] = content_at(child);
      }
    }
    dirs_[ino] = std::move(listing);
  };
  visit(visit, root_, root_ino_);
}

void FaultFileSystem::restore(Unsynced unsynced, std::mt19937& rng) {
  std::lock_guard lock(mu_);
  // Where each inode's current content is, for torn appends.
  std::map<ino_t, std::string> where;
  for (const std::string& top : {root_, keep_}) {
    if (unsynced != Unsynced::torn) break;
    for (const auto& e : fs::recursive_directory_iterator(top)) {
      struct stat st;
      if (::lstat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
        where.emplace(st.st_ino, e.path().string());
    }
  }
  std::string staging = root_ + ".fault-restore";
  fs::remove_all(staging);
  fs::create_directory(staging);
  std::map<ino_t, std::string> made;
  auto build = [&](auto& self, ino_t dir, const std::string& path) -> void {
    auto listing = dirs_.find(dir);
    if (listing == dirs_.end()) return;  // a directory whose entries were never synced
    for (const auto& [name, entry] : listing->second) {
      std::string target = path + "/" + name;
      if (entry.dir) {
        if (::mkdir(target.c_str(), 0700) != 0) throw failure("mkdir " + target);
        self(self, entry.ino, target);
        continue;
      }
      if (auto m = made.find(entry.ino); m != made.end()) {
        if (::link(m->second.c_str(), target.c_str()) != 0) throw failure("link " + target);
        continue;
      }
      auto d = data_.find(entry.ino);
      std::string content = d == data_.end() ? std::string() : d->second;
      if (auto w = where.find(entry.ino); w != where.end()) {
        std::string now = content_at(w->second);
        if (now.size() > content.size() && now.starts_with(content)) {
          content = now.substr(0, content.size() + rng() % (now.size() - content.size() + 1));
        }
      }
      write_new(target, content);
      made[entry.ino] = target;
    }
  };
  build(build, root_ino_, staging);
  for (const auto& e : fs::directory_iterator(root_)) fs::remove_all(e.path());
  for (const auto& e : fs::directory_iterator(staging))
    fs::rename(e.path(), fs::path(root_) / e.path().filename());
  fs::remove_all(staging);
  for (const auto& e : fs::directory_iterator(keep_)) fs::remove_all(e.path());
  checkpoint();
  cut_at_ = UINT64_MAX;
  cut_ = false;
}

int FaultFileSystem::openat(int dirfd, const char* name, int flags, mode_t mode) {
  if (!admit(Op::open, (flags & O_CREAT) != 0)) return -1;
  return ::openat(dirfd, name, flags, mode);
}
ssize_t FaultFileSystem::writev(int fd, const iovec* iov, int count) {
  if (!admit(Op::write, true)) return -1;
  return ::writev(fd, iov, count);
}
ssize_t FaultFileSystem::pwrite(int fd, const void* data, size_t n, off_t offset) {
  if (!admit(Op::write, true)) return -1;
  return ::pwrite(fd, data, n, offset);
}
ssize_t FaultFileSystem::pread(int fd, void* data, size_t n, off_t offset) {
  if (!admit(Op::read, false)) return -1;
  return ::pread(fd, data, n, offset);
}
int FaultFileSystem::ftruncate(int fd, off_t length) {
  if (!admit(Op::truncate, true)) return -1;
  return ::ftruncate(fd, length);
}
int FaultFileSystem::fdatasync(int fd) { return sync(fd); }
int FaultFileSystem::fsync(int fd) { return sync(fd); }
int FaultFileSystem::fstat(int fd, struct stat* st) {
  if (!admit(Op::read, false)) return -1;
  return ::fstat(fd, st);
}
int FaultFileSystem::fstatat(int dirfd, const char* name, struct stat* st, int flags) {
  if (!admit(Op::read, false)) return -1;
  return ::fstatat(dirfd, name, st, flags);
}
int FaultFileSystem::renameat2(int from_dir, const char* from, int to_dir, const char* to,
                               unsigned flags) {
  if (!admit(Op::rename, true)) return -1;
  if (!(flags & RENAME_NOREPLACE)) keep(to_dir, to);
  return ::renameat2(from_dir, from, to_dir, to, flags);
}
int FaultFileSystem::linkat(int from_dir, const char* from, int to_dir, const char* to) {
  if (!admit(Op::link, true)) return -1;
  return ::linkat(from_dir, from, to_dir, to, 0);
}
int FaultFileSystem::unlinkat(int dirfd, const char* name, int flags) {
  if (!admit(Op::unlink, true)) return -1;
  keep(dirfd, name);
  return ::unlinkat(dirfd, name, flags);
}
int FaultFileSystem::mkdirat(int dirfd, const char* name, mode_t mode) {
  if (!admit(Op::mkdir, true)) return -1;
  return ::mkdirat(dirfd, name, mode);
}
int FaultFileSystem::mknodat(int dirfd, const char* name, mode_t mode) {
  if (!admit(Op::open, true)) return -1;
  return ::mknodat(dirfd, name, S_IFREG | mode, 0);
}
int FaultFileSystem::fchmod(int fd, mode_t mode) {
  if (!admit(Op::chmod, true)) return -1;
  return ::fchmod(fd, mode);
}
ssize_t FaultFileSystem::fgetxattr(int fd, const char* name, void* value, size_t size) {
  if (!admit(Op::xattr, false)) return -1;
  return ::fgetxattr(fd, name, value, size);
}
int FaultFileSystem::fsetxattr(int fd, const char* name, const void* value, size_t size) {
  if (!admit(Op::xattr, true)) return -1;
  return ::fsetxattr(fd, name, value, size, 0);
}
int FaultFileSystem::fremovexattr(int fd, const char* name) {
  if (!admit(Op::xattr, true)) return -1;
  return ::fremovexattr(fd, name);
}
int FaultFileSystem::flock(int fd, int operation) {
  // Not a change, and it may block: no lock of ours is held while it waits.
  if (!admit(Op::read, false)) return -1;
  return ::flock(fd, operation);
}

}  // namespace slimta::testing
