#include "format.h"

#include <fmt/format.h>

namespace slimta::cli {

std::string format_time(Timestamp ts) { return utc_time(ts, "%Y-%m-%d %H:%M:%S"); }

Timestamp now() { return system_clock().now(); }

std::string message_state(const QueuedMessage& msg, Timestamp now) {
  if (msg.hold) return "held";
  if (msg.lease.expires > now) return "active";
  return "queued";
}

nlohmann::json message_json(const std::string& id, const QueuedMessage& msg) {
  nlohmann::json j{
      {"id", id},
      {"state", message_state(msg, now())},
      {"timestamp", msg.timestamp},
      {"next_attempt", format_time(msg.timestamp) + "Z"},
      {"attempts", msg.attempts},
      {"sender", msg.envelope.sender},
      {"recipients", msg.envelope.recipients},
      {"delivered", msg.delivered},
      {"size", msg.envelope.message_size()},
  };
  if (msg.hold) j["hold"] = {{"since", msg.hold->since}, {"reason", msg.hold->reason}};
  if (msg.lease.token != 0) {
    j["lease"] = {{"token", msg.lease.token}, {"expires", msg.lease.expires}};
  }
  return j;
}

std::string dump(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string printable(std::string_view text, bool line_breaks) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    bool kept = line_breaks && (c == '\r' || c == '\n' || c == '\t');
    if ((u < 0x20 || u == 0x7f) && !kept) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out;
}

std::string display_sender(const std::string& sender) {
  return sender.empty() ? "<>" : printable(sender);
}

}  // namespace slimta::cli
