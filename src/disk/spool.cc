// The spool itself: opened (and its format checked), swept of what dead processes
// left, and the slots and the pool of emptied files that writes and removals use
// (disk_storage.cc says why).
#include "disk/storage_impl.h"

namespace slimta {

void DiskStorage::Impl::open_spool() {
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) throw QueueError("cannot create spool directory " + root + ": " + ec.message());
  if (!std::filesystem::is_directory(root, ec)) {
    throw InvalidArgument("spool path " + root + " is not a directory");
  }
  root_fd = posix::open_at(fs, AT_FDCWD, root, O_RDONLY | O_DIRECTORY, 0, root);

  posix::Fd format = posix::open_at(fs, root_fd.get(), "FORMAT", O_RDONLY, 0, root + "/FORMAT",
                                    /*missing_ok=*/true);
  if (format) {
    std::string content = posix::read_file(fs, format.get(), root + "/FORMAT");
    if (content != kFormat) {
      throw InvalidArgument("spool " + root + " has format '" + content.substr(0, 40) +
                            "'; this build reads 'slimta-spool 1'");
    }
  } else {
    // Only an empty directory (or one a concurrent process is initialising) becomes a
    // spool: never scatter files into a directory that holds something else.
    DirHandle dir(posix::open_at(fs, root_fd.get(), ".", O_RDONLY | O_DIRECTORY, 0, root));
    for (std::string name = dir.next(root); !name.empty(); name = dir.next(root)) {
      bool ours =
          name.starts_with("FORMAT") || std::any_of(std::begin(kSubdirs), std::end(kSubdirs),
                                                    [&](const char* d) { return name == d; });
      if (!ours) {
        throw InvalidArgument("spool path " + root +
                              " is a non-empty directory that is not a slimta spool (found '" +
                              name + "', no FORMAT file)");
      }
    }
    // A new spool is the queue's alone, whatever the umask (create_directories left it
    // 0777 & ~umask): mail is private.
    if (fs.fchmod(root_fd.get(), kDirMode) != 0) posix::io_error("chmod", root, errno);
    std::string tmp_name = "FORMAT." + random_hex(8);
    posix::Fd f = posix::open_at(fs, root_fd.get(), tmp_name, O_WRONLY | O_CREAT | O_EXCL, 0644,
                                 root + "/" + tmp_name);
    posix::write_all(fs, f.get(), kFormat, root + "/" + tmp_name);
    posix::sync_data(fs, f.get(), root + "/" + tmp_name);
    if (fs.renameat2(root_fd.get(), tmp_name.c_str(), root_fd.get(), "FORMAT", 0) != 0) {
      posix::io_error("rename", root + "/" + tmp_name, errno);
    }
  }
  for (const char* d : kSubdirs) {
    if (fs.mkdirat(root_fd.get(), d, kDirMode) != 0 && errno != EEXIST) {
      posix::io_error("mkdir", root + "/" + d, errno);
    }
  }
  posix::sync_all(fs, root_fd.get(), root);
  auto open_dir = [&](const char* d) {
    return posix::open_at(fs, root_fd.get(), d, O_RDONLY | O_DIRECTORY, 0, root + "/" + d);
  };
  msg_fd = open_dir("msg");
  meta_fd = open_dir("meta");
  tmp_fd = open_dir("tmp");
  corrupt_fd = open_dir("corrupt");
  nudge_fd = open_dir("nudge");
  // Asking for an attribute the spool never has tells whether there are any.
  char probe;
  if (fs.fgetxattr(msg_fd.get(), kLeaseXattr, &probe, sizeof probe) < 0 && errno != ENODATA) {
    if (errno == ENOTSUP) {
      throw InvalidArgument("spool " + root +
                            ": the filesystem has no user extended attributes, which hold "
                            "the leases (ext4, XFS and Btrfs have them; tmpfs from Linux 6.6)");
    }
    posix::io_error("getxattr", root + "/msg", errno);
  }
}

// Removes temp files whose writer is gone (or that are a day old).
void DiskStorage::Impl::sweep_temp_files() {
  std::string tmp_path = root + "/tmp";
  DirHandle tmp(posix::open_at(fs, tmp_fd.get(), ".", O_RDONLY | O_DIRECTORY, 0, tmp_path));
  time_t now = ::time(nullptr);
  for (std::string name = tmp.next(tmp_path); !name.empty(); name = tmp.next(tmp_path)) {
    pid_t pid = static_cast<pid_t>(std::strtol(name.c_str(), nullptr, 10));
    struct stat st;
    if (fs.fstatat(tmp_fd.get(), name.c_str(), &st, 0) != 0) continue;
    bool dead = pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH);
    if (dead || now - st.st_mtime > kStaleTempSeconds) {
      posix::unlink_at(fs, tmp_fd.get(), name, tmp_path + "/" + name);
    }
  }
}

