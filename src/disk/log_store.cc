#include "disk/log_store.h"

#include <spdlog/spdlog.h>

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include "core/big_endian.h"
#include "slimta/errors.h"

namespace slimta::disk {

namespace {

constexpr char kMessage = 'M', kUpdate = 'U', kRemoved = 'D';

std::string log_record(char kind, std::string_view id, std::string_view body) {
  std::string out;
  out.reserve(2 + id.size() + body.size());
  out += kind;
  out += static_cast<char>(id.size());
  out.append(id);
  out.append(body);
  return out;
}

struct Parsed {
  char kind = 0;
  std::string_view id, body;
};
std::optional<Parsed> parse(std::string_view record) {
  if (record.size() < 2) return std::nullopt;
  const size_t n = static_cast<unsigned char>(record[1]);
  if (record.size() < 2 + n) return std::nullopt;
  Parsed p{record[0], record.substr(2, n), record.substr(2 + n)};
  if (p.kind != kMessage && p.kind != kUpdate && p.kind != kRemoved) return std::nullopt;
  if (!is_valid_id(p.id)) return std::nullopt;
  return p;
}

}  // namespace

LogStore::LogStore(FileSystem& fs, int dirfd, std::string path, Options options)
    : path_(std::move(path)),
      fs_(fs),
      dirfd_(dirfd),
      log_(
          fs, dirfd, path_, options.segment_bytes,
          [this](const Location& at, std::string_view record) { apply(at, record); },
          load_checkpoint(fs, dirfd)) {
  forget_gone_segments();
}

void LogStore::forget_gone_segments() {
  std::vector<uint64_t> segments = log_.sealed();
  segments.push_back(log_.newest());
  auto exists = [&](uint64_t segment) {
    return std::binary_search(segments.begin(), segments.end(), segment);
  };
  for (auto it = index_.begin(); it != index_.end();) {
    const Entry& e = it->second;
    if (!exists(e.message.segment) || (e.update && !exists(e.update->segment))) {
      it = index_.erase(it);  // removed since the checkpoint (see the header)
    } else {
      ++it;
    }
  }
  for (auto it = live_.begin(); it != live_.end();)
    it = exists(it->first) ? std::next(it) : live_.erase(it);
  for (uint64_t segment : segments) live_[segment];  // every segment has an entry
}

namespace {

constexpr std::string_view kCheckpoint = "checkpoint";
constexpr std::string_view kCheckpointMagic = "SLMTAIDX\x01";

void put_location(std::string& out, const SegmentLog::Location& at) {
  big_endian::put_u64(out, at.segment);
  big_endian::put_u64(out, at.offset);
  big_endian::put_u64(out, at.end);
}

// Reads a checkpoint's fields in turn; any read past the end throws CorruptRecord.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  uint64_t u64() {
    need(8);
    uint64_t v = big_endian::get_u64(data_);
    data_.remove_prefix(8);
    return v;
  }
  uint8_t u8() {
    need(1);
    uint8_t v = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return v;
  }
  std::string id() {
    size_t n = u8();
    need(n);
    std::string v(data_.substr(0, n));
    data_.remove_prefix(n);
    return v;
  }
  SegmentLog::Location location() {
    SegmentLog::Location at;
    at.segment = u64();
    at.offset = u64();
    at.end = u64();
    return at;
  }
  bool done() const { return data_.empty(); }

 private:
  void need(size_t n) const {
    if (data_.size() < n) throw CorruptRecord("the checkpoint ends early");
  }
  std::string_view data_;
};

}  // namespace

std::optional<SegmentLog::Location> LogStore::load_checkpoint(FileSystem& fs, int dirfd) {
  const std::string where = path_ + "/" + std::string(kCheckpoint);
  posix::Fd fd = posix::open_at(fs, dirfd, std::string(kCheckpoint), O_RDONLY | O_CLOEXEC, 0, where,
                                /*missing_ok=*/true);
  if (!fd) return std::nullopt;
  std::optional<std::string> payload;
  read_log(fs, fd.get(), where, [&](uint64_t, std::string_view p) {
    if (!payload) payload = std::string(p);
  });
  try {
    if (!payload || !payload->starts_with(kCheckpointMagic))
      throw CorruptRecord("it is not whole, or not a checkpoint");
    Reader r(std::string_view(*payload).substr(kCheckpointMagic.size()));
    Location from = r.location();
    for (uint64_t n = r.u64(); n > 0; --n) {
      std::string id = r.id();
      Entry e;
      e.message = r.location();
      if (r.u8()) e.update = r.location();
      e.oldest = r.u64();
      index_.emplace(std::move(id), e);
    }
    for (uint64_t n = r.u64(); n > 0; --n) {
      std::string id = r.id();
      removed_[std::move(id)] = r.u64();
    }
    for (uint64_t n = r.u64(); n > 0; --n) {
      uint64_t segment = r.u64();
      live_[segment] = r.u64();
    }
    if (!r.done()) throw CorruptRecord("it has bytes after its end");
    from_checkpoint_ = true;
    return from;
  } catch (const CorruptRecord& e) {
    spdlog::warn("{}: ignored ({}): the whole log is read instead", where, e.what());
    index_.clear();
    removed_.clear();
    live_.clear();
    return std::nullopt;
  }
}

