// The state of one destination and the rules over it, shared by the Destinations kept
// in process (local_destinations) and in a disk spool (a state file per destination).
// Redis keeps the same state in a hash and applies the same rules in Lua (its
// redis_storage.cc says so beside its scripts).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/shaping.h"

namespace slimta::shaping {

struct DestinationState {
  uint64_t next_slot = 1;
  std::map<uint64_t, Timestamp> slots;  // slot -> when its lease runs out
  uint64_t probe_slot = 0;              // the slot testing a down destination, or 0
  double tokens = -1;                   // rate bucket; -1: full
  Timestamp tokens_at = 0;
  uint32_t failures = 0;
  Timestamp down_until = 0;
  Timestamp suspended_until = 0;  // DestinationStatus::kForever: no end
  std::string suspend_reason;
  std::string last_reply;
  Timestamp last_attempt = 0;

  SlotGrant acquire(const DestinationLimits& limits, std::chrono::milliseconds lease,
                    Timestamp now);
  void renew(uint64_t slot, std::chrono::milliseconds lease, Timestamp now);
  void release(uint64_t slot, bool reachable, std::string_view reply, const DownPolicy& down,
               Timestamp now);
  DestinationStatus status(const std::string& name, Timestamp now);
  void forget_failures() {
    failures = 0;
    down_until = 0;
  }
  // Nothing worth keeping: no slot, no failure, no suspension, idle for 10 minutes.
  bool idle(Timestamp now) const;

  // Sets a field from its text, as serialize() writes it and Redis keeps it (a slot is
  // "slot" with "ID EXPIRES", or "slot:ID" with "EXPIRES"). Unknown keys are ignored.
  void set_field(std::string_view key, std::string_view value);

  // One "key value" line each, for a state file.
  std::string serialize() const;
  static DestinationState parse(std::string_view text);
};

// Destinations::status() lists them by name: every implementation sorts with this.
void sort_by_name(std::vector<DestinationStatus>& list);

// The reasons a grant gives, the same from every Destinations.
std::string down_reason(uint32_t failures, std::string_view last_reply);
std::string suspended_reason(std::string_view reason);

}  // namespace slimta::shaping
