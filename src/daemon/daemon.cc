#include "daemon.h"

#include "config_file.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grp.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <tuple>

#include "config_file.h"
#include "gauges.h"
#include "http_server.h"
#include "logging.h"
#include "plan.h"
#include "slimta/metrics.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/smtp_server.h"
#include "slimta/timed_storage.h"

namespace slimta::daemon {

namespace {

// A relay replaced on reload while attempts run: each attempt keeps the relay it began
// with until it ends.
class ReloadableRelay : public Relay {
 public:
  explicit ReloadableRelay(std::unique_ptr<Relay> relay) : current_(std::move(relay)) {}
  void set(std::unique_ptr<Relay> relay) { current_.store(std::move(relay)); }
  std::vector<RecipientResult> attempt(const Envelope& envelope, uint32_t attempt) override {
    return current_.load()->attempt(envelope, attempt);
  }
  std::string destination(const std::string& recipient) const override {
    return current_.load()->destination(recipient);
  }

 private:
  std::atomic<std::shared_ptr<Relay>> current_;
};

// Started as root, once the ports are bound and the TLS key and users file read: run as
// the plan's user and group, before the storage is opened so that what serve creates
// is the user's.
void drop_privileges(const std::optional<RunAs>& run_as, std::ostream& err) {
  const bool root = ::geteuid() == 0;
  if (!run_as) {
    if (root) {
      err << "slimta-queue serve: warning: running as root: create a 'slimta' system user "
             "(serve then runs as it) or give --user\n";
    }
    return;
  }
  const RunAs& who = *run_as;
  if (!root) {
    if (who.uid == ::geteuid() && who.gid == ::getegid()) return;
    throw InvalidArgument("--user " + who.name +
                          ": only root can switch users (serve runs as uid " +
                          std::to_string(::geteuid()) + ")");
  }
  if (who.uid == 0) return;  // --user root: stay
  admin::become(who);
  spdlog::info("serve: running as user {} (uid {}, gid {})", who.name, who.uid, who.gid);
}

// The files a SIGHUP reload reads again, as the user serve runs as now: one it cannot
// read would make every reload fail, long after the start. serve does not keep a
// privileged reader; the files are read through the service's group (root:slimta,
// mode 0640, as the package installs the config), and a file that is not is named now.
void warn_unreadable_after_drop(const ServeOptions& opts, const RunAs& who) {
  for (const auto& b : admin::unreadable_files(who, files_serve_reads(opts))) {
    spdlog::warn(
        "serve: {} '{}': user {} cannot read it ({}), so a SIGHUP reload would fail: make it "
        "readable by the service's group (chown root:GROUP, chmod 0640)",
        b.what, b.path, who.name, b.why);
  }
}

// "HOST:PORT (role), ..." of the listeners, to compare across reloads.
std::string describe_listeners(const std::vector<Listener>& listeners) {
  std::string out;
  for (const Listener& l : listeners)
    out += (out.empty() ? "" : ", ") + l.address + " (" + role_name(l.role) + ")";
  return out;
}

void log_rules(const SmtpServerOptions& o, const ServeOptions& so) {
  spdlog::info(
      "serve: clients in {} and authenticated clients may relay to any domain; anyone may "
      "send to {}",
      o.relay_networks.empty() ? "no network" : o.relay_networks.to_string(),
      so.accept_domains.empty() ? "no domain"
                                : fmt::format("{}", fmt::join(so.accept_domains, ", ")));
}

// What a reload cannot change: warned about, not applied.
void warn_about_restart_settings(const ServeOptions& opts, const ServePlan& plan,
                                 const ServeOptions& fresh_opts, const ServePlan& fresh) {
  if (describe_listeners(fresh.listeners) != describe_listeners(plan.listeners)) {
    spdlog::warn("serve: SIGHUP: the listeners changed ({}): that takes a restart; still on {}",
                 describe_listeners(fresh.listeners), describe_listeners(plan.listeners));
  }
  if (fresh_opts.workers != opts.workers || fresh_opts.lease != opts.lease ||
      fresh_opts.rescan != opts.rescan || fresh_opts.full_schedule != opts.full_schedule ||
      fresh_opts.user != opts.user || fresh_opts.group != opts.group ||
      fresh_opts.hostname != opts.hostname || fresh_opts.min_free != opts.min_free) {
    spdlog::warn(
        "serve: SIGHUP: workers, lease, rescan, user, group and min-free take a restart, and "
        "so does the host name in bounces (the greeting, Received: and relays use the new "
        "one)");
  }
  auto limits = [](const ShapingPolicy& p) {
    std::vector<std::tuple<std::string, size_t, double>> out{
        {"*", p.defaults.max_connections, p.defaults.max_rate}};
    for (const auto& [name, l] : p.destinations)
      out.emplace_back(name, l.max_connections, l.max_rate);
    return out;
  };
  if (limits(fresh.shaping) != limits(plan.shaping)) {
    spdlog::warn(
        "serve: SIGHUP: destination limits (max-connections, max-rate) take a restart; "
        "their connection settings apply to new connections now");
  }
}

QueuePolicy queue_policy(const ServeOptions& opts, const ServePlan& plan,
                         metrics::Registry& registry) {
  QueuePolicy policy = plan.retry;  // lifetimes, retry schedule, delay warning
  policy.workers = opts.workers;
  policy.lease = millis(opts.lease);
  policy.reporting_mta = opts.hostname;
  policy.rescan_interval = opts.rescan;
  policy.use_due_index = !opts.full_schedule;
  policy.metrics = &registry;
  policy.shaping = plan.shaping;
  // A slot of a destination lasts as a message's lease: a process that dies lets both go
  // within --lease.
  policy.shaping.slot_lease = policy.lease;
  return policy;
}

}  // namespace

// Members in the order they are built; destroyed in reverse, so that what counts into
// the registry or calls the storage goes before them.
struct Daemon::Impl {
  Impl(const ServeOptions& o, ServePlan p, std::ostream& e)
      : opts(o),
        err(e),
        plan(std::move(p)),
        relay(std::move(plan.relay)),
        reception([this](Envelope&& env) { return queue->enqueue(std::move(env)); },
                  [this](size_t bytes) { return storage->has_room(bytes); }, plan.door),
        server((plan.server_opts.metrics = &registry, plan.server_opts), reception) {}

