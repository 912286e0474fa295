// What serve runs, planned from its options and the config file's tables, and checked,
// before anything listens or the storage is opened: check-config stops there, serve
// and its reload go on from it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "admin/identity.h"
#include "http_server.h"
#include "options.h"
#include "slimta/host_port.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/shaping.h"
#include "slimta/smtp_server.h"

namespace slimta::daemon {

// A flag's seconds as a duration.
inline std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

struct Listener {
  std::string address;  // HOST:PORT
  ListenerRole role;
};
// "smtp", "submission" or "submissions": the role's name in the config file and the log.
const char* role_name(ListenerRole role);

// Whom serve runs as once its ports are bound.
using admin::RunAs;

struct ServePlan {
  std::vector<Listener> listeners;
  std::vector<HostPort> endpoints;  // each listener's, parsed
  std::vector<std::string> routes;
  ShapingPolicy shaping;  // [destinations]
  SmtpServerOptions server_opts;
  ReceptionOptions door;  // the one door's limits
  std::unique_ptr<Relay> relay;
  // --user and --group (default: slimta and its group, when started as root and that
  // user exists); nullopt: serve stays who it is.
  std::optional<RunAs> run_as;
  // The queue's lifetimes, retry schedule and delay warning, read and checked; the
  // rest of it is the defaults, which the daemon fills in.
  QueuePolicy retry;
  // --http, its address and token read and checked; nullopt: no HTTP listener.
  std::optional<HttpBinding> http;
};

// Everything serve runs, built from `opts` and the config file it names; throws
// InvalidArgument naming the option, file or line at fault. Warnings (an open relay, a
// host name without its domain) go to `err`.
ServePlan plan_serve(const ServeOptions& opts, std::ostream& err);

// --user and --group, looked up (not switched to): whom serve runs as. Default: slimta
// and its group when this process is root and that user exists; nullopt: serve stays
// who it is. InvalidArgument for an unknown user or group.
std::optional<RunAs> run_as(const ServeOptions& opts);

// What serve's relay, built from `opts` and its config file, names as a recipient's
// destination (the smarthost's HOST:PORT, a route's domain, an MX domain): for the
// CLI, which acts on the destinations serve keeps state for.
admin::DestinationOf destination_map(const ServeOptions& opts);

// The files serve reads at its start and again at each SIGHUP reload, each with the
// option that names it: what the service user must be able to read.
std::vector<std::pair<std::string, std::string>> files_serve_reads(const ServeOptions& opts);

// check-config: plan_serve(), then a file of files_serve_reads() that the user serve
// would run as cannot read (InvalidArgument naming it, the user and the fix), then the listeners,
// routes and destination limits on `out`.
int check_config(const ServeOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace slimta::daemon
