// The operations on a queue that an operator's tools share: the CLI's subcommands
// (commands.h) and serve's HTTP API (daemon/http_routes.h) call these, so that an
// action, a filter or a page means the same on both.
#pragma once

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimta/shaping.h"
#include "slimta/storage.h"

namespace slimta::admin {

// What hold records when no reason is given.
inline constexpr const char* kDefaultHoldReason = "held by an operator";
// What retry answers for a held message: made due now, it waits for its release.
inline constexpr const char* kDueAtRelease = "due at its release (held)";

// What bounce gives as the reason when none is given.
inline constexpr const char* kDefaultBounceReason = "returned to the sender by the postmaster";

// The destination (next hop) serve delivers a recipient to: its relay's destination().
using DestinationOf = std::function<std::string(const std::string&)>;

// What a retry does besides making messages due: each destination of theirs that is
// down (or counting unreachable attempts) forgets its failures, so that the messages
// are attempted at once rather than deferred without a connection (issue 34: after an
// outage, retry --all deferred 11 of 12 messages; Postfix's flush forgets dead
// destinations). One per command: each destination is reset once.
class Flush {
 public:
  // `destination_of` empty: no destination is reset.
  Flush(QueueStorage& storage, DestinationOf destination_of);
  // Resets the down destinations among those of `env`'s recipients; returns their names.
  std::vector<std::string> reset_destinations_of(const Envelope& env);

 private:
  QueueStorage& storage_;
  DestinationOf destination_of_;
  bool read_ = false;  // board_ and down_ are read at the first retry, not before
  std::shared_ptr<Destinations> board_;
  std::set<std::string> down_;  // not reset yet
};

// What retry, hold, release, remove and bounce do to one message: returns what was done
// ("retried", kDueAtRelease for a held message, "held", "already held", "released", "not
// held", "removed", "bounced"). Retry and release announce the message to running serve
// processes, and retry resets its down destinations through `flush` when given;
// `reason` is hold's or bounce's. KeyError if it is not stored; InvalidArgument for
// another action.
std::string act_on(QueueStorage& storage, std::string_view action, const std::string& id,
                   const std::optional<std::string>& reason = std::nullopt, Flush* flush = nullptr);

// get() for listing: nullopt for a message removed since it was listed; one that cannot
// be read is reported on `err` and skipped.
std::optional<QueuedMessage> try_get(QueueStorage& storage, const std::string& id,
                                     std::ostream& err);

// Every stored id, as load() gives them, and sorted (the order pages follow).
std::vector<std::string> all_ids(QueueStorage& storage);
std::vector<std::string> sorted_ids(QueueStorage& storage);
struct Filter;
// The sorted ids of the messages `filter` takes.
std::vector<std::string> sorted_ids_matching(QueueStorage& storage, const Filter& filter);

// Which messages an operation takes: a recipient domain, a sender, a state, a minimum
// age since receipt, a destination a pending recipient waits for. The empty filter
// takes every message. The CLI's selectors and the API's parameters are these.
struct Filter {
  std::string domain;            // lower case
  std::string sender;            // lower case; "<>" for the null sender
  std::string state;             // "" | queued | held | active (message_state())
  double older_than = -1;        // seconds; negative: any age
  std::string destination;       // lower case: by destination_of (Postfix's flush -s)
  DestinationOf destination_of;  // needed with `destination`

  // From query parameters: domain=, sender=, state=, older-than=SECONDS, destination=
  // (`param` gives a parameter's value, nullopt when absent). InvalidArgument names a
  // bad value.
  static Filter parse(const std::function<std::optional<std::string>(const char*)>& param);
  // Checks what parse() checks, for values set otherwise (the CLI).
  void check() const;
  bool empty() const {
    return domain.empty() && sender.empty() && state.empty() && older_than < 0 &&
           destination.empty();
  }
  bool matches(const QueuedMessage& msg, Timestamp now) const;
};

// One page of messages in id order after `cursor` ("" for the first): up to `limit`
// that `filter` takes, as message_json(); `next_cursor` is the last id read when more
// follow.
struct Page {
  nlohmann::json messages = nlohmann::json::array();
  std::optional<std::string> next_cursor;
};
Page list_page(QueueStorage& storage, const Filter& filter, size_t limit,
               const std::string& cursor);

// A destination's state now: "suspended", "down", "failing" (unreachable attempts, not
// down yet) or "ok".
std::string destination_state(const DestinationStatus& s, Timestamp now);
// One destination as `destinations --json` and the API show it; `waiting` null when not
// counted (a scan of the queue).
nlohmann::json destination_json(const DestinationStatus& s, const DestinationLimits& limits,
                                std::optional<size_t> waiting, Timestamp now);
// "" when `destination` is one that `destination_of` gives (a domain's own, or where
// every other domain's mail goes: the smarthost), else a warning saying where mail for
// it goes (suspend's: a typo, or a recipient domain behind a smarthost).
std::string not_a_destination(const std::string& destination, const DestinationOf& destination_of);

// What `info --json` and the API's info say of the storage: its kind, the queue's event
// counters (all processes), and whether it is durable, shared, and can wait.
nlohmann::json storage_info_json(QueueStorage& storage);

// act_on() for every message `filter` takes: {"WHAT": [ids], ...}.
nlohmann::json act_on_matching(QueueStorage& storage, std::string_view action, const Filter& filter,
                               const std::optional<std::string>& reason, Flush* flush = nullptr);

// qshape's view of the queue: messages by recipient domain and age in minutes (a
// message counts once per domain), the busiest domains first, and the total.
struct Shape {
  static constexpr int kBuckets = 10;  // under 5, 10, 20, ... 1280 minutes, then older
  static constexpr std::array<const char*, kBuckets> kBucketNames = {
      "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"};
  using Row = std::array<size_t, kBuckets>;
  Row total{};
  std::vector<std::pair<std::string, Row>> domains;

  static size_t sum(const Row& row);
};
// Builds a Shape one message at a time (compute_shape() and serve's background scan).
class ShapeBuilder {
 public:
  explicit ShapeBuilder(Timestamp now);
  void add(const QueuedMessage& msg);
  Shape finish();

 private:
  Timestamp now_;
  Shape shape_;
  std::map<std::string, Shape::Row> rows_;
};
Shape compute_shape(QueueStorage& storage, std::ostream& err);
nlohmann::json shape_json(const Shape& shape);

// "90", "90s", "30m", "2h", "1d": seconds. Throws InvalidArgument naming the text.
double parse_duration(const std::string& text);

}  // namespace slimta::admin