  void bind();
  void open(const StorageOpener& open_storage);
  void start_http();

  ServeOptions opts;
  std::ostream& err;  // warnings
  ServePlan plan;
  metrics::Registry registry;  // outlives everything that counts into it
  ReloadableRelay relay;
  std::unique_ptr<QueueStorage> storage;
  std::unique_ptr<TimedStorage> timed_storage;  // what the queue uses: its calls timed
  std::shared_ptr<Activity> activity;           // for the status page (--http)
  std::unique_ptr<Queue> queue;
  Reception reception;
  SmtpServer server;
  std::atomic<bool> draining = false;
  std::unique_ptr<QueueGauges> gauges;
  std::unique_ptr<StorageProbe> probe;
  std::unique_ptr<HttpServer> http;
  std::string listening;
  std::mutex reload_mu;  // one reload at a time
  bool ran = false;
};

void Daemon::Impl::bind() {
  for (size_t i = 0; i < plan.listeners.size(); ++i) {
    const Listener& l = plan.listeners[i];
    auto [host, port] = plan.endpoints[i];
    uint16_t p = server.listen(host, port, l.role);
    listening += (listening.empty() ? "" : ", ") + l.address.substr(0, l.address.rfind(':')) + ":" +
                 std::to_string(p) + " (" + role_name(l.role) + ")";
  }
}

void Daemon::Impl::open(const StorageOpener& open_storage) {
  storage = open_storage();
  timed_storage = std::make_unique<TimedStorage>(*storage, registry);
  if (!storage->capabilities().durable) {
    err << "slimta-queue serve: warning: the storage does not make mail durable: a crash can "
           "lose mail already accepted (a Redis server needs appendonly yes and appendfsync "
           "always)\n";
  }
  QueuePolicy policy = queue_policy(opts, plan, registry);
  // No bounce to an SMTP client we do not vouch for of what our own routing refused
  // (HTTP callers have the token, the CLI is local: both vouched for).
  policy.from_outsider = [this](const Envelope& e) {
    return e.client.protocol.find("SMTP") != std::string::npos && !server.vouches_for(e.client);
  };
  policy.log_events = false;  // logged by EventLog, which the JSON format reads as data
  policy.observers = {std::make_shared<EventLog>()};
  if (plan.http) {
    activity = std::make_shared<Activity>(registry);
    policy.observers.push_back(activity);
  }
  queue = std::make_unique<Queue>(*timed_storage, relay, policy);
}

// --http: metrics, health and readiness, the API and the status page.
void Daemon::Impl::start_http() {
  registry.gauge("slimta_build_info", "The running slimta-queue: 1, with its version and storage",
                 [] { return 1.0; }, {{"version", SLIMTA_VERSION}, {"storage", storage->kind()}});
  registry.gauge("slimta_smtp_sessions_active", "SMTP sessions open now",
                 [this] { return static_cast<double>(server.sessions()); });
  gauges = std::make_unique<QueueGauges>(*timed_storage);  // its faults counted too
  gauges->register_metrics(registry);
  probe = std::make_unique<StorageProbe>(*storage);
  auto ready = [this]() -> std::string {
    if (draining) return "draining: serve is stopping";
    if (!storage->has_room(0)) return "the storage is below its free-space guard (min-free)";
    if (std::string faults = timed_storage->repeated_faults(); !faults.empty()) return faults;
    return probe->check(std::chrono::seconds(2));
  };
  auto relay_refusal = [this](const std::string& ip, const Envelope& env, bool authenticated) {
    for (const auto& r : env.recipients) {
      if (auto why = server.refusal(ip, r, authenticated)) return *why;
    }
    return std::string();
  };
  http = std::make_unique<HttpServer>(
      *plan.http,
      HttpContext{registry, *gauges, *activity, *timed_storage, ready, reception, relay_refusal,
                  [this](const std::string& rcpt) { return relay.destination(rcpt); },
                  plan.shaping});
  listening += ", " + http->address() + " (http)";
}

Daemon::Daemon(const ServeOptions& opts, const StorageOpener& open_storage, std::ostream& err) {
  impl_ = std::make_unique<Impl>(opts, plan_serve(opts, err), err);
  impl_->bind();
  drop_privileges(impl_->plan.run_as, err);
  if (impl_->plan.run_as) warn_unreadable_after_drop(opts, *impl_->plan.run_as);
  // Large buffers (messages) straight from mmap, whatever glibc's adaptive threshold
  // has learnt: freed, they go back to the system at once, so memory follows the
  // messages in flight instead of their high-water mark.
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  impl_->open(open_storage);
  if (impl_->plan.http) impl_->start_http();
}

Daemon::~Daemon() {
  if (!impl_->ran) {
    stop();
    run();
  }
}

void Daemon::start() {
  log_rules(impl_->plan.server_opts, impl_->opts);
  impl_->queue->start();
}

const std::string& Daemon::listening() const { return impl_->listening; }

void Daemon::reload(const ServeOptions& fresh_opts) {
  Impl& d = *impl_;
  std::lock_guard lock(d.reload_mu);
  ServePlan fresh = plan_serve(fresh_opts, d.err);
  warn_about_restart_settings(d.opts, d.plan, fresh_opts, fresh);
  fresh.server_opts.metrics = &d.registry;
  d.server.reload(fresh.server_opts);
  d.reception.reload(fresh.door);
  d.relay.set(std::move(fresh.relay));
  log_rules(fresh.server_opts, fresh_opts);
  spdlog::info("serve: SIGHUP: configuration reloaded");
}

void Daemon::stop() {
  impl_->draining = true;
  impl_->server.stop();
}

void Daemon::run() {
  impl_->ran = true;
  impl_->server.run();  // returns once stopped and every session ended
  impl_->http.reset();
  impl_->queue->stop();
}

}  // namespace slimta::daemon
