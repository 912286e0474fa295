// The disk backend. Why it is built this way:
//
// * A message is written in place into an empty file under its final name, created
//   ahead of time: each object reserves such "slots" in batches (1, 2, 4, ... up to
//   kMaxSlotBatch files, then one fsync of the directory for the whole batch). A write
//   then takes one slot, locks it, writes the record and fdatasync()s it: one journal
//   commit per message, where temp file + rename + directory fsync costs two or three,
//   and the kernel merges the commits of concurrent writers (the group commit). The
//   slot's directory entry was made durable when it was reserved, so the fdatasync
//   alone makes the message durable.
// * A slot is a recycled file when there is one: remove() empties the file of the
//   message (ftruncate, its lease dropped, fsync) and keeps it, under its old name, in
//   the object's pool; the next reservation renames it to a new id. An ext4 without
//   journal allocates an inode by scanning past every inode freed in the last minutes,
//   which at a few thousand messages a second cost a quarter of the daemon's CPU; with
//   the pool, a steady flow allocates and frees no inode. The emptying is durable
//   before remove() returns, so a recycled file can never bring its old message back
//   after a crash, and the rename needs no sync of its own before the batch's.
// * Readers skip empty files (reserved or pooled slots). Unused slots are deleted when
//   their object is destroyed; those of a process that died are deleted by load() once
//   they are a day old. As a file can change names, whoever opened msg/ID checks after
//   taking its lock that the name still refers to the same file.
// * A reader that finds a file shorter than its header says (or otherwise unreadable)
//   tries the lock: held means a write is in progress and the file is skipped; free
//   means the writer died before write() returned, and the file is set aside in
//   corrupt/. The writer re-checks after taking its lock that its file is still the
//   one under the name, closing the instant between open() and flock().
// * Metadata changes are written to meta/ID through a temp file and rename(), under an
//   exclusive flock() on msg/ID, so two processes updating one message serialise and
//   no update is lost; a crash leaves either the old or the new metadata.
// * remove() takes the same lock, so it never races an update into an orphan. It
//   returns once the removal is durable, as one lost in a crash would deliver the
//   message again: the emptied file's fsync, or, when the pool is full, the unlink
//   and an fsync of msg/ that every removal in flight shares (a group commit).
// * Leases are checked and changed under that same lock (expiry by the host's clock),
//   so they hold across the processes of one host, but live outside the durable
//   metadata, without fsync: a lease only coordinates the processes of this host, which
//   a crash ends together, so it need not survive one (a torn or lost lease after a
//   crash just frees the message). That spares a claim or release the two syncs of a
//   metadata update. The lease is an extended attribute of msg/ID, so that claiming
//   creates no file (inodes are dear, see the slots above). A filesystem without user
//   extended attributes (tmpfs before Linux 6.6) is refused when the spool is opened.
//   Holds are metadata (durable). A busy claim writes nothing.
// * Ids written by this object start with a random per-object tag; wait() uses it to
//   leave out this object's own writes.
#include "disk/storage_impl.h"