void LogStore::checkpoint() {
  std::string out(kCheckpointMagic);
  Location at;
  {
    std::lock_guard lock(mu_);
    at = log_.tail();
    out.reserve(out.size() + index_.size() * 90);
    put_location(out, at);
    big_endian::put_u64(out, index_.size());
    for (const auto& [id, e] : index_) {
      out += static_cast<char>(id.size());
      out += id;
      put_location(out, e.message);
      out += static_cast<char>(e.update ? 1 : 0);
      if (e.update) put_location(out, *e.update);
      big_endian::put_u64(out, e.oldest);
    }
    big_endian::put_u64(out, removed_.size());
    for (const auto& [id, oldest] : removed_) {
      out += static_cast<char>(id.size());
      out += id;
      big_endian::put_u64(out, oldest);
    }
    big_endian::put_u64(out, live_.size());
    for (const auto& [segment, live] : live_) {
      big_endian::put_u64(out, segment);
      big_endian::put_u64(out, live);
    }
  }
  log_.wait(at);  // what it reflects is durable before it says so
  const std::string tmp = std::string(kCheckpoint) + ".tmp";
  const std::string where = path_ + "/" + tmp;
  {
    posix::Fd fd =
        posix::open_at(fs_, dirfd_, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600, where);
    posix::write_all(fs_, fd.get(), {frame_header(out), out}, where);
    posix::sync_data(fs_, fd.get(), where);
  }
  if (fs_.renameat2(dirfd_, tmp.c_str(), dirfd_, std::string(kCheckpoint).c_str(), 0) != 0)
    posix::io_error("rename", where, errno);
  posix::sync_all(fs_, dirfd_, path_ + " (its directory)");
}

std::string LogStore::what(std::string_view id) const {
  return path_ + ": message " + std::string(id);
}

// A sign of 0 only notes that the segment exists.
void LogStore::add_live(const Location& at, int64_t sign) {
  live_[at.segment] += static_cast<uint64_t>(sign * static_cast<int64_t>(at.end - at.offset));
}

void LogStore::set_message(const std::string& id, const Location& at) {
  auto [it, fresh] = index_.try_emplace(id);
  Entry& e = it->second;
  if (!fresh) {
    add_live(e.message, -1);
    if (e.update) add_live(*e.update, -1);
  }
  e = Entry{at, std::nullopt, fresh ? at.segment : std::min(e.oldest, at.segment)};
  add_live(at, +1);
  removed_.erase(id);
}

void LogStore::drop(const std::string& id) {
  auto it = index_.find(id);
  uint64_t oldest = 0;  // unknown (its records' segments are gone): any older one counts
  if (it != index_.end()) {
    add_live(it->second.message, -1);
    if (it->second.update) add_live(*it->second.update, -1);
    oldest = it->second.oldest;
    index_.erase(it);
  }
  removed_[id] = oldest;
}

void LogStore::apply(const Location& at, std::string_view record) {
  auto p = parse(record);
  if (!p) {
    throw CorruptRecord(path_ + ": segment " + std::to_string(at.segment) + " at offset " +
                        std::to_string(at.offset) + " holds a record that is not the spool's");
  }
  std::string id(p->id);
  if (p->kind == kMessage) {
    set_message(id, at);
  } else if (p->kind == kUpdate) {
    auto it = index_.find(id);
    if (it == index_.end()) return;  // of a message since removed, or copied on
    if (it->second.update) add_live(*it->second.update, -1);
    it->second.update = at;
    add_live(at, +1);
  } else {
    drop(id);
    add_live(at, 0);
  }
}

void LogStore::put(std::string_view id, std::string_view record) {
  check_id(id);
  Location at;
  {
    std::lock_guard lock(mu_);
    if (index_.contains(std::string(id))) throw InvalidArgument(what(id) + " is stored already");
    at = log_.write(log_record(kMessage, id, record));
    set_message(std::string(id), at);
  }
  log_.wait(at);
}

std::string LogStore::stored_at(const Location& at, std::string_view id) const {
  std::string r = log_.read(at);
  auto p = parse(r);
  if (!p || p->id != id)
    throw CorruptRecord(what(id) + ": its record in segment " + std::to_string(at.segment) +
                        " at offset " + std::to_string(at.offset) + " is another's");
  r.erase(0, 2 + id.size());
  return r;
}

