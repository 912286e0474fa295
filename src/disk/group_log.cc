#include "disk/group_log.h"

#include <fcntl.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "core/big_endian.h"
#include "slimta/errors.h"

namespace slimta::disk {
namespace {

constexpr size_t kFrameHeader = kFrameHeaderBytes;

using big_endian::get_u32;
using big_endian::put_u32;

uint32_t checksum(std::string_view payload) {
  // zlib's crc32 takes a uInt length: fed in pieces for a payload over 4 GiB (which
  // append() refuses anyway).
  uLong crc = crc32(0L, Z_NULL, 0);
  while (!payload.empty()) {
    auto n = static_cast<uInt>(std::min<size_t>(payload.size(), 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(payload.data()), n);
    payload.remove_prefix(n);
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace

std::string frame_header(std::string_view payload) {
  std::string out;
  out.reserve(kFrameHeader);
  put_u32(out, static_cast<uint32_t>(payload.size()));
  put_u32(out, checksum(payload));
  return out;
}

uint64_t read_log(FileSystem& fs, int fd, const std::string& path,
                  const std::function<void(uint64_t, std::string_view)>& each) {
  const std::string bytes = posix::read_file(fs, fd, path);
  std::string_view rest = bytes;
  uint64_t offset = 0;
  while (rest.size() >= kFrameHeader) {
    const uint32_t len = get_u32(rest);
    if (rest.size() - kFrameHeader < len) break;  // cut short
    std::string_view payload = rest.substr(kFrameHeader, len);
    if (checksum(payload) != get_u32(rest.substr(4))) break;  // half there
    each(offset, payload);
    offset += kFrameHeader + len;
    rest.remove_prefix(kFrameHeader + len);
  }
  return offset;
}

GroupLog::GroupLog(FileSystem& fs, int dirfd, const std::string& name, const std::string& path,
                   const std::function<void(uint64_t, std::string_view)>& each, bool read)
    : fs_(fs), path_(path) {
  fd_ = posix::open_at(fs_, dirfd, name, O_RDWR | O_CLOEXEC, 0, path_, /*missing_ok=*/true);
  if (!fd_) {
    fd_ = posix::open_at(fs_, dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0640, path_);
    posix::sync_all(fs_, dirfd, path_ + " (its directory)");
  }
  if (!read) {
    durable_ = end_ = static_cast<uint64_t>(posix::file_size(fs_, fd_.get(), path_));
    return;
  }
  end_ = read_log(fs_, fd_.get(), path_, [&](uint64_t offset, std::string_view record) {
    if (each) each(offset, record);
  });
  if (static_cast<uint64_t>(posix::file_size(fs_, fd_.get(), path_)) != end_) {
    // A torn tail: cut off, and the cut made durable before anything is appended
    // after it (else a crash could bring the torn bytes back between two records).
    if (fs_.ftruncate(fd_.get(), static_cast<off_t>(end_)) != 0)
      posix::io_error("ftruncate", path_, errno);
    posix::sync_data(fs_, fd_.get(), path_);
  }
  durable_ = end_;
}

GroupLog::Written GroupLog::write(std::string_view record) {
  if (record.size() > std::numeric_limits<uint32_t>::max())
    throw InvalidArgument("a record of " + std::to_string(record.size()) +
                          " bytes is over the log's 4 GiB limit");
  std::string frame = frame_header(record);
  frame.append(record);
  std::lock_guard lock(mu_);
  if (!poisoned_.empty()) throw QueueError(poisoned_, true);
  // Written under the lock, so that frames lie in the order of their offsets and a sync
  // that begins covers every frame before end_. Copying into the page cache is short
  // next to a sync, which is made with the lock released. Bytes of a frame left part
  // written by an error lie past end_: the next write goes over them, and a reader
  // stops at them meanwhile, so there is nothing to undo.
  const uint64_t offset = end_;
  for (size_t done = 0; done < frame.size();) {
    ssize_t n = fs_.pwrite(fd_.get(), frame.data() + done, frame.size() - done,
                           static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) posix::io_error("append to", path_, n == 0 ? ENOSPC : errno);
    done += static_cast<size_t>(n);
  }
  end_ += frame.size();
  ++stats_.appends;
  return {offset, end_};
}

void GroupLog::wait_durable(uint64_t end) {
  std::unique_lock lock(mu_);
  while (durable_ < end) {
    if (!poisoned_.empty()) throw QueueError(poisoned_, true);
    if (syncing_) {
      synced_.wait(lock);  // the sync under way, or the next, covers this frame
      continue;
    }
    syncing_ = true;
    const uint64_t target = end_;
    lock.unlock();
    const int rc = fs_.fdatasync(fd_.get());
    const int err = errno;
    lock.lock();
    syncing_ = false;
    if (rc != 0) {
      poisoned_ = "fdatasync " + path_ + ": " + std::strerror(err) +
                  " (the log takes no more appends until it is reopened)";
    } else {
      durable_ = target;
      ++stats_.syncs;
    }
    synced_.notify_all();
  }
}

uint64_t GroupLog::append(std::string_view record) {
  const Written at = write(record);
  wait_durable(at.end);
  return at.offset;
}

std::string GroupLog::read(uint64_t offset) const {
  const std::string where = path_ + " at offset " + std::to_string(offset);
  std::string header =
      posix::read_at(fs_, fd_.get(), kFrameHeader, static_cast<off_t>(offset), path_);
  if (header.size() < kFrameHeader) throw CorruptRecord("no whole record in " + where);
  const uint32_t len = get_u32(header);
  std::string payload =
      posix::read_at(fs_, fd_.get(), len, static_cast<off_t>(offset + kFrameHeader), path_);
  if (payload.size() != len || checksum(payload) != get_u32(std::string_view(header).substr(4)))
    throw CorruptRecord("no whole record in " + where + " (cut short, or its checksum is wrong)");
  return payload;
}

uint64_t GroupLog::size() const {
  std::lock_guard lock(mu_);
  return end_;
}

GroupLog::Stats GroupLog::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace slimta::disk