namespace slimta {

std::optional<record::Metadata> DiskStorage::Impl::read_meta_file(const std::string& id) {
  std::string path = path_of("meta", id);
  posix::Fd fd = posix::open_at(fs, meta_fd.get(), id, O_RDONLY, 0, path, /*missing_ok=*/true);
  if (!fd) return std::nullopt;
  return record::decode(posix::read_file(fs, fd.get(), path), path).meta;
}

record::Metadata DiskStorage::Impl::read_initial_meta(int fd, const std::string& id) {
  std::string path = path_of("msg", id);
  std::string prefix = posix::read_at(fs, fd, record::kPrefixSize, 0, path);
  if (auto p = record::decode_prefix(prefix, path)) return p->meta;
  return record::decode(posix::read_file(fs, fd, path), path).meta;  // unusually long metadata
}

void DiskStorage::Impl::write_meta_file(const std::string& id, const record::Metadata& meta) {
  std::string tmp_name = std::to_string(::getpid()) + "." + std::to_string(tmp_seq++) + "." + id;
  std::string tmp_path = root + "/tmp/" + tmp_name;
  posix::Fd fd =
      posix::open_at(fs, tmp_fd.get(), tmp_name, O_WRONLY | O_CREAT | O_EXCL, kFileMode, tmp_path);
  try {
    posix::write_all(fs, fd.get(), record::encode(meta, nullptr), tmp_path);
    posix::sync_data(fs, fd.get(), tmp_path);
    if (fs.renameat2(tmp_fd.get(), tmp_name.c_str(), meta_fd.get(), id.c_str(), 0) != 0) {
      posix::io_error("rename", tmp_path, errno);
    }
  } catch (...) {
    fs.unlinkat(tmp_fd.get(), tmp_name.c_str(), 0);
    throw;
  }
  posix::sync_all(fs, meta_fd.get(), root + "/meta");
}

Lease DiskStorage::Impl::read_lease(int fd, const std::string& id) {
  char buf[64];
  ssize_t n = fs.fgetxattr(fd, kLeaseXattr, buf, sizeof buf);
  if (n < 0 && errno != ENODATA) posix::io_error("getxattr", path_of("msg", id), errno);
  // None yet, or torn by a crash: no lease.
  return record::decode_lease(std::string_view(buf, n > 0 ? static_cast<size_t>(n) : 0))
      .value_or(Lease{});
}

void DiskStorage::Impl::write_lease(int fd, const std::string& id, const Lease& lease) {
  std::string bytes = record::encode_lease(lease);
  if (fs.fsetxattr(fd, kLeaseXattr, bytes.data(), bytes.size()) != 0) {
    posix::io_error("setxattr", path_of("msg", id), errno);
  }
}

void DiskStorage::Impl::quarantine(int fd, const std::string& id, const std::string& reason) {
  // Caller holds the exclusive lock on `fd`, so no writer or updater is active.
  if (!same_file(fs, fd, msg_fd.get(), id)) return;  // removed or replaced meanwhile
  set_aside(id, reason);
}

void DiskStorage::Impl::set_aside(const std::string& id, const std::string& reason) {
  // Linked into corrupt/ and made durable there before the name leaves msg/, so that no
  // power loss loses the record: at worst it is back in msg/ and is set aside again.
  std::string dest = id + ".msg";
  // 0 or the errno of linkat().
  auto link_into_corrupt = [&](int dir, const std::string& to) {
    auto link = [&] { return fs.linkat(dir, id.c_str(), corrupt_fd.get(), to.c_str()); };
    if (link() == 0) return 0;
    if (errno != EEXIST) return errno;
    // Set aside once already, before a power loss undid the unlink: replace that copy.
    posix::unlink_at(fs, corrupt_fd.get(), to, path_of("corrupt", to));
    return link() == 0 ? 0 : errno;
  };
  if (int err = link_into_corrupt(msg_fd.get(), dest); err == EPERM) {
    // A directory cannot be linked; it holds no record, so moving it is enough.
    if (fs.renameat2(msg_fd.get(), id.c_str(), corrupt_fd.get(), dest.c_str(), 0) != 0) {
      posix::io_error("rename", path_of("msg", id), errno);
    }
  } else if (err != 0) {
    posix::io_error("link", path_of("msg", id), err);
  } else {
    link_into_corrupt(meta_fd.get(), id + ".meta");  // there may be none
    posix::sync_all(fs, corrupt_fd.get(), root + "/corrupt");
    posix::unlink_at(fs, msg_fd.get(), id, path_of("msg", id));
    posix::unlink_at(fs, meta_fd.get(), id, path_of("meta", id));
  }
  spdlog::error("spool {}: message {} is corrupt ({}); moved to {}", root, id, reason,
                path_of("corrupt", dest));
}

Probe DiskStorage::Impl::probe(const std::string& id, QueueEntry& entry) {
  std::string path = path_of("msg", id);
  // Something that is no file under a message's name (a directory, a FIFO, a link)
  // is set aside: opening a FIFO would block, and a directory cannot be read.
  struct stat st;
  if (fs.fstatat(msg_fd.get(), id.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Probe::kGone;
    posix::io_error("stat", path, errno);
  }
  if (!S_ISREG(st.st_mode)) {
    set_aside(id, "not a regular file");
    return Probe::kCorrupt;
  }
  posix::Fd fd = posix::open_at(fs, msg_fd.get(), id, O_RDONLY | O_NONBLOCK | O_NOFOLLOW, 0, path,
                                /*missing_ok=*/true);
  if (!fd) return Probe::kGone;
  if (fs.fstat(fd.get(), &st) != 0) posix::io_error("stat", path, errno);
  if (!S_ISREG(st.st_mode)) return Probe::kGone;  // swapped meanwhile: seen next time
  if (st.st_size == 0) {                          // a reserved slot, not a message
    if (::time(nullptr) - st.st_mtime > kStaleSlotSeconds &&
        posix::lock(fs, fd.get(), /*exclusive=*/true, /*nonblocking=*/true, path) &&
        posix::file_size(fs, fd.get(), path) == 0 && same_file(fs, fd.get(), msg_fd.get(), id)) {
      posix::unlink_at(fs, msg_fd.get(), id, path);  // left by a process that died
    }
    return Probe::kGone;
  }
  // Two passes: the first without the lock (the common case: a complete file), the
  // second under the lock if the first found the file incomplete or unreadable.
  for (int pass = 0; pass < 2; ++pass) {
    std::string problem;
    try {
      off_t size = posix::file_size(fs, fd.get(), path);
      std::string prefix = posix::read_at(fs, fd.get(), record::kPrefixSize, 0, path);
      auto p = record::decode_prefix(prefix, path);
      if (p && p->total_length == static_cast<uint64_t>(size)) {
        auto meta = read_meta_file(id);
        entry = QueueEntry{meta ? meta->timestamp : p->meta.timestamp, id};
        return Probe::kOk;
      }
      if (!p && prefix.size() == record::kPrefixSize) {  // long metadata: read it all
        entry = QueueEntry{current_meta(fd.get(), id).timestamp, id};
        return Probe::kOk;
      }
      problem = "file is " + std::to_string(size) + " bytes, its header says " +
                (p ? std::to_string(p->total_length) : std::string("(no complete header)")) +
                ": the write did not complete";
    } catch (const CorruptRecord& e) {
      problem = e.what();
    }
    if (pass == 0) {
      if (!posix::lock(fs, fd.get(), /*exclusive=*/true, /*nonblocking=*/true, path)) {
        return Probe::kInProgress;  // its writer holds the lock: write() has not returned
      }
      if (!same_file(fs, fd.get(), msg_fd.get(), id)) return Probe::kGone;
      continue;  // look again, now that no writer can be active
    }
    quarantine(fd.get(), id, problem);
    return Probe::kCorrupt;
  }
  return Probe::kCorrupt;  // not reached
}

posix::Fd DiskStorage::Impl::lock_stored(std::string_view id, bool exclusive, int access) {
  std::string sid(id);
  std::string path = path_of("msg", sid);
  posix::Fd fd = posix::open_at(fs, msg_fd.get(), sid, access | O_NONBLOCK | O_NOFOLLOW, 0, path,
                                /*missing_ok=*/true);
  if (!fd) return fd;
  struct stat st;
  if (fs.fstat(fd.get(), &st) != 0) posix::io_error("stat", path, errno);
  if (!S_ISREG(st.st_mode)) return posix::Fd();  // no message: load() sets it aside
  posix::lock(fs, fd.get(), exclusive, /*nonblocking=*/false, path);
  // Removed (or recycled under another name) while we waited for the lock, or a
  // reserved slot rather than a message.
  if (!same_file(fs, fd.get(), msg_fd.get(), sid) || posix::file_size(fs, fd.get(), path) == 0) {
    return posix::Fd();
  }
  return fd;
}

class DiskStorage::Impl::Stream : public EntryStream {
 public:
  Stream(Impl& impl, posix::Fd dir) : impl_(impl), dir_(std::move(dir)) {}
  std::optional<QueueEntry> next() override {
    std::string msg_path = impl_.root + "/msg";
    for (std::string name = dir_.next(msg_path); !name.empty(); name = dir_.next(msg_path)) {
      if (!is_valid_id(name)) continue;
      QueueEntry entry;
      switch (impl_.probe(name, entry)) {
        case Probe::kOk:
          return entry;
        case Probe::kCorrupt:
          ++corrupt_;
          break;
        case Probe::kGone:
        case Probe::kInProgress:
          break;
      }
    }
    if (!swept_) {
      swept_ = true;
      impl_.sweep_orphan_meta();
    }
    return std::nullopt;
  }

 private:
  Impl& impl_;
  DirHandle dir_;
  bool swept_ = false;
};

DiskStorage::DiskStorage(const std::string& path, const DiskOptions& options)
    : impl_(std::make_unique<Impl>(options)) {
  if (path.empty()) throw InvalidArgument("disk storage path is empty");
  std::error_code ec;
  // An empty directory is a spool nothing was written to yet (the package makes
  // /var/spool/slimta before serve first runs): its queue is empty, not missing.
  if (!options.create && !std::filesystem::exists(std::filesystem::path(path) / "FORMAT", ec) &&
      !(std::filesystem::is_directory(path, ec) && std::filesystem::is_empty(path, ec)))
    throw InvalidArgument("no spool at " + path);
  impl_->root = path;
  impl_->open_spool();
  impl_->sweep_temp_files();
}

DiskStorage::DiskStorage(const std::string& path, bool create)
    : DiskStorage(path, [&] {
        DiskOptions options;
        options.create = create;
        return options;
      }()) {}

DiskStorage::~DiskStorage() = default;

double MinFree::of(double total) const {
  if (standard) return std::min(1024.0 * 1024 * 1024, total * 0.05);
  if (percent >= 0) return total * percent / 100;
  return bytes;
}

MinFree MinFree::parse(std::string_view text) {
  MinFree out;
  if (text.empty()) {
    out.standard = true;
    return out;
  }
  if (text == "none") return out;
  std::string s(text);
  size_t end = 0;
  double v = -1;
  try {
    v = std::stod(s, &end);
  } catch (const std::exception&) {
  }
  std::string unit = s.substr(end);
  double scale = unit == ""    ? 1
                 : unit == "K" ? 1024
                 : unit == "M" ? 1024.0 * 1024
                 : unit == "G" ? 1024.0 * 1024 * 1024
                 : unit == "%" ? 0
                               : -1;
  if (!(v >= 0) || end == 0 || scale < 0 || (unit == "%" && v > 100))
    throw InvalidArgument("min-free '" + s + "' is not BYTES[K|M|G], N% or none");
  if (unit == "%") {
    out.percent = v;
  } else {
    out.bytes = v * scale;
  }
  return out;
}

bool DiskStorage::has_room(size_t bytes) const {
  struct statvfs fs;
  if (::statvfs(impl_->root.c_str(), &fs) != 0) return true;
  double total = static_cast<double>(fs.f_blocks) * fs.f_frsize;
  double avail = static_cast<double>(fs.f_bavail) * fs.f_frsize;
  return avail - static_cast<double>(bytes) >= impl_->min_free.of(total);
}

const std::string& DiskStorage::path() const { return impl_->root; }

Capabilities DiskStorage::capabilities() const {
  return Capabilities{.can_wait = true, .shared = true, .durable = true, .can_lease = true};
}

std::string DiskStorage::write(const Envelope& envelope, Timestamp timestamp) {
  disk::FileSystem& fs = impl_->fs;
  // In pieces: the body is written from the envelope, never copied.
  record::Parts record =
      record::encode_parts(record::initial_metadata(envelope, timestamp), &envelope);
  if (!has_room(record.head.size() + record.body.size() + record.tail.size()))
    throw StorageFull("the disk spool " + impl_->root +
                      " is below its free-space guard (min-free)");
  int msg_dir = impl_->msg_fd.get();
  while (true) {
    std::string id = impl_->take_slot();
    std::string path = impl_->path_of("msg", id);
    posix::Fd fd = posix::open_at(fs, msg_dir, id, O_WRONLY, 0, path, /*missing_ok=*/true);
    if (!fd) continue;  // a stale slot deleted by another process: take the next one
    posix::lock(fs, fd.get(), /*exclusive=*/true, /*nonblocking=*/false, path);
    if (!same_file(fs, fd.get(), msg_dir, id) || posix::file_size(fs, fd.get(), path) != 0)
      continue;
    try {
      posix::write_all(fs, fd.get(), {record.head, record.body, record.tail}, path);
      posix::sync_data(fs, fd.get(), path);
    } catch (...) {
      fs.unlinkat(msg_dir, id.c_str(), 0);
      throw;
    }
    return id;  // closing the file releases the lock and wakes wait()ers
  }
}

void DiskStorage::do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                                   std::string_view last_reply,
                                   std::span<const RecipientReply> deferred) {
  impl_->mutate(id, record::ops::set_timestamp(timestamp, fence, id, last_reply, deferred));
}

uint32_t DiskStorage::do_increment_attempts(std::string_view id, Fence fence) {
  return impl_->mutate(id, record::ops::increment_attempts(fence, id));
}

void DiskStorage::do_set_recipients_delivered(std::string_view id,
                                              std::span<const size_t> rcpt_indexes, Fence fence,
                                              std::span<const RecipientFailure> failed) {
  impl_->mutate(id, record::ops::set_recipients_delivered(rcpt_indexes, fence, id, failed));
}

ClaimResult DiskStorage::do_claim(std::string_view id, std::chrono::milliseconds duration) {
  return impl_->mutate(id, record::ops::claim(impl_->clock.now(), duration));
}

void DiskStorage::do_release(std::string_view id, Fence fence) {
  impl_->mutate(id, record::ops::release(fence, id));
}

Lease DiskStorage::do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) {
  return impl_->mutate(id, record::ops::renew(fence, impl_->clock.now(), duration, id));
}

