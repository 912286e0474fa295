#include "disk/segment_log.h"

#include <fcntl.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "slimta/errors.h"

namespace slimta::disk {

namespace {
constexpr std::string_view kSuffix = ".seg";
constexpr size_t kSeqDigits = 16;
}  // namespace

std::string segment_name(uint64_t seq) {
  char buf[kSeqDigits + 1];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(seq));
  return std::string(buf) + std::string(kSuffix);
}

std::optional<uint64_t> segment_seq(std::string_view name) {
  if (name.size() != kSeqDigits + kSuffix.size() || !name.ends_with(kSuffix)) return std::nullopt;
  uint64_t seq = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + kSeqDigits, seq, 16);
  if (ec != std::errc() || end != name.data() + kSeqDigits) return std::nullopt;
  if (!std::all_of(name.begin(), name.begin() + kSeqDigits,
                   [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
    return std::nullopt;
  return seq;
}

SegmentLog::SegmentLog(FileSystem& fs, int dirfd, std::string path, uint64_t segment_bytes,
                       const Replay& replay, std::optional<Location> start)
    : fs_(fs), dirfd_(dirfd), path_(std::move(path)), segment_bytes_(segment_bytes) {
  if (segment_bytes_ == 0) throw InvalidArgument("a log segment must hold more than 0 bytes");
  const Location from = start.value_or(Location{});
  std::vector<uint64_t> found;
  posix::DirHandle dir(posix::open_at(fs_, dirfd_, ".", O_RDONLY | O_DIRECTORY, 0, path_));
  for (std::string name; !(name = dir.next(path_)).empty();)
    if (auto seq = segment_seq(name)) found.push_back(*seq);
  std::sort(found.begin(), found.end());
  if (found.empty()) found.push_back(std::max<uint64_t>(1, from.segment));
  for (uint64_t seq : found) {
    const bool newest = seq == found.back();
    if (seq < from.segment && !newest) {
      open_segment(seq, {}, /*read=*/false);
      continue;
    }
    open_segment(seq, [&](uint64_t offset, std::string_view record) {
      if (seq == from.segment && offset < from.offset) return;
      replay(Location{seq, offset, offset + frame_size(record)}, record);
    });
  }
}

std::shared_ptr<GroupLog> SegmentLog::open_segment(
    uint64_t seq, const std::function<void(uint64_t, std::string_view)>& each, bool read) {
  auto log = std::make_shared<GroupLog>(fs_, dirfd_, segment_name(seq),
                                        path_ + "/" + segment_name(seq), each, read);
  segments_[seq] = log;
  return log;
}

std::shared_ptr<GroupLog> SegmentLog::segment(uint64_t seq) const {
  std::lock_guard lock(mu_);
  auto it = segments_.find(seq);
  if (it == segments_.end())
    throw QueueError(path_ + "/" + segment_name(seq) + " is gone (compacted)", true);
  return it->second;
}

SegmentLog::Location SegmentLog::write(std::string_view record) {
  std::lock_guard lock(mu_);
  auto newest = std::prev(segments_.end());
  uint64_t seq = newest->first;
  std::shared_ptr<GroupLog> log = newest->second;
  if (log->size() > 0 && log->size() + frame_size(record) > segment_bytes_) {
    // Sealed durable whole before the next segment takes a record: one order.
    log->wait_durable(log->size());
    log = open_segment(++seq);
  }
  GroupLog::Written at = log->write(record);
  return Location{seq, at.offset, at.end};
}

void SegmentLog::wait(const Location& at) { segment(at.segment)->wait_durable(at.end); }

SegmentLog::Location SegmentLog::append(std::string_view record) {
  Location at = write(record);
  wait(at);
  return at;
}

std::string SegmentLog::read(const Location& at) const {
  return segment(at.segment)->read(at.offset);
}

std::vector<uint64_t> SegmentLog::sealed() const {
  std::lock_guard lock(mu_);
  std::vector<uint64_t> out;
  for (const auto& [seq, log] : segments_) out.push_back(seq);
  out.pop_back();
  return out;
}

uint64_t SegmentLog::newest() const {
  std::lock_guard lock(mu_);
  return segments_.rbegin()->first;
}

void SegmentLog::scan(uint64_t seq, const Replay& each) const {
  {
    std::lock_guard lock(mu_);
    if (!segments_.contains(seq)) return;
  }
  const std::string name = segment_name(seq);
  posix::Fd fd = posix::open_at(fs_, dirfd_, name, O_RDONLY | O_CLOEXEC, 0, path_ + "/" + name);
  read_log(fs_, fd.get(), path_ + "/" + name, [&](uint64_t offset, std::string_view record) {
    each(Location{seq, offset, offset + frame_size(record)}, record);
  });
}

uint64_t SegmentLog::size(uint64_t seq) const {
  std::lock_guard lock(mu_);
  auto it = segments_.find(seq);
  return it == segments_.end() ? 0 : it->second->size();
}

void SegmentLog::remove(uint64_t seq) {
  std::lock_guard lock(mu_);
  auto it = segments_.find(seq);
  if (it == segments_.end()) return;
  if (std::next(it) == segments_.end())
    throw InvalidArgument("the newest log segment " + segment_name(seq) +
                          " takes records: not removed");
  posix::unlink_at(fs_, dirfd_, segment_name(seq), path_ + "/" + segment_name(seq));
  posix::sync_all(fs_, dirfd_, path_ + " (its directory)");
  retired_syncs_ += it->second->stats().syncs;
  segments_.erase(it);
}

SegmentLog::Location SegmentLog::tail() const {
  std::lock_guard lock(mu_);
  auto newest = std::prev(segments_.end());
  const uint64_t end = newest->second->size();
  return Location{newest->first, end, end};
}

bool SegmentLog::has(uint64_t seq) const {
  std::lock_guard lock(mu_);
  return segments_.contains(seq);
}

uint64_t SegmentLog::syncs() const {
  std::lock_guard lock(mu_);
  uint64_t n = retired_syncs_;
  for (const auto& [seq, log] : segments_) n += log->stats().syncs;
  return n;
}

}  // namespace slimta::disk
