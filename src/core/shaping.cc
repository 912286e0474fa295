#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <mutex>
#include <unordered_map>

#include "core/decimal.h"
#include "core/destination_state.h"
#include "slimta/ascii.h"
#include "slimta/errors.h"
#include "slimta/shaping.h"

namespace slimta {

double DownPolicy::interval(uint32_t failures) const {
  if (after == 0 || failures < after) return 0;
  return std::min(max, initial * std::pow(2.0, std::min<uint32_t>(failures - after, 30)));
}

size_t ShapingPolicy::worker_cap(size_t workers) {
  if (workers < 2) return std::max<size_t>(workers, 1);
  return workers - std::max<size_t>(1, workers / 8);
}

const DestinationLimits& ShapingPolicy::limits(std::string_view destination) const {
  if (destinations.empty()) return defaults;
  auto it = destinations.find(destination);  // the relays name them in lower case
  if (it == destinations.end() && std::any_of(destination.begin(), destination.end(),
                                              [](char c) { return c >= 'A' && c <= 'Z'; }))
    it = destinations.find(to_lower(std::string(destination)));
  return it == destinations.end() ? defaults : it->second;
}

double parse_rate(std::string_view text) {
  auto bad = [&]() -> double {
    throw InvalidArgument("rate '" + std::string(text) +
                          "' is not a number of messages per s, m or h (e.g. \"10/s\", "
                          "\"600/m\", \"3600/h\")");
  };
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return bad();
  std::string count(text.substr(0, slash));
  std::string unit = to_lower(std::string(text.substr(slash + 1)));
  double n = 0;
  auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
  if (ec != std::errc() || end != count.data() + count.size() || !(n > 0) || !std::isfinite(n))
    return bad();
  static const std::map<std::string, double> kSeconds = {
      {"s", 1},       {"sec", 1},  {"second", 1},  {"m", 60},    {"min", 60},
      {"minute", 60}, {"h", 3600}, {"hour", 3600}, {"d", 86400}, {"day", 86400}};
  auto it = kSeconds.find(unit);
  if (it == kSeconds.end()) return bad();
  return n / it->second;
}

namespace shaping {
namespace {

double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000; }

// How soon a process refused a slot looks again when nothing else tells it: a slot
// given back by another process, or an operator's resume, is seen this late.
constexpr double kRecheck = 0.1;
constexpr double kSuspendRecheck = 1;

}  // namespace

SlotGrant DestinationState::acquire(const DestinationLimits& limits,
                                    std::chrono::milliseconds lease, Timestamp now) {
  SlotGrant g;
  if (suspended_until == DestinationStatus::kForever || suspended_until > now) {
    g.status = SlotGrant::Status::suspended;
    g.retry_after = kSuspendRecheck;
    g.reason = suspended_reason(suspend_reason);
    return g;
  }
  std::erase_if(slots, [&](const auto& s) { return s.second <= now; });
  if (probe_slot && !slots.contains(probe_slot)) probe_slot = 0;  // the prober died
  bool probe = false;
  if (failures > 0 && down_until > 0) {
    if (down_until > now || probe_slot) {
      g.status = SlotGrant::Status::down;
      g.retry_after = down_until > now ? down_until - now : kSuspendRecheck;
      g.reason = "destination not reachable (" + std::to_string(failures) + " attempts in a row)" +
                 (last_reply.empty() ? "" : ": " + last_reply);
      return g;
    }
    probe = true;
  }
  if (slots.size() >= std::max<size_t>(1, limits.max_connections)) {
    g.status = SlotGrant::Status::busy;
    g.retry_after = kRecheck;
    g.reason = "all " + std::to_string(limits.max_connections) + " connections in use";
    return g;
  }
  if (limits.max_rate > 0) {
    // A bucket of one token: the messages go evenly spaced, never in a burst.
    double have = tokens < 0 ? 1 : std::min(1.0, tokens + (now - tokens_at) * limits.max_rate);
    if (have < 1) {
      tokens = have;
      tokens_at = now;
      g.status = SlotGrant::Status::rate;
      // At least a millisecond: a time stamp near 2e9 s has steps of 0.24 us, so a
      // smaller wait could round to no wait at all.
      g.retry_after = std::max(0.001, (1 - have) / limits.max_rate);
      g.reason = "rate limit reached";
      return g;
    }
    tokens = have - 1;
    tokens_at = now;
  }
  g.status = SlotGrant::Status::granted;
  g.slot = next_slot++;
  g.probe = probe;
  slots[g.slot] = now + seconds(lease);
  if (probe) probe_slot = g.slot;
  last_attempt = now;
  return g;
}

void DestinationState::renew(uint64_t slot, std::chrono::milliseconds lease, Timestamp now) {
  auto it = slots.find(slot);
  if (it != slots.end()) it->second = now + seconds(lease);
}

void DestinationState::release(uint64_t slot, bool reachable, std::string_view reply,
                               const DownPolicy& down, Timestamp now) {
  slots.erase(slot);
  if (probe_slot == slot) probe_slot = 0;
  if (!reply.empty()) last_reply = std::string(reply);
  if (reachable) {
    failures = 0;
    down_until = 0;
  } else {
    ++failures;
    double interval = down.interval(failures);
    if (interval > 0) down_until = now + interval;
  }
}

DestinationStatus DestinationState::status(const std::string& name, Timestamp now) {
  std::erase_if(slots, [&](const auto& s) { return s.second <= now; });
  DestinationStatus s;
  s.name = name;
  s.in_use = slots.size();
  s.rate_tokens = tokens;
  s.failures = failures;
  s.down_until = down_until > now ? down_until : 0;
  s.suspended_until = suspended_until;
  s.suspend_reason = suspend_reason;
  s.last_reply = last_reply;
  s.last_attempt = last_attempt;
  return s;
}

bool DestinationState::idle(Timestamp now) const {
  bool suspended = suspended_until == DestinationStatus::kForever || suspended_until > now;
  return slots.empty() && failures == 0 && !suspended && last_attempt < now - 600;
}

std::string DestinationState::serialize() const {
  auto line = [](std::string& out, std::string_view key, const std::string& value) {
    out += key;
    out += ' ';
    for (char c : value) out += (c == '\n' || c == '\r') ? ' ' : c;
    out += '\n';
  };
  std::string out;
  line(out, "next_slot", std::to_string(next_slot));
  for (const auto& [slot, expires] : slots)
    line(out, "slot", std::to_string(slot) + " " + decimal_text(expires));
  line(out, "probe_slot", std::to_string(probe_slot));
  line(out, "tokens", decimal_text(tokens));
  line(out, "tokens_at", decimal_text(tokens_at));
  line(out, "failures", std::to_string(failures));
  line(out, "down_until", decimal_text(down_until));
  line(out, "suspended_until", decimal_text(suspended_until));
  line(out, "suspend_reason", suspend_reason);
  line(out, "last_reply", last_reply);
  line(out, "last_attempt", decimal_text(last_attempt));
  return out;
}

void DestinationState::set_field(std::string_view key, std::string_view value) {
  auto to_double = [](std::string_view v) {
    double d = 0;
    std::from_chars(v.data(), v.data() + v.size(), d);
    return d;
  };
  auto to_u64 = [](std::string_view v) {
    uint64_t n = 0;
    std::from_chars(v.data(), v.data() + v.size(), n);
    return n;
  };
  if (key == "next_slot") {
    next_slot = std::max<uint64_t>(1, to_u64(value));
  } else if (key == "slot") {
    size_t sp = value.find(' ');
    if (sp != std::string_view::npos)
      slots[to_u64(value.substr(0, sp))] = to_double(value.substr(sp + 1));
  } else if (key.starts_with("slot:")) {
    slots[to_u64(key.substr(5))] = to_double(value);
  } else if (key == "probe_slot") {
    probe_slot = to_u64(value);
  } else if (key == "tokens") {
    tokens = to_double(value);
  } else if (key == "tokens_at") {
    tokens_at = to_double(value);
  } else if (key == "failures") {
    failures = static_cast<uint32_t>(to_u64(value));
  } else if (key == "down_until") {
    down_until = to_double(value);
  } else if (key == "suspended_until") {
    suspended_until = to_double(value);
  } else if (key == "suspend_reason") {
    suspend_reason = std::string(value);
  } else if (key == "last_reply") {
    last_reply = std::string(value);
  } else if (key == "last_attempt") {
    last_attempt = to_double(value);
  }
}

DestinationState DestinationState::parse(std::string_view text) {
  DestinationState s;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos) s.set_field(line.substr(0, sp), line.substr(sp + 1));
  }
  return s;
}

