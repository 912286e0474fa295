// DiskStorage's Destinations: a state file per destination under the spool,
// destinations/dHEX(NAME) (the name may come from a recipient's domain: hex keeps it
// a plain file name; the "d" gives the empty name, the default destination, one), holding
// shaping::DestinationState as "key value" lines. Each change locks the file (flock, so a process
// that dies lets go at once), reads it, applies the rule and writes it back: one count of slots,
// one bucket and one health for every process of the host. Not synced: the state is advice about
// the next minutes, and a crash loses at most a slot that would have run out anyway.
#include "disk/destinations.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/destination_state.h"
#include "core/hex.h"
#include "slimta/errors.h"

namespace slimta::disk {
namespace {

class DiskDestinations : public Destinations {
 public:
  DiskDestinations(std::string dir, const Clock& clock) : dir_(std::move(dir)), clock_(clock) {}

  SlotGrant acquire(const std::string& destination, const DestinationLimits& limits,
                    std::chrono::milliseconds lease) override {
    SlotGrant g;
    change(destination,
           [&](shaping::DestinationState& s, Timestamp now) { g = s.acquire(limits, lease, now); });
    return g;
  }
  void renew(const std::string& destination, uint64_t slot,
             std::chrono::milliseconds lease) override {
    change(destination,
           [&](shaping::DestinationState& s, Timestamp now) { s.renew(slot, lease, now); });
  }
  void release(const std::string& destination, uint64_t slot, bool reachable,
               std::string_view reply, const DownPolicy& down) override {
    change(destination, [&](shaping::DestinationState& s, Timestamp now) {
      s.release(slot, reachable, reply, down, now);
    });
  }
  void suspend(const std::string& destination, Timestamp until, std::string_view reason) override {
    change(destination, [&](shaping::DestinationState& s, Timestamp) {
      s.suspended_until = until;
      s.suspend_reason = std::string(reason);
    });
  }
  void resume(const std::string& destination) override {
    change(destination, [&](shaping::DestinationState& s, Timestamp) {
      s.suspended_until = 0;
      s.suspend_reason.clear();
      s.forget_failures();
    });
  }
  void forget_failures(const std::string& destination) override {
    change(destination, [&](shaping::DestinationState& s, Timestamp) { s.forget_failures(); });
  }
  std::vector<DestinationStatus> status() override {
    std::vector<DestinationStatus> out;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
      std::string file = entry.path().filename().string();
      std::optional<std::string> name;
      if (file.starts_with("d")) name = from_hex(std::string_view(file).substr(1));
      if (!name) continue;  // not ours
      change(*name, [&](shaping::DestinationState& s, Timestamp now) {
        out.push_back(s.status(*name, now));
      });
    }
    if (ec) throw QueueError("cannot list " + dir_ + ": " + ec.message(), true);
    shaping::sort_by_name(out);
    return out;
  }

 private:
  // Locks NAME's file, reads it, runs fn, writes it back (or removes it when idle).
  template <class Fn>
  void change(const std::string& name, Fn fn) {
    std::string path = dir_ + "/d" + to_hex(name);
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) fail("open", path);
    struct Close {
      int fd;
      ~Close() { ::close(fd); }
    } close{fd};
    if (::flock(fd, LOCK_EX) != 0) fail("lock", path);
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(text.size()))) != 0;) {
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("read", path);
      }
      text.append(buf, static_cast<size_t>(n));
    }
    shaping::DestinationState state = shaping::DestinationState::parse(text);
    Timestamp now = clock_.now();
    fn(state, now);
    if (state.idle(now)) {
      ::unlink(path.c_str());  // under the lock: the next one starts afresh
      return;
    }
    std::string out = state.serialize();
    if (::pwrite(fd, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size()) ||
        ::ftruncate(fd, static_cast<off_t>(out.size())) != 0)
      fail("write", path);
  }

  [[noreturn]] static void fail(const char* what, const std::string& path) {
    throw QueueError(std::string("cannot ") + what + " " + path + ": " + std::strerror(errno),
                     true);
  }

  const std::string dir_;
  const Clock& clock_;
};

}  // namespace

std::shared_ptr<Destinations> make_destinations(std::string dir, const Clock& clock) {
  return std::make_shared<DiskDestinations>(std::move(dir), clock);
}

}  // namespace slimta::disk
