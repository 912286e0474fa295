// An append-only file whose appends are made durable together (group commit): the
// core of the log-structured spool (issue 28). A message's life on the file-per-message
// spool costs five syncs; here one fdatasync commits every record written since the
// last one began, so that N concurrent writers share one sync instead of taking N, the
// way Redis's append-only file and every database's write-ahead log do it.
//
// A record is framed as u32 length, u32 CRC-32 of the payload (zlib's), the payload;
// big-endian. A crash can leave the last records written cut short or half there (a
// torn append): read_log() reads up to the first frame that is not whole and valid,
// and open() cuts the file there, so that what follows is appended after the last
// whole record. Nothing after a frame that is not whole was ever reported durable: an
// append returns only once a sync that began after its write completed.
//
// A failed fdatasync poisons the log: the kernel may have dropped the dirty pages it
// could not write and marked them clean (PostgreSQL's "fsyncgate"), so a retried sync
// would report success for data that is gone. Every append not yet durable, and every
// later one, throws QueueError; the owner reopens the file, which reads back what is
// really there.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "disk/file_system.h"
#include "disk/posix_file.h"

namespace slimta::disk {

class GroupLog {
 public:
  // Opens `name` in directory `dirfd` (`path` names it in errors), creating it (and
  // syncing the directory, so that the new entry is durable) if it is not there, and
  // cuts a torn tail off. Throws QueueError.
  // `each`, if given, is called for every whole record found (its frame's offset and
  // the record), in order, as read_log() would. `read` false: the file is not read, its
  // size taken for the end of its last record (for a file synced whole, which a torn
  // tail cannot end).
  GroupLog(FileSystem& fs, int dirfd, const std::string& name, const std::string& path,
           const std::function<void(uint64_t, std::string_view)>& each = {}, bool read = true);
  GroupLog(const GroupLog&) = delete;
  GroupLog& operator=(const GroupLog&) = delete;

  // Writes one record after every record written before, and returns where its frame
  // lies; it is durable once wait_durable(end) returned. Thread-safe. Throws QueueError
  // (nothing is reported written; bytes left part written lie past the end, where the
  // next record goes).
  struct Written {
    uint64_t offset = 0;  // of the frame
    uint64_t end = 0;     // just past it
  };
  Written write(std::string_view record);
  // Returns once every frame before `end` is durable: a caller waits at most for the
  // sync under way and the next, which it makes if no one else does. Throws QueueError
  // once a sync failed (the log is poisoned).
  void wait_durable(uint64_t end);
  // write() then wait_durable(): returns the frame's offset once the record is durable.
  uint64_t append(std::string_view record);

  // The record whose frame is at `offset` (from write() or read_log()). Throws
  // CorruptRecord unless a whole, valid frame is there, QueueError if it cannot be read.
  std::string read(uint64_t offset) const;

  // Bytes in the file, whole records only; and how many appends and syncs were made.
  uint64_t size() const;
  struct Stats {
    uint64_t appends = 0;
    uint64_t syncs = 0;
  };
  Stats stats() const;

 private:
  FileSystem& fs_;
  std::string path_;
  posix::Fd fd_;
  mutable std::mutex mu_;
  std::condition_variable synced_;
  uint64_t end_ = 0;      // where the next frame goes
  uint64_t durable_ = 0;  // every frame before this offset is synced
  bool syncing_ = false;  // a writer is in fdatasync, with mu_ released
  std::string poisoned_;  // why the log refuses appends; empty while it is sound
  Stats stats_;
};

// Calls each(offset, payload) for every whole, valid record of the log file `fd` from
// its start, and returns the offset after the last: where a torn tail begins, if any.
// Throws QueueError if the file cannot be read.
uint64_t read_log(FileSystem& fs, int fd, const std::string& path,
                  const std::function<void(uint64_t, std::string_view)>& each);

// The 8-byte frame header of `payload`, and the bytes of its whole frame.
std::string frame_header(std::string_view payload);
inline constexpr uint64_t kFrameHeaderBytes = 8;
inline uint64_t frame_size(std::string_view payload) { return kFrameHeaderBytes + payload.size(); }

}  // namespace slimta::disk