// Removes metadata whose message is gone (a remove() cut short by a crash). Runs at
// the end of a complete load(), which has read the whole spool anyway.
void DiskStorage::Impl::sweep_orphan_meta() {
  std::string path = root + "/meta";
  DirHandle dir(posix::open_at(fs, meta_fd.get(), ".", O_RDONLY | O_DIRECTORY, 0, path));
  for (std::string name = dir.next(path); !name.empty(); name = dir.next(path)) {
    struct stat st;
    if (is_valid_id(name) && fs.fstatat(msg_fd.get(), name.c_str(), &st, 0) != 0 &&
        errno == ENOENT) {
      posix::unlink_at(fs, meta_fd.get(), name, path + "/" + name);
    }
  }
}

DiskStorage::Impl::~Impl() {
  if (!msg_fd) return;
  for (const auto& list : {slots, pool})
    for (const auto& id : list) fs.unlinkat(msg_fd.get(), id.c_str(), 0);
}

bool DiskStorage::Impl::pool_has_room() {
  std::lock_guard lock(slots_mu);
  return pool.size() < max_pool;
}

void DiskStorage::Impl::pool_add(std::string id) {
  std::lock_guard lock(slots_mu);
  pool.push_back(std::move(id));
}

void DiskStorage::Impl::sync_removal() {
  std::unique_lock lock(removed_mu);
  const uint64_t mine = ++removed_requested;
  while (removed_synced < mine) {
    if (removed_syncing) {
      removed_cv.wait(lock);
      continue;
    }
    // Lead one sync for every removal numbered so far; a failure is this caller's
    // error, and the removals it covered elect another leader.
    removed_syncing = true;
    const uint64_t covers = removed_requested;
    lock.unlock();
    std::exception_ptr error;
    try {
      posix::sync_all(fs, msg_fd.get(), root + "/msg");
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    removed_syncing = false;
    if (!error) removed_synced = std::max(removed_synced, covers);
    removed_cv.notify_all();
    if (error) std::rethrow_exception(error);
  }
}

std::string DiskStorage::Impl::take_slot() {
  std::lock_guard lock(slots_mu);
  if (slots.empty()) {
    std::vector<std::string> batch;
    try {
      while (batch.size() < slot_batch) {
        std::string id = tag + random_hex(kTagHexDigits / 2);
        if (!pool.empty()) {  // a new name for an emptied file
          std::string old = std::move(pool.back());
          pool.pop_back();
          if (fs.renameat2(msg_fd.get(), old.c_str(), msg_fd.get(), id.c_str(), RENAME_NOREPLACE) !=
              0) {
            if (errno == ENOENT) continue;  // deleted meanwhile (by an operator?)
            posix::io_error("rename", path_of("msg", old), errno);
          }
        } else if (fs.mknodat(msg_fd.get(), id.c_str(), kFileMode) != 0) {
          // mknod, not open: a slot must not raise IN_CLOSE_WRITE, so that wait() hears
          // of each message once, when its writer closes it.
          posix::io_error("create", path_of("msg", id), errno);
        }
        batch.push_back(std::move(id));
      }
      posix::sync_all(fs, msg_fd.get(), root + "/msg");
    } catch (...) {
      for (const auto& id : batch) fs.unlinkat(msg_fd.get(), id.c_str(), 0);
      throw;
    }
    slots = std::move(batch);
    slot_batch = std::min(slot_batch * 2, kMaxSlotBatch);
  }
  std::string id = std::move(slots.back());
  slots.pop_back();
  return id;
}

void DiskStorage::Impl::ensure_watch() {
  std::lock_guard lock(watch_mu);
  if (inotify) return;
  posix::Fd fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd) posix::io_error("inotify_init", root + "/msg", errno);
  std::string msg = root + "/msg";
  // Messages appear when their writer closes them; renames only make slots.
  if (::inotify_add_watch(fd.get(), msg.c_str(), IN_CLOSE_WRITE) < 0) {
    posix::io_error("inotify_add_watch", msg, errno);
  }
  std::string nudge = root + "/nudge";
  nudge_wd = ::inotify_add_watch(fd.get(), nudge.c_str(), IN_CLOSE_WRITE);
  if (nudge_wd < 0) posix::io_error("inotify_add_watch", nudge, errno);
  // Announcements from before the watch: the load() that goes with it covers them.
  DirHandle dir(posix::open_at(fs, nudge_fd.get(), ".", O_RDONLY | O_DIRECTORY, 0, nudge));
  for (std::string name = dir.next(nudge); !name.empty(); name = dir.next(nudge))
    fs.unlinkat(nudge_fd.get(), name.c_str(), 0);
  inotify = std::move(fd);
}

}  // namespace slimta
