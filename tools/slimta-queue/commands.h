// The subcommands of slimta-queue. Each writes its result to `out`, diagnostics to
// `err`, and returns the process exit code; storage errors propagate as QueueError.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimta/storage.h"

namespace slimta::cli {

struct EnqueueOptions {
  std::string file = "-";  // "-" is standard input
  std::optional<std::string> from;
  std::vector<std::string> to;
};

// Ids named on the command line, or every message with --all.
struct Selection {
  std::vector<std::string> ids;
  bool all = false;
};

int cmd_enqueue(QueueStorage& storage, const EnqueueOptions& opts, std::ostream& out,
                std::ostream& err);
int cmd_list(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err);
int cmd_show(QueueStorage& storage, const std::string& id, bool raw, bool json, std::ostream& out);
int cmd_retry(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
              std::ostream& err);
int cmd_remove(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
               std::ostream& err);
int cmd_info(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err);
// What hold records when no reason is given.
inline constexpr const char* kDefaultHoldReason = "held by an operator";
// Hold messages (claims refuse them until released), recording `reason` and the time. A
// message held already keeps its reason and time unless a new reason is given.
int cmd_hold(QueueStorage& storage, const Selection& sel, const std::optional<std::string>& reason,
             bool json, std::ostream& out, std::ostream& err);
// What bounce gives as the reason when none is given.
inline constexpr const char* kDefaultBounceReason = "returned to the sender by the postmaster";
// Return messages to their senders now (bounce_now()).
int cmd_bounce(QueueStorage& storage, const Selection& sel,
               const std::optional<std::string>& reason, bool json, std::ostream& out,
               std::ostream& err);
// Lift the hold of messages.
int cmd_release(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
                std::ostream& err);
// What retry, hold, release, remove and bounce do to one message, for the CLI and the
// HTTP API: returns what was done ("retried", "held", "already held", "released", "not
// held", "removed", "bounced"). Retry and release announce the message to running
// serve processes; `reason` is hold's or bounce's. KeyError if it is not stored (not
// for remove); InvalidArgument for another action.
std::string act_on(QueueStorage& storage, std::string_view action, const std::string& id,
                   const std::optional<std::string>& reason = std::nullopt);
// qshape's view of the queue: messages by recipient domain and age in minutes (a
// message counts once per domain), the busiest domains first, and the total.
struct Shape {
  static constexpr int kBuckets = 10;  // under 5, 10, 20, ... 1280 minutes, then older
  static constexpr std::array<const char*, kBuckets> kBucketNames = {
      "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"};
  using Row = std::array<size_t, kBuckets>;
  Row total{};
  std::vector<std::pair<std::string, Row>> domains;
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
// A qshape-style table: messages by recipient domain and age.
int cmd_shape(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err);

// "90", "90s", "30m", "2h", "1d": seconds. Throws InvalidArgument naming the text.
double parse_duration(const std::string& text);

// suspend: DESTINATION is not attempted by any serve process on the storage, for
// `seconds` (nullopt: until resumed), with `reason` shown in its deferrals and in
// `destinations`. resume: attempted again at once.
int cmd_suspend(QueueStorage& storage, const std::string& destination,
                std::optional<double> seconds, const std::string& reason, bool json,
                std::ostream& out);
int cmd_resume(QueueStorage& storage, const std::string& destination, bool json, std::ostream& out);
// The destinations with state (in use, down, suspended, recently attempted) or mail
// waiting (messages by recipient domain): state, slots in use, failures, until when
// down or suspended, last reply, messages waiting; with `shaping` (the config
// file's), each one's limits too.
int cmd_destinations(QueueStorage& storage, const ShapingPolicy& shaping, bool json,
                     std::ostream& out, std::ostream& err);

}  // namespace slimta::cli
