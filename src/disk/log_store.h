// The messages of the log-structured spool (issue 28) over a SegmentLog: each message
// is the record of its write ('M', the stored record of doc/format.md) and, once its
// metadata changed, the latest metadata record after it ('U'); a removal appends a
// tombstone ('D'). An index in memory, rebuilt from the segments at start, says where
// each message's records lie, and how many bytes of each segment are still live.
//
// Compaction copies what is live in a mostly-dead sealed segment (a message with its
// latest metadata merged into one 'M', a tombstone still needed) into the newest
// segment, waits until the copies are durable, then deletes the old segment: the only
// copy is never lost, and a crash between leaves both, the later one winning at start.
// One message at a time is copied under the index's lock, so writers are held up by one
// copy at most, never by a whole segment.
//
// A tombstone is needed while a segment older than its own, from the first that held a
// record of its message, still exists: otherwise a start would find the message's
// records there and take it for stored.
//
// Each record of the log is: u8 kind ('M', 'U' or 'D'), u8 id length, the id, then the
// stored record (for 'M' and 'U'; nothing for 'D').
//
// A checkpoint (the file "checkpoint" beside the segments, replaced whole by a rename)
// holds the index as of a place in the log, every record before it durable: a start
// loads it and reads only the records after that place, instead of every segment.
// Entries that point into a segment deleted since are of messages removed since (a live
// record is copied before its segment goes, and the copy comes after the place), and
// are dropped. A checkpoint that is not whole and valid is ignored (the whole log read).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/record.h"
#include "disk/segment_log.h"

namespace slimta::disk {

class LogStore {
 public:
  struct Options {
    uint64_t segment_bytes = 64ull << 20;
  };
  // Opens (or begins) the log in the directory `dirfd`, `path` naming it in errors, and
  // rebuilds the index from it. Throws QueueError, CorruptRecord for a record that is
  // whole but not one of ours.
  LogStore(FileSystem& fs, int dirfd, std::string path, Options options);

  // Stores `record` (a message record) as `id`, durably. InvalidArgument if `id` is
  // stored already.
  void put(std::string_view id, std::string_view record);
  // Read-modify-write of the metadata of `id`, atomic against every other change of the
  // message: `change` gets the current metadata and says whether it changed it; if so, a
  // metadata record goes to the log, durable before update() returns. KeyError if `id`
  // is not stored. Whatever `change` throws goes to the caller, nothing changed.
  bool update(std::string_view id, const std::function<bool(record::Metadata&)>& change);
  // Removes `id` durably; false if it was not stored.
  bool remove(std::string_view id);
  // The message with its current metadata. KeyError if `id` is not stored.
  record::Message get(std::string_view id) const;
  record::Metadata metadata(std::string_view id) const;
  bool contains(std::string_view id) const;
  std::vector<std::string> ids() const;

  // Writes a checkpoint of the index as it is now (the writers held up while it is
  // copied, not while it is written). Throws QueueError.
  void checkpoint();

  // Compacts every sealed segment of which at most `live_ratio` of the bytes are live.
  // Returns how many segments it deleted.
  size_t compact(double live_ratio);

  struct Stats {
    uint64_t messages = 0;
    uint64_t segments = 0;
    uint64_t bytes = 0;       // in every segment
    uint64_t live_bytes = 0;  // of the records that the index points at
    uint64_t syncs = 0;
    bool from_checkpoint = false;  // whether the start loaded one
  };
  Stats stats() const;

 private:
  using Location = SegmentLog::Location;
  struct Entry {
    Location message;                // its latest 'M'
    std::optional<Location> update;  // its latest 'U' after that
    uint64_t oldest = 0;             // the first segment that held a record of it
  };

  void apply(const Location& at, std::string_view record);  // one record at start
  // Loads the checkpoint into the index, if there is a valid one, and returns where the
  // log is to be read from.
  std::optional<Location> load_checkpoint(FileSystem& fs, int dirfd);
  void forget_gone_segments();
  void set_message(const std::string& id, const Location& at);
  void drop(const std::string& id);
  void add_live(const Location& at, int64_t sign);
  // The stored record in the log record at `at` (which must be of `id`).
  std::string stored_at(const Location& at, std::string_view id) const;
  record::Message read_message(const Entry& e, std::string_view id) const;
  record::Metadata metadata_locked(const Entry& e, const std::string& id) const;
  std::string what(std::string_view id) const;
  bool tombstone_needed(const std::string& id, uint64_t segment) const;
  void compact_segment(uint64_t segment);

  std::string path_;
  mutable std::mutex mu_;  // the index, and the order of each message's records
  std::unordered_map<std::string, Entry> index_;
  std::unordered_map<std::string, uint64_t> removed_;  // tombstones: id -> oldest segment
  std::map<uint64_t, uint64_t> live_;                  // bytes live, by segment
  FileSystem& fs_;
  int dirfd_;
  bool from_checkpoint_ = false;
  SegmentLog log_;  // last: its replay fills the above
};

}  // namespace slimta::disk