void DiskStorage::do_hold(std::string_view id, std::string_view reason, Timestamp since) {
  impl_->mutate(id, record::ops::hold(reason, since));
}

void DiskStorage::do_release_hold(std::string_view id) {
  impl_->mutate(id, record::ops::release_hold());
}

// An empty file nudge/ID, closed: the IN_CLOSE_WRITE of every watcher's nudge/ watch.
std::shared_ptr<Destinations> DiskStorage::destinations() {
  std::call_once(impl_->destinations_once, [&] {
    impl_->destinations = disk::make_destinations(impl_->root + "/destinations", impl_->clock);
  });
  return impl_->destinations;
}

void DiskStorage::do_announce(std::string_view id, Timestamp) {
  std::string name(id);
  posix::open_at(impl_->fs, impl_->nudge_fd.get(), name, O_WRONLY | O_CREAT, 0600,
                 impl_->path_of("nudge", id));
}

// PATH/counters: one JSON object, read-modify-written under flock(). Statistics, so
// not fsynced; a file that does not parse (a crash mid-write) is logged and restarted.
void DiskStorage::add_counters(const Counters& delta) {
  disk::FileSystem& fs = impl_->fs;
  std::string path = impl_->root + "/counters";
  posix::Fd fd = posix::open_at(fs, impl_->root_fd.get(), "counters", O_RDWR | O_CREAT, 0644, path);
  posix::lock(fs, fd.get(), /*exclusive=*/true, /*nonblocking=*/false, path);
  Counters sum = parse_counters(posix::read_file(fs, fd.get(), path), path);
  for (const auto& [name, n] : delta) sum[name] += n;
  std::string text = format_counters(sum);
  posix::rewrite(fs, fd.get(), text, path);
}