record::Message LogStore::read_message(const Entry& e, std::string_view id) const {
  record::Message m = record::decode_message(stored_at(e.message, id), what(id));
  if (e.update) m.meta = record::decode(stored_at(*e.update, id), what(id)).meta;
  return m;
}

record::Metadata LogStore::metadata_locked(const Entry& e, const std::string& id) const {
  return record::decode(stored_at(e.update ? *e.update : e.message, id), what(id)).meta;
}

bool LogStore::update(std::string_view id, const std::function<bool(record::Metadata&)>& change) {
  Location at;
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(std::string(id));
    if (it == index_.end()) throw KeyError(std::string(id));
    record::Metadata meta = metadata_locked(it->second, it->first);
    if (!change(meta)) return false;
    at = log_.write(log_record(kUpdate, id, record::encode(meta, nullptr)));
    if (it->second.update) add_live(*it->second.update, -1);
    it->second.update = at;
    add_live(at, +1);
  }
  log_.wait(at);
  return true;
}

bool LogStore::remove(std::string_view id) {
  Location at;
  {
    std::lock_guard lock(mu_);
    if (!index_.contains(std::string(id))) return false;
    at = log_.write(log_record(kRemoved, id, ""));
    drop(std::string(id));
    add_live(at, 0);
  }
  log_.wait(at);
  return true;
}

record::Message LogStore::get(std::string_view id) const {
  Entry e;
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(std::string(id));
    if (it == index_.end()) throw KeyError(std::string(id));
    e = it->second;
  }
  // Read outside the lock: a record's place never changes while its segment exists, and
  // a segment compacted away meanwhile is read again at the copy's place.
  try {
    return read_message(e, id);
  } catch (const CorruptRecord&) {
    throw;
  } catch (const QueueError&) {
    std::lock_guard lock(mu_);
    auto it = index_.find(std::string(id));
    if (it == index_.end()) throw KeyError(std::string(id));
    if (it->second.message == e.message && it->second.update == e.update) throw;
  }
  return get(id);
}

record::Metadata LogStore::metadata(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = index_.find(std::string(id));
  if (it == index_.end()) throw KeyError(std::string(id));
  return metadata_locked(it->second, it->first);
}

bool LogStore::contains(std::string_view id) const {
  std::lock_guard lock(mu_);
  return index_.contains(std::string(id));
}

std::vector<std::string> LogStore::ids() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [id, e] : index_) out.push_back(id);
  return out;
}

bool LogStore::tombstone_needed(const std::string& id, uint64_t segment) const {
  auto it = removed_.find(id);
  if (it == removed_.end()) return false;
  auto older = live_.lower_bound(it->second);  // live_ has every segment that exists
  return older != live_.end() && older->first < segment;
}

void LogStore::compact_segment(uint64_t segment) {
  std::optional<Location> last;  // the last copy written
  log_.scan(segment, [&](const Location& at, std::string_view record) {
    auto p = parse(record);
    if (!p) return;
    std::string id(p->id);
    std::lock_guard lock(mu_);
    if (p->kind == kRemoved) {
      if (tombstone_needed(id, segment)) {
        last = log_.write(log_record(kRemoved, id, ""));
        add_live(*last, 0);
      } else {
        removed_.erase(id);
      }
      return;
    }
    auto it = index_.find(id);
    if (it == index_.end()) return;
    Entry& e = it->second;
    const bool live = e.message == at || (e.update && *e.update == at);
    if (!live) return;
    // The message with its latest metadata, as one record in the newest segment.
    record::Message m = read_message(e, id);
    Location copy = log_.write(log_record(kMessage, id, record::encode(m.meta, &m.envelope)));
    set_message(id, copy);
    last = copy;
  });
  if (last) log_.wait(*last);  // the copies are durable before the only other goes
  std::lock_guard lock(mu_);
  log_.remove(segment);
  live_.erase(segment);
}

size_t LogStore::compact(double live_ratio) {
  size_t deleted = 0;
  for (uint64_t segment : log_.sealed()) {
    uint64_t live = 0;
    {
      std::lock_guard lock(mu_);
      live = live_[segment];
    }
    const uint64_t size = log_.size(segment);
    if (size > 0 && static_cast<double>(live) > live_ratio * static_cast<double>(size)) continue;
    compact_segment(segment);
    ++deleted;
  }
  return deleted;
}

LogStore::Stats LogStore::stats() const {
  std::lock_guard lock(mu_);
  Stats s;
  s.messages = index_.size();
  for (const auto& [segment, live] : live_) {
    s.live_bytes += live;
    s.bytes += log_.size(segment);
  }
  s.segments = live_.size();
  s.syncs = log_.syncs();
  s.from_checkpoint = from_checkpoint_;
  return s;
}

}  // namespace slimta::disk
