#include "format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace slimta::admin {

std::string format_time(Timestamp ts) { return utc_time(ts, "%Y-%m-%d %H:%M:%S"); }

Timestamp now() { return system_clock().now(); }

std::string message_state(const QueuedMessage& msg, Timestamp now) {
  if (msg.hold) return "held";
  if (msg.lease.expires > now) return "active";
  return "queued";
}

void put_time(nlohmann::json& j, const std::string& name, std::optional<Timestamp> ts) {
  j[name] = ts ? nlohmann::json(iso8601_time(*ts)) : nlohmann::json(nullptr);
  j[name + "_unix"] = ts ? nlohmann::json(*ts) : nlohmann::json(nullptr);
}

namespace {

// The entry of recipient `i` in `entries` (ascending by index), or null; `cursor`
// walks them as `i` rises (QueuedMessage::failed and ::deferred).
template <typename Entry>
const Entry* entry_of(const std::vector<Entry>& entries, size_t& cursor, size_t i) {
  while (cursor < entries.size() && entries[cursor].index < i) ++cursor;
  return cursor < entries.size() && entries[cursor].index == i ? &entries[cursor] : nullptr;
}

}  // namespace

std::vector<RecipientState> recipient_states(const QueuedMessage& msg) {
  std::vector<RecipientState> out;
  size_t pending = 0, delivered = 0, failed = 0, deferred = 0;
  for (size_t i = 0; i < msg.original_recipients; ++i) {
    bool done = delivered < msg.delivered.size() && msg.delivered[delivered] == i;
    if (!done) {
      if (pending >= msg.envelope.recipients.size()) continue;
      RecipientState r{msg.envelope.recipients[pending++], "pending", ""};
      if (const auto* d = entry_of(msg.deferred, deferred, i)) r.reply = d->reply;
      out.push_back(std::move(r));
      continue;
    }
    RecipientState r{msg.delivered_recipients[delivered++], "delivered", ""};
    if (const auto* f = entry_of(msg.failed, failed, i)) {
      r.state = f->bounced ? "bounced" : "failed";
      r.reply = f->reply;
    }
    out.push_back(std::move(r));
  }
  return out;
}

nlohmann::json message_json(const std::string& id, const QueuedMessage& msg) {
  nlohmann::json recipients = nlohmann::json::array();
  for (const auto& r : recipient_states(msg)) {
    nlohmann::json one{{"address", r.address}, {"state", r.state}};
    if (!r.reply.empty()) one["reply"] = r.reply;
    recipients.push_back(std::move(one));
  }
  nlohmann::json j{{"id", id}, {"state", message_state(msg, now())}};
  put_time(j, "next_attempt", msg.hold ? std::nullopt : std::optional(msg.timestamp));
  j["attempts"] = msg.attempts;
  j["last_reply"] = msg.last_reply.empty() ? nlohmann::json() : nlohmann::json(msg.last_reply);
  j["sender"] = msg.envelope.sender;
  j["recipients"] = std::move(recipients);
  j["size"] = msg.envelope.message_size();
  if (msg.hold) {
    nlohmann::json hold{{"reason", msg.hold->reason}};
    put_time(hold, "since", msg.hold->since);
    j["hold"] = std::move(hold);
  }
  if (msg.lease.token != 0) {
    nlohmann::json lease{{"token", msg.lease.token}};
    put_time(lease, "expires", msg.lease.expires);
    j["lease"] = std::move(lease);
  }
  return j;
}

nlohmann::json show_json(const std::string& id, const QueuedMessage& msg) {
  const Envelope& env = msg.envelope;
  nlohmann::json j = message_json(id, msg);
  j["original_recipients"] = msg.original_recipients;
  j["client"] = {{"ip", env.client.ip},
                 {"host", env.client.host},
                 {"name", env.client.name},
                 {"protocol", env.client.protocol},
                 {"auth", env.client.auth}};
  j["receiver"] = env.receiver;
  put_time(j, "received", env.timestamp);
  nlohmann::json headers = nlohmann::json::array();
  for (const auto& f : env.headers.fields()) {
    headers.push_back({{"name", f.name}, {"value", f.value()}});
  }
  j["headers"] = headers;
  return j;
}

std::string dump(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string display_sender(const std::string& sender) {
  return sender.empty() ? "<>" : printable(sender);
}

}  // namespace slimta::admin