Counters DiskStorage::counters() {
  disk::FileSystem& fs = impl_->fs;
  std::string path = impl_->root + "/counters";
  posix::Fd fd = posix::open_at(fs, impl_->root_fd.get(), "counters", O_RDONLY, 0, path,
                                /*missing_ok=*/true);
  if (!fd) return {};
  posix::lock(fs, fd.get(), /*exclusive=*/false, /*nonblocking=*/false, path);
  return parse_counters(posix::read_file(fs, fd.get(), path), path);
}

std::unique_ptr<EntryStream> DiskStorage::load() {
  disk::FileSystem& fs = impl_->fs;
  impl_->ensure_watch();  // so wait() reports whatever is written after this load began
  std::string path = impl_->root + "/msg";
  return std::make_unique<Impl::Stream>(
      *impl_, posix::open_at(fs, impl_->root_fd.get(), "msg", O_RDONLY | O_DIRECTORY, 0, path));
}

QueuedMessage DiskStorage::do_get(std::string_view id) {
  disk::FileSystem& fs = impl_->fs;
  posix::Fd fd = impl_->open_locked(id, /*exclusive=*/false);
  std::string sid(id);
  std::string path = impl_->path_of("msg", sid);
  record::Message m = record::decode_message(posix::read_file(fs, fd.get(), path), path);
  auto meta = impl_->read_meta_file(sid);
  record::Metadata current = meta ? *meta : m.meta;
  current.lease = impl_->read_lease(fd.get(), sid);
  return record::to_queued(std::move(m.envelope), current);
}

