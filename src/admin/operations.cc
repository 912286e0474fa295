#include "operations.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <set>

#include "format.h"
#include "slimta/ascii.h"
#include "slimta/queue.h"

namespace slimta::admin {

std::optional<QueuedMessage> try_get(QueueStorage& storage, const std::string& id,
                                     std::ostream& err) {
  try {
    return storage.get(id);
  } catch (const KeyError&) {
    return std::nullopt;  // delivered or removed since load()
  } catch (const QueueError& e) {
    err << "slimta-queue: warning: cannot read message " << id << ": " << e.what() << "\n";
    return std::nullopt;
  }
}

std::vector<std::string> all_ids(QueueStorage& storage) {
  std::vector<std::string> ids;
  auto stream = storage.load();
  while (auto e = stream->next()) ids.push_back(std::move(e->id));
  return ids;
}

std::vector<std::string> sorted_ids_matching(QueueStorage& storage, const Filter& filter) {
  std::vector<std::string> ids = sorted_ids(storage);
  if (filter.empty()) return ids;
  Timestamp t = now();
  std::erase_if(ids, [&](const std::string& id) {
    try {
      return !filter.matches(storage.get(id), t);
    } catch (const KeyError&) {
      return true;  // gone since the listing
    }
  });
  return ids;
}

std::vector<std::string> sorted_ids(QueueStorage& storage) {
  std::vector<std::string> ids = all_ids(storage);
  std::sort(ids.begin(), ids.end());
  return ids;
}

Flush::Flush(QueueStorage& storage, DestinationOf destination_of)
    : storage_(storage), destination_of_(std::move(destination_of)) {}

std::vector<std::string> Flush::reset_destinations_of(const Envelope& env) {
  std::vector<std::string> reset;
  if (!destination_of_) return reset;
  if (!read_) {  // the destinations' state, read once, when a retry first needs it
    read_ = true;
    board_ = storage_.destinations();
    if (board_) {
      for (const DestinationStatus& s : board_->status())
        if (s.failures > 0) down_.insert(s.name);
    }
  }
  if (down_.empty()) return reset;
  for (const std::string& r : env.recipients) {
    auto it = down_.find(destination_of_(r));
    if (it == down_.end()) continue;
    board_->forget_failures(*it);
    reset.push_back(*it);
    down_.erase(it);
  }
  return reset;
}

std::string act_on(QueueStorage& storage, std::string_view action, const std::string& id,
                   const std::optional<std::string>& reason, Flush* flush) {
  Timestamp t = now();
  if (action == "retry") {
    // A held message waits for its release, whatever its time: it is made due now, so
    // that its release delivers it at once, and the answer says so (issue 34: it said
    // "retried"). KeyError when it is not stored.
    QueuedMessage msg = storage.get(id);
    bool held = msg.hold.has_value();
    if (flush && !held) flush->reset_destinations_of(msg.envelope);
    storage.set_timestamp(id, t);
    if (held) return kDueAtRelease;
    storage.announce(id, t);  // a running serve takes it up now, not at its next rescan
    return "retried";
  }
  if (action == "hold") {
    // Held already and no new reason given: the operator's reason and time stay.
    if (!reason && storage.get(id).hold) return "already held";
    storage.hold(id, reason.value_or(kDefaultHoldReason), t);
    return "held";
  }
  if (action == "release") {
    QueuedMessage msg = storage.get(id);
    if (!msg.hold) return "not held";
    storage.release_hold(id);
    storage.announce(id, msg.timestamp);  // a running serve takes it up now
    return "released";
  }
  if (action == "remove") {
    storage.get(id);  // KeyError when it is not stored: "removed" would be untrue
    storage.remove(id);
    return "removed";
  }
  if (action == "bounce") {
    // A message from the null sender is removed only: a bounce is never bounced.
    return bounce_now(storage, id, reason.value_or(kDefaultBounceReason), "").empty() ? "removed"
                                                                                      : "bounced";
  }
  throw InvalidArgument("unknown action '" + std::string(action) +
                        "' (retry, hold, release, remove, bounce)");
}

Filter Filter::parse(const std::function<std::optional<std::string>(const char*)>& param) {
  Filter f;
  f.domain = to_lower(param("domain").value_or(""));
  f.sender = to_lower(param("sender").value_or(""));
  f.state = param("state").value_or("");
  f.destination = to_lower(param("destination").value_or(""));
  if (auto v = param("older-than")) {
    char* end = nullptr;
    f.older_than = std::strtod(v->c_str(), &end);
    if (v->empty() || *end != '\0' || !(f.older_than >= 0))
      throw InvalidArgument("older-than='" + *v + "': a number of seconds");
  }
  f.check();
  return f;
}

void Filter::check() const {
  if (!state.empty() && state != "queued" && state != "held" && state != "active")
    throw InvalidArgument("state '" + state + "': queued, held or active");
}

bool Filter::matches(const QueuedMessage& m, Timestamp t) const {
  if (!state.empty() && message_state(m, t) != state) return false;
  if (older_than >= 0 && t - m.envelope.timestamp < older_than) return false;
  if (!sender.empty() && to_lower(m.envelope.sender.empty() ? "<>" : m.envelope.sender) != sender)
    return false;
  const auto& rcpts = m.envelope.recipients;
  if (!domain.empty() && std::none_of(rcpts.begin(), rcpts.end(),
                                      [&](const std::string& r) { return domain_of(r) == domain; }))
    return false;
  if (!destination.empty() &&
      (!destination_of || std::none_of(rcpts.begin(), rcpts.end(), [&](const std::string& r) {
        return destination_of(r) == destination;
      })))
    return false;
  return true;
}

Page list_page(QueueStorage& storage, const Filter& filter, size_t limit,
               const std::string& cursor) {
  std::vector<std::string> ids = sorted_ids(storage);
  auto it = std::upper_bound(ids.begin(), ids.end(), cursor);
  Page page;
  Timestamp t = now();
  std::string last;
  for (; it != ids.end() && page.messages.size() < limit; ++it) {
    try {
      QueuedMessage msg = storage.get(*it);
      last = *it;
      if (filter.matches(msg, t)) page.messages.push_back(message_json(*it, msg));
    } catch (const KeyError&) {
      // delivered since the listing
    }
  }
  if (it != ids.end()) page.next_cursor = last;
  return page;
}

nlohmann::json act_on_matching(QueueStorage& storage, std::string_view action, const Filter& filter,
                               const std::optional<std::string>& reason, Flush* flush) {
  nlohmann::json done = nlohmann::json::object();
  Timestamp t = now();
  for (const std::string& id : sorted_ids(storage)) {
    try {
      if (!filter.matches(storage.get(id), t)) continue;
      done[act_on(storage, action, id, reason, flush)].push_back(id);
    } catch (const KeyError&) {
      // delivered since the listing
    }
  }
  return done;
}

std::string destination_state(const DestinationStatus& s, Timestamp t) {
  if (s.suspended(t)) return "suspended";
  if (s.down_until > t) return "down";
  if (s.failures > 0) return "failing";
  return "ok";
}

nlohmann::json destination_json(const DestinationStatus& s, const DestinationLimits& limits,
                                std::optional<size_t> waiting, Timestamp t) {
  nlohmann::json j{
      {"destination", s.name},
      {"state", destination_state(s, t)},
      {"in_use", s.in_use},
      {"max_connections", limits.max_connections},
      {"max_rate", limits.max_rate > 0 ? nlohmann::json(limits.max_rate) : nlohmann::json()},
      {"failures", s.failures},
      {"waiting", waiting ? nlohmann::json(*waiting) : nlohmann::json()},
      {"last_reply", s.last_reply.empty() ? nlohmann::json() : nlohmann::json(s.last_reply)}};
  put_time(j, "down_until",
           s.down_until > t ? std::optional<Timestamp>(s.down_until) : std::nullopt);
  bool forever = s.suspended_until == DestinationStatus::kForever;
  put_time(j, "suspended_until",
           s.suspended(t) && !forever ? std::optional<Timestamp>(s.suspended_until) : std::nullopt);
  j["suspended_until_resumed"] = forever;
  j["suspend_reason"] = s.suspended(t) ? nlohmann::json(s.suspend_reason) : nlohmann::json();
  put_time(j, "last_attempt",
           s.last_attempt > 0 ? std::optional<Timestamp>(s.last_attempt) : std::nullopt);
  return j;
}

std::string not_a_destination(const std::string& destination, const DestinationOf& destination_of) {
  if (!destination_of) return "";
  // A destination is a name the relay gives: a domain's own (an MX domain, a route), or
  // where every other domain's mail goes (the smarthost).
  const std::string name = to_lower(destination);
  const std::string own = destination_of("postmaster@" + name);
  if (own == name || name == destination_of("postmaster@example.invalid")) return "";
  std::string why = "'" + printable(name) + "' is not a destination of this configuration";
  if (name.find('@') == std::string::npos && name.find(':') == std::string::npos)
    why += ": mail for " + printable(name) + " goes to '" + printable(own) + "'";
  return why + "; `slimta-queue destinations` lists them";
}

nlohmann::json storage_info_json(QueueStorage& storage) {
  Capabilities caps = storage.capabilities();
  return {{"storage", storage.kind()},
          {"events", caps.can_lease ? storage.counters() : Counters{}},
          {"durable", caps.durable},
          {"shared", caps.shared},
          {"can_wait", caps.can_wait}};
}

size_t Shape::sum(const Row& r) { return std::accumulate(r.begin(), r.end(), size_t{0}); }

ShapeBuilder::ShapeBuilder(Timestamp now) : now_(now) {}

void ShapeBuilder::add(const QueuedMessage& msg) {
  // qshape's buckets: messages younger than 5, 10, 20, ... 1280 minutes, then older.
  static constexpr double kLimits[Shape::kBuckets - 1] = {5, 10, 20, 40, 80, 160, 320, 640, 1280};
  double minutes = (now_ - msg.envelope.timestamp) / 60;
  int b = 0;
  while (b < Shape::kBuckets - 1 && minutes >= kLimits[b]) ++b;
  ++shape_.total[b];
  std::set<std::string> domains;  // a message counts once per recipient domain
  for (const auto& r : msg.envelope.recipients) domains.insert(domain_of(r));
  for (const auto& d : domains) ++rows_.try_emplace(d, Shape::Row{}).first->second[b];
}

Shape ShapeBuilder::finish() {
  shape_.domains.assign(rows_.begin(), rows_.end());
  std::stable_sort(shape_.domains.begin(), shape_.domains.end(), [&](const auto& a, const auto& b) {
    return Shape::sum(a.second) > Shape::sum(b.second);
  });
  return std::move(shape_);
}

Shape compute_shape(QueueStorage& storage, std::ostream& err) {
  ShapeBuilder builder(now());
  auto stream = storage.load();
  while (auto e = stream->next()) {
    if (auto msg = try_get(storage, e->id, err)) builder.add(*msg);
  }
  return builder.finish();
}

nlohmann::json shape_json(const Shape& shape) {
  auto row_json = [&](const Shape::Row& r) {
    nlohmann::json j{{"total", Shape::sum(r)}};
    for (int b = 0; b < Shape::kBuckets; ++b) j[Shape::kBucketNames[b]] = r[b];
    return j;
  };
  nlohmann::json domains = nlohmann::json::array();
  for (const auto& [d, r] : shape.domains) {
    nlohmann::json j = row_json(r);
    j["domain"] = d;
    domains.push_back(j);
  }
  return {{"buckets_minutes", Shape::kBucketNames},
          {"total", row_json(shape.total)},
          {"domains", domains}};
}

double parse_duration(const std::string& text) {
  static const std::map<char, double> kUnits = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
  double unit = 1;
  std::string number = text;
  if (!number.empty() && kUnits.contains(number.back())) {
    unit = kUnits.at(number.back());
    number.pop_back();
  }
  size_t used = 0;
  double n = -1;
  try {
    n = std::stod(number, &used);
  } catch (const std::exception&) {
  }
  if (number.empty() || used != number.size() || !(n > 0) || !std::isfinite(n))
    throw InvalidArgument("duration '" + text + "' is not a number of s, m, h or d (e.g. 30m)");
  return n * unit;
}

}  // namespace slimta::admin
