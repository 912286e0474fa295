// DiskStorage: the embedded default storage, a spool directory on local disk.
//
// Durable: write() and every metadata update return only after the data and the
// directory entry are on stable storage (fdatasync of the file, fsync of the
// directory). Crash-safe: a message file is either complete (checked by length and
// CRC) or it was never acknowledged; records are never modified in place, metadata is
// replaced atomically by rename. Shared: several processes on one host may use the same
// directory at once; updates of one message are serialised by flock(), so none is
// lost. wait() is supported through inotify.
//
// Layout (doc/format.md has the details):
//   PATH/FORMAT        "slimta-spool 1"
//   PATH/msg/ID        the message: envelope and its initial metadata
//   PATH/meta/ID       the latest metadata, once it has changed
//   PATH/tmp/          files being written
//   PATH/corrupt/      records set aside because they could not be read (kept for an
//                      operator, logged when set aside)
//
// Thread safety: all methods may be called concurrently, except wait() (one thread).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "slimta/clock.h"
#include "slimta/storage.h"

namespace slimta {

namespace disk {
class FileSystem;  // src/disk/file_system.h
}

// The free space a spool leaves on its file system: a spool that fills its disk to the
// last byte fails its metadata updates too (attempts, deliveries), and its disk is
// usually the system's. write() refuses (StorageFull) a message that would cross it.
struct MinFree {
  double bytes = 0;       // >= 0: this many bytes (0: none, only what the disk lacks)
  double percent = -1;    // >= 0: this share of the file system, instead of `bytes`
  bool standard = false;  // instead of both: 1 GiB or 5% of the file system, the smaller

  // The bytes to keep free on a file system of `total` bytes.
  double of(double total) const;
  // "BYTES[K|M|G]", "N%" (0 to 100), "none", or "" for the standard guard. Throws
  // InvalidArgument naming `text`.
  static MinFree parse(std::string_view text);
};

struct DiskOptions {
  // false: a path that holds no spool yet is an InvalidArgument "no spool at PATH", and
  // nothing is created (what read-only tools want).
  bool create = true;
  // Where leases read the time (claim, renew, expiry).
  const Clock* clock = &system_clock();
  // Files of removed messages kept, emptied, for later writes to reuse (which spares
  // the file system an inode allocation per message); 0 unlinks each one.
  size_t reuse_pool = 256;
  // The file operations; null means the POSIX calls. Tests pass one that injects faults
  // and simulates power loss.
  std::shared_ptr<disk::FileSystem> file_system;
  // The free-space guard (none by default; the URL's min-free=, serve's --min-free).
  MinFree min_free;
};

class DiskStorage : public QueueStorage {
 public:
  // Opens the spool at `path`, creating it (and missing parents) if needed, unless
  // options.create is false. Throws InvalidArgument if `path` is not a directory, or is
  // a non-empty directory that is not a slimta spool, or a spool of another format
  // version; QueueError on I/O errors.
  DiskStorage(const std::string& path, const DiskOptions& options);
  explicit DiskStorage(const std::string& path, bool create = true);
  ~DiskStorage() override;

  const std::string& path() const;

  Capabilities capabilities() const override;
  std::string kind() const override { return "disk"; }
  // Whether the spool's file system keeps options.min_free free after `bytes` more
  // (statvfs; true if the file system cannot be asked: the write itself will say).
  bool has_room(size_t bytes) const override;
  // Throws StorageFull, storing nothing, when the message would cross min_free.
  std::string write(const Envelope& envelope, Timestamp timestamp) override;
  // Streams the spool directory. A record found corrupt is moved to PATH/corrupt/,
  // logged and counted in EntryStream::corrupt(). A message still being written by
  // another process is not listed (its write() has not returned). Once the stream is
  // exhausted, metadata files whose message is gone are deleted.
  std::unique_ptr<EntryStream> load() override;
  // Shared by the processes of this host: state files in the spool's destinations/.
  std::shared_ptr<Destinations> destinations() override;
  void add_counters(const Counters& delta) override;
  Counters counters() override;

 protected:
  QueuedMessage do_get(std::string_view id) override;
  void do_hold(std::string_view id, std::string_view reason, Timestamp since) override;
  void do_release_hold(std::string_view id) override;
  void do_announce(std::string_view id, Timestamp timestamp) override;
  void do_set_timestamp(std::string_view id, Timestamp timestamp, Fence fence,
                        std::string_view last_reply,
                        std::span<const RecipientReply> deferred) override;
  uint32_t do_increment_attempts(std::string_view id, Fence fence) override;
  void do_set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes,
                                   Fence fence, std::span<const RecipientFailure> failed) override;
  void do_remove(std::string_view id, Fence fence) override;
  ClaimResult do_claim(std::string_view id, std::chrono::milliseconds duration) override;
  void do_release(std::string_view id, Fence fence) override;
  Lease do_renew(std::string_view id, Fence fence, std::chrono::milliseconds duration) override;
  // Reports messages that other DiskStorage objects (in this or other processes) wrote
  // since this object's first load() or wait() call; its own writes are not reported.
  std::vector<QueueEntry> do_wait(std::chrono::milliseconds timeout) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