void DiskStorage::do_remove(std::string_view id, Fence fence) {
  disk::FileSystem& fs = impl_->fs;
  posix::Fd fd = impl_->lock_stored(id, /*exclusive=*/true, O_RDWR);
  std::string sid(id);
  std::string path = impl_->path_of("msg", sid);
  if (fd && fence.token != 0) {
    record::check_fence(impl_->current_meta_and_lease(fd.get(), sid), fence, id);
  }
  // Under the lock: emptied for good (an empty file is no message) and kept for a later
  // write, or, with the pool full, unlinked.
  bool pooled = fd && impl_->pool_has_room();
  if (pooled) {
    if (fs.fremovexattr(fd.get(), kLeaseXattr) != 0 && errno != ENODATA) {
      posix::io_error("removexattr", path, errno);
    }
    if (fs.ftruncate(fd.get(), 0) != 0) posix::io_error("truncate", path, errno);
    posix::sync_all(fs, fd.get(), path);
  } else if (fd) {
    posix::unlink_at(fs, impl_->msg_fd.get(), sid, path);
  }
  // The metadata goes only once the message's removal is durable: were meta/ID gone
  // and msg/ID back after a power loss, the message would return with its first
  // metadata (attempts, delivered recipients and hold forgotten). A meta/ID left behind
  // by a crash is swept by load().
  bool unlinked = fd && !pooled;
  std::string meta_path = impl_->path_of("meta", sid);
  if (!unlinked) posix::unlink_at(fs, impl_->meta_fd.get(), sid, meta_path);
  fd = posix::Fd();  // frees the lock (and an unlinked file) before the pool or the sync
  if (pooled) {
    impl_->pool_add(std::move(sid));
  } else if (unlinked) {
    impl_->sync_removal();
    posix::unlink_at(fs, impl_->meta_fd.get(), sid, meta_path);
  }
}

