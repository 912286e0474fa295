// DiskStorage's insides, shared by disk_storage.cc (records, metadata, leases, the
// public calls) and spool.cc (opening the spool, its sweeps, the slots and the pool).
#pragma once

#include "slimta/disk_storage.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <set>

#include <spdlog/spdlog.h>

#include "core/counters_text.h"
#include "core/metadata_ops.h"
#include "core/record.h"
#include "disk/destinations.h"
#include "disk/file_system.h"
#include "disk/posix_file.h"

namespace slimta {

using posix::DirHandle;

inline constexpr std::string_view kFormat = "slimta-spool 1\n";
inline constexpr const char* kSubdirs[] = {"msg",     "meta",  "tmp",
                                           "corrupt", "nudge", "destinations"};
inline constexpr mode_t kFileMode = 0600;
inline constexpr mode_t kDirMode = 0700;
inline constexpr size_t kTagHexDigits = 16;
inline constexpr time_t kStaleTempSeconds = 24 * 3600;
inline constexpr time_t kStaleSlotSeconds = 24 * 3600;
inline constexpr size_t kMaxSlotBatch = 32;
inline constexpr const char* kLeaseXattr = "user.slimta.lease";

// What a look at msg/ID found.
enum class Probe { kOk, kGone, kInProgress, kCorrupt };

inline bool same_file(disk::FileSystem& fs, int fd, int dirfd, const std::string& name) {
  struct stat a, b;
  if (fs.fstat(fd, &a) != 0) return false;
  if (fs.fstatat(dirfd, name.c_str(), &b, AT_SYMLINK_NOFOLLOW) != 0) return false;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

struct DiskStorage::Impl {
  explicit Impl(const DiskOptions& options)
      : fs_owner(options.file_system),
        fs(fs_owner ? *fs_owner : disk::posix_file_system()),
        clock(*options.clock),
        max_pool(options.reuse_pool),
        min_free(options.min_free) {}

  std::shared_ptr<disk::FileSystem> fs_owner;
  disk::FileSystem& fs;
  const Clock& clock;
  std::once_flag destinations_once;
  std::shared_ptr<Destinations> destinations;
  const size_t max_pool;
  const MinFree min_free;
  std::string root;
  posix::Fd root_fd, msg_fd, meta_fd, tmp_fd, corrupt_fd, nudge_fd;
  std::string tag = random_hex(kTagHexDigits / 2);
  std::atomic<uint64_t> tmp_seq{0};

  std::mutex watch_mu;  // guards inotify setup; do_wait is single-threaded by contract
  posix::Fd inotify;
  int nudge_wd = -1;  // the watch on nudge/: announce()ments, from any storage object

  // The group commit of removals: every unlink numbered before a sync of msg/ began
  // is durable once that sync ends.
  std::mutex removed_mu;
  std::condition_variable removed_cv;
  uint64_t removed_requested = 0, removed_synced = 0;
  bool removed_syncing = false;
  void sync_removal();

  std::mutex slots_mu;
  std::vector<std::string> slots;  // reserved empty files in msg/, unused yet
  size_t slot_batch = 1;           // doubles with each reservation, up to kMaxSlotBatch
  std::vector<std::string> pool;   // removed messages' emptied files in msg/, by old id

  ~Impl();
  // The id of a reserved empty message file, reserving a new batch if none is left.
  std::string take_slot();
  // Whether the pool takes more files (a soft limit), and taking one: the file of a
  // removed message, durably emptied.
  bool pool_has_room();
  void pool_add(std::string id);

  std::string path_of(const char* dir, std::string_view name) const {
    return root + "/" + dir + "/" + std::string(name);
  }

  void open_spool();
  void sweep_temp_files();
  void sweep_orphan_meta();
  void ensure_watch();

  // Metadata from meta/ID, if that file exists.
  std::optional<record::Metadata> read_meta_file(const std::string& id);
  // Metadata recorded in the message file itself (the initial metadata).
  record::Metadata read_initial_meta(int fd, const std::string& id);
  // Current metadata: meta/ID if present, otherwise the message file's.
  record::Metadata current_meta(int fd, const std::string& id) {
    if (auto m = read_meta_file(id)) return *std::move(m);
    return read_initial_meta(fd, id);
  }
  void write_meta_file(const std::string& id, const record::Metadata& meta);
  // The lease of msg/ID (open as `fd`): 16 bytes (token, expiry) in its extended
  // attribute, never fsynced (see the top of this file). Missing or torn: no lease.
  Lease read_lease(int fd, const std::string& id);
  void write_lease(int fd, const std::string& id, const Lease& lease);
  // current_meta() with the lease.
  record::Metadata current_meta_and_lease(int fd, const std::string& id) {
    record::Metadata meta = current_meta(fd, id);
    meta.lease = read_lease(fd, id);
    return meta;
  }

  // Looks at msg/ID for load() and wait(); sets `entry` when kOk.
  Probe probe(const std::string& id, QueueEntry& entry);
  void quarantine(int fd, const std::string& id, const std::string& reason);
  // Moves msg/ID (and meta/ID) to corrupt/, with a log line.
  void set_aside(const std::string& id, const std::string& reason);

  // Opens msg/ID (with `access`) and takes its lock; an empty Fd if the message is not
  // stored. open_locked() throws KeyError instead.
  posix::Fd lock_stored(std::string_view id, bool exclusive, int access = O_RDONLY);
  posix::Fd open_locked(std::string_view id, bool exclusive) {
    posix::Fd fd = lock_stored(id, exclusive);
    if (!fd) throw KeyError(std::string(id));
    return fd;
  }

  class Stream;

  template <typename Fn>
  auto mutate(std::string_view id, Fn&& fn) {
    posix::Fd fd = open_locked(id, /*exclusive=*/true);
    std::string sid(id);
    record::Metadata meta = current_meta_and_lease(fd.get(), sid);
    const record::Metadata before = meta;
    auto result = fn(meta);
    // Only what changed is written (a busy claim writes nothing); the lease never goes
    // into the durable metadata file.
    if (meta.lease != before.lease) write_lease(fd.get(), sid, meta.lease);
    record::Metadata durable = meta, durable_before = before;
    durable.lease = durable_before.lease = Lease{};
    if (durable != durable_before) write_meta_file(sid, durable);
    return result;
  }
};

}  // namespace slimta
