// The subcommands of slimta-queue. Each writes its result to `out`, diagnostics to
// `err`, and returns the process exit code; storage errors propagate as QueueError.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <vector>

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
// Lift the hold of messages.
int cmd_release(QueueStorage& storage, const Selection& sel, bool json, std::ostream& out,
                std::ostream& err);
// A qshape-style table: messages by recipient domain and age.
int cmd_shape(QueueStorage& storage, bool json, std::ostream& out, std::ostream& err);

}  // namespace slimta::cli
