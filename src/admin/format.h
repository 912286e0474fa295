// Output helpers for the admin operations (CLI and HTTP API): time stamps, tables and JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "slimta/ascii.h"
#include "slimta/storage.h"

namespace slimta::admin {

// "2026-11-22 19:04:05" in UTC.
std::string format_time(Timestamp ts);
// Seconds since the epoch, now.
Timestamp now();
// Every time in JSON output: "NAME": "2026-11-22T19:04:05Z" (RFC 3339, UTC) and
// "NAME_unix": seconds since the epoch; both null when `ts` is absent.
void put_time(nlohmann::json& j, const std::string& name, std::optional<Timestamp> ts);

// What became of each of a message's original recipients, in their order: "pending",
// "delivered", "bounced" (failed for good, and a DSN went to the sender) or "failed"
// (failed for good, not bounced: the null sender's, or refused as an outsider's), with
// the reply that failed it.
struct RecipientState {
  std::string address;
  std::string state;
  std::string reply;  // of a failure, or a pending one's last; empty otherwise
};
std::vector<RecipientState> recipient_states(const QueuedMessage& msg);

// The JSON object `list --json` prints for one message: its original recipients, each
// with its state (recipient_states(), and "reply" for a failure or a pending one's last
// reply); no next attempt while it is held.
nlohmann::json message_json(const std::string& id, const QueuedMessage& msg);
// JSON text, with bytes that are not UTF-8 replaced (addresses may hold 8-bit junk).
std::string dump(const nlohmann::json& j, int indent = -1);

// What `show --json` prints: message_json() and the original recipient count, the
// client, the receiver, the receipt time and the headers.
nlohmann::json show_json(const std::string& id, const QueuedMessage& msg);

// "held", "active" (a queue process holds an unexpired lease on it) or "queued".
std::string message_state(const QueuedMessage& msg, Timestamp now);

// "<>" for the null sender, the address otherwise (printable()).
std::string display_sender(const std::string& sender);

}  // namespace slimta::admin
