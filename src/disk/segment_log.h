// The log of the log-structured spool (issue 28) as a directory of segment files, each
// a GroupLog (disk/group_log.h) named by its sequence number, 16 hex digits and ".seg".
// Records go to the newest segment; when it would grow past `segment_bytes` a new one
// is begun, so that compaction can copy the live records out of an old segment and
// delete the whole file, and a start reads the segments in order.
//
// One order for every record: a segment is synced whole before the next one takes a
// record, so what a power loss keeps is always a prefix of that order (a record is never
// kept while one written before it is lost). A caller that acted on a record not yet
// durable writes its own record after it: both are kept, or what it acted on is lost
// with it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "disk/file_system.h"
#include "disk/group_log.h"
#include "disk/posix_file.h"

namespace slimta::disk {

class SegmentLog {
 public:
  struct Location {
    uint64_t segment = 0;  // its sequence number
    uint64_t offset = 0;   // of the record's frame
    uint64_t end = 0;      // just past the frame

    bool operator==(const Location&) const = default;
  };
  using Replay = std::function<void(const Location&, std::string_view record)>;

  // Opens the log in the directory `dirfd` (`path` names it in errors): calls `replay`
  // for every record of every segment from `from` on (a checkpoint's place; the start
  // by default), oldest segment first and each in order, then takes records after the
  // last (a torn tail cut off). The sealed segments before `from` are not read. Throws
  // QueueError.
  SegmentLog(FileSystem& fs, int dirfd, std::string path, uint64_t segment_bytes,
             const Replay& replay, std::optional<Location> from = std::nullopt);
  SegmentLog(const SegmentLog&) = delete;
  SegmentLog& operator=(const SegmentLog&) = delete;

  // Writes `record` after every record written before, beginning a new segment first
  // when the newest would grow past segment_bytes (unless it is empty), and returns
  // where; it is durable once wait() returned. Thread-safe. Throws QueueError.
  Location write(std::string_view record);
  // Returns once the record at `at` (and every one before it) is durable: group commit.
  void wait(const Location& at);
  Location append(std::string_view record);

  // The record at `at`. Throws CorruptRecord if it is not there whole, QueueError if its
  // segment was deleted or cannot be read.
  std::string read(const Location& at) const;

  // The segments that take no more records, oldest first; and the one that does.
  std::vector<uint64_t> sealed() const;
  uint64_t newest() const;
  // Calls `each` for every record of a segment, in order, reading its file (nothing if
  // there is no such segment). Throws QueueError.
  void scan(uint64_t segment, const Replay& each) const;
  // The bytes of whole records in a segment (0 if there is no such segment).
  uint64_t size(uint64_t segment) const;
  // Deletes a sealed segment, durably (the directory is synced). InvalidArgument for
  // the newest one. A read of a record in it throws afterwards.
  void remove(uint64_t segment);

  // Where the next record goes (its segment, and offset and end both at the end).
  Location tail() const;
  // Whether a segment exists.
  bool has(uint64_t segment) const;

  // Syncs made, over every segment opened since the start.
  uint64_t syncs() const;

 private:
  std::shared_ptr<GroupLog> segment(uint64_t seq) const;
  std::shared_ptr<GroupLog> open_segment(
      uint64_t seq, const std::function<void(uint64_t, std::string_view)>& each = {},
      bool read = true);

  FileSystem& fs_;
  int dirfd_;
  std::string path_;
  uint64_t segment_bytes_;
  mutable std::mutex mu_;  // segments_, and the order of writes across segments
  std::map<uint64_t, std::shared_ptr<GroupLog>> segments_;
  uint64_t retired_syncs_ = 0;  // of the segments removed
};

// The file name of segment `seq`, and the sequence number a file name gives (nullopt
// unless it is one).
std::string segment_name(uint64_t seq);
std::optional<uint64_t> segment_seq(std::string_view name);

}  // namespace slimta::disk
