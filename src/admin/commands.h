// The subcommands of slimta-queue. Each writes its result to `out`, diagnostics to
// `err`, and returns the process exit code; storage errors propagate as QueueError.
// What they do to the queue is operations.h's, shared with serve's HTTP API.
#pragma once

#include <sys/types.h>

#include <array>
#include <istream>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "operations.h"
#include "slimta/shaping.h"
#include "slimta/storage.h"

namespace slimta::admin {

struct EnqueueOptions {
  std::string file = "-";  // "-" is standard input
  std::optional<std::string> from;
  std::vector<std::string> to;
};

// Ids named on the command line, or every message with --all.
// The messages a command acts on: ids (one "-" reads them from standard input, one a
// line, as postsuper -d -), or --all, or those a filter takes (--domain, --sender,
// --older-than, --state, --destination: any of them, all must match).
struct Selection {
  std::vector<std::string> ids;
  bool all = false;
  Filter filter;
  // The ids to act on (the stdin ids read, a filter applied to every message): the
  // selection's ids must be set (not both ids and --all or a filter; read() checks).
  std::vector<std::string> resolve(QueueStorage& storage, std::istream& in) const;
  // InvalidArgument unless exactly one of: ids, --all and/or a filter.
  void check() const;
};

int cmd_enqueue(QueueStorage& storage, const EnqueueOptions& opts, std::ostream& out,
                std::ostream& err);
// `env` through the one door into `storage`: 0 and its id on `out`, or the door's reply
// on `err` and 75 (EX_TEMPFAIL: try again) or 1.
int enqueue_envelope(QueueStorage& storage, Envelope env, std::ostream& out, std::ostream& err);
// list: like postqueue -p; a message whose destination (by `destination_of`) is
// suspended or down says so (JSON: "waits_for").
int cmd_list(QueueStorage& storage, const DestinationOf& destination_of, bool json,
             std::ostream& out, std::ostream& err);
int cmd_show(QueueStorage& storage, const std::string& id, bool raw, bool json, std::ostream& out);
// retry also resets the down destinations of what it retries (Flush, by `destination_of`).
int cmd_retry(QueueStorage& storage, const Selection& sel, const DestinationOf& destination_of,
              bool json, std::ostream& out, std::ostream& err);
int cmd_remove(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
               std::ostream& err);
int cmd_info(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err);
// Hold messages (claims refuse them until released), recording `reason` and the time. A
// message held already keeps its reason and time unless a new reason is given.
int cmd_hold(QueueStorage& storage, const Selection& sel, const std::optional<std::string>& reason,
             bool json, std::ostream& out, std::ostream& err);
// Return messages to their senders now (bounce_now()).
int cmd_bounce(QueueStorage& storage, const Selection& sel,
               const std::optional<std::string>& reason, bool json, std::ostream& out,
               std::ostream& err);
// Lift the hold of messages.
int cmd_release(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
                std::ostream& err);
// A qshape-style table: messages by recipient domain and age.
int cmd_shape(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err);

// suspend: DESTINATION is not attempted by any serve process on the storage, for
// `seconds` (nullopt: until resumed), with `reason` shown in its deferrals and in
// `destinations`. A name that `destination_of` never gives (a typo, or a recipient
// domain whose mail goes to a smarthost) is suspended with a warning on `err` naming
// where that mail goes. resume: attempted again at once.
int cmd_suspend(QueueStorage& storage, const std::string& destination,
                std::optional<double> seconds, const std::string& reason,
                const DestinationOf& destination_of, bool json, std::ostream& out,
                std::ostream& err);
int cmd_resume(QueueStorage& storage, const std::string& destination, bool json, std::ostream& out);
// The destinations with state (in use, down, suspended, recently attempted) or mail
// waiting (messages by the destination of their pending recipients, `destination_of`):
// state, slots in use, failures, until when down or suspended, last reply, messages
// waiting; with `shaping` (the config file's), each one's limits too.
int cmd_destinations(QueueStorage& storage, const ShapingPolicy& shaping,
                     const DestinationOf& destination_of, bool json, std::ostream& out,
                     std::ostream& err);

// `slimta-queue passwd USER --users FILE`: reads a password from `in` (without echo
// when it is a terminal, asked twice), and adds or changes USER's entry. A new file is
// made readable by `group` (the service's, mode 0640) when given.
int cmd_passwd(const std::string& user, const std::string& users_file, std::optional<gid_t> group,
               std::ostream& err);

}  // namespace slimta::admin