void sort_by_name(std::vector<DestinationStatus>& list) {
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
}

std::string down_reason(uint32_t failures, std::string_view last_reply) {
  return "destination not reachable (" + std::to_string(failures) + " attempts in a row)" +
         (last_reply.empty() ? "" : ": " + std::string(last_reply));
}

std::string suspended_reason(std::string_view reason) {
  return "suspended by an operator" + (reason.empty() ? std::string() : ": " + std::string(reason));
}

}  // namespace shaping

namespace {

// The table in shards, each under its own lock: the queue's workers ask for slots of
// different destinations at once without waiting for each other.
class LocalDestinations : public Destinations {
 public:
  explicit LocalDestinations(const Clock& clock) : clock_(clock) {}

  SlotGrant acquire(const std::string& destination, const DestinationLimits& limits,
                    std::chrono::milliseconds lease) override {
    Shard& shard = shard_of(destination);
    std::lock_guard lock(shard.mu);
    return shard.table[destination].acquire(limits, lease, clock_.now());
  }
  void renew(const std::string& destination, uint64_t slot,
             std::chrono::milliseconds lease) override {
    Shard& shard = shard_of(destination);
    std::lock_guard lock(shard.mu);
    auto it = shard.table.find(destination);
    if (it != shard.table.end()) it->second.renew(slot, lease, clock_.now());
  }
  void release(const std::string& destination, uint64_t slot, bool reachable,
               std::string_view reply, const DownPolicy& down) override {
    Shard& shard = shard_of(destination);
    std::lock_guard lock(shard.mu);
    Timestamp now = clock_.now();
    shard.table[destination].release(slot, reachable, reply, down, now);
    if (++shard.releases % 1024 == 0) prune(shard, now);
  }
  void suspend(const std::string& destination, Timestamp until, std::string_view reason) override {
    Shard& shard = shard_of(destination);
    std::lock_guard lock(shard.mu);
    auto& s = shard.table[destination];
    s.suspended_until = until;
    s.suspend_reason = std::string(reason);
  }
  void resume(const std::string& destination) override {
    Shard& shard = shard_of(destination);
    std::lock_guard lock(shard.mu);
    auto it = shard.table.find(destination);
    if (it == shard.table.end()) return;
    it->second.suspended_until = 0;
    it->second.suspend_reason.clear();
    it->second.forget_failures();
  }
  void forget_failures(const std::string& destination) override {
    Shard& shard = shard_of(destination);
    std::lock_guard lock(shard.mu);
    auto it = shard.table.find(destination);
    if (it != shard.table.end()) it->second.forget_failures();
  }
  std::vector<DestinationStatus> status() override {
    std::vector<DestinationStatus> out;
    Timestamp now = clock_.now();
    for (Shard& shard : shards_) {
      std::lock_guard lock(shard.mu);
      prune(shard, now);
      for (auto& [name, s] : shard.table) out.push_back(s.status(name, now));
    }
    shaping::sort_by_name(out);
    return out;
  }

 private:
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, shaping::DestinationState> table;
    uint64_t releases = 0;
  };
  Shard& shard_of(const std::string& destination) {
    return shards_[std::hash<std::string>{}(destination) % shards_.size()];
  }
  static void prune(Shard& shard, Timestamp now) {
    std::erase_if(shard.table, [&](const auto& kv) { return kv.second.idle(now); });
  }

  const Clock& clock_;
  std::array<Shard, 16> shards_;
};

}  // namespace

std::shared_ptr<Destinations> local_destinations(const Clock& clock) {
  return std::make_shared<LocalDestinations>(clock);
}

}  // namespace slimta