std::vector<QueueEntry> DiskStorage::do_wait(std::chrono::milliseconds timeout) {
  impl_->ensure_watch();
  int ifd = impl_->inotify.get();
  std::string msg_path = impl_->root + "/msg";
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<QueueEntry> out;
  std::set<std::string> seen;
  alignas(inotify_event) char buf[64 * 1024];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{ifd, POLLIN, 0};
    int ready =
        ::poll(&pfd, 1,
               static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(left.count(), INT32_MAX))));
    if (ready < 0) {
      if (errno == EINTR) continue;
      posix::io_error("poll inotify", msg_path, errno);
    }
    if (ready == 0) return out;
    bool overflow = false;
    while (true) {  // drain everything queued
      ssize_t n = ::read(ifd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;
        posix::io_error("read inotify", msg_path, errno);
      }
      for (ssize_t off = 0; off < n;) {
        auto* ev = reinterpret_cast<inotify_event*>(buf + off);
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        if (ev->mask & IN_Q_OVERFLOW) overflow = true;
        if (ev->len == 0) continue;
        std::string name(ev->name);
        if (!is_valid_id(name)) continue;
        if (ev->wd == impl_->nudge_wd) {  // an announcement: whoever wrote the message
          impl_->fs.unlinkat(impl_->nudge_fd.get(), name.c_str(), 0);
        } else if (name.starts_with(impl_->tag)) {
          continue;  // our own write
        }
        seen.insert(std::move(name));
      }
    }
    if (overflow) {
      // Events were lost: report every stored message so none is missed.
      spdlog::warn("spool {}: inotify queue overflowed; reporting the whole spool", impl_->root);
      auto stream = load();
      while (auto e = stream->next()) {
        if (!e->id.starts_with(impl_->tag)) out.push_back(std::move(*e));
      }
      return out;
    }
    for (const auto& id : seen) {
      QueueEntry entry;
      if (impl_->probe(id, entry) == Probe::kOk) out.push_back(std::move(entry));
    }
    seen.clear();
    if (!out.empty()) return out;
  }
}

}  // namespace slimta
