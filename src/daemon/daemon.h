// serve as a library: the SMTP listeners, the one door, the queue and its relays, and
// the HTTP listener, built from one ServeOptions. The program around it (tools/) parses
// the command line and turns signals into reload() and stop().
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "options.h"
#include "slimta/storage.h"

namespace slimta::daemon {

class Daemon {
 public:
  using StorageOpener = std::function<std::unique_ptr<QueueStorage>()>;

  // Plans everything from `opts` (plan_serve(): InvalidArgument on a mistake), binds the
  // listeners, then runs as opts.user (started as root), then opens the storage with
  // `open_storage` and builds the queue and the HTTP listener. Nothing is accepted or
  // delivered before start(). Warnings go to `err`.
  Daemon(const ServeOptions& opts, const StorageOpener& open_storage, std::ostream& err);
  ~Daemon();  // stop() and run() if they were not called
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts the queue's deliveries (SMTP sessions begin in run()).
  void start();
  // "HOST:PORT (role), ..." of every listener as bound, HTTP's too.
  const std::string& listening() const;

  // Options read anew (SIGHUP): everything plan_serve() checks is checked again, and a
  // mistake throws QueueError, keeping the current settings. SMTP settings apply to new
  // sessions, relay settings to new attempts; listeners, the storage, the user and the
  // queue's workers and lease take a restart (logged as a warning).
  void reload(const ServeOptions& fresh);

  // Stops accepting: /readyz says draining, new connections are refused; run() returns
  // once the sessions under way ended. May be called from any thread.
  void stop();
  // Serves SMTP until stop(), then stops the HTTP listener and lets the deliveries in
  // flight finish.
  void run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta::daemon
