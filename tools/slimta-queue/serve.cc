#include "serve.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grp.h>
#include <malloc.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <termios.h>
#include <unistd.h>

#include <toml++/toml.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "config_file.h"
#include "format.h"
#include "http.h"
#include "slimta/ascii.h"
#include "slimta/disk_storage.h"
#include "slimta/host_port.h"
#include "slimta/mx_relay.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/routing_relay.h"
#include "slimta/smtp_relay.h"
#include "slimta/smtp_server.h"
#include "slimta/timed_storage.h"
#include "slimta/user_database.h"

namespace slimta::cli {

namespace {

// A flag's seconds as a duration.
std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// The smarthost password: from --smarthost-password-file (first line), else from
// $SLIMTA_SMARTHOST_PASSWORD; never from the command line, where `ps` would show it.
std::string smarthost_password(const ServeOptions& opts) {
  if (!opts.smarthost_password_file.empty()) {
    std::ifstream in(opts.smarthost_password_file);
    std::string line;
    if (!in || !std::getline(in, line)) {
      throw InvalidArgument("cannot read --smarthost-password-file '" +
                            opts.smarthost_password_file + "'");
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  }
  if (const char* p = std::getenv("SLIMTA_SMARTHOST_PASSWORD")) return p;
  throw InvalidArgument(
      "--smarthost-user needs --smarthost-password-file or $SLIMTA_SMARTHOST_PASSWORD");
}

struct Listener {
  std::string address;  // HOST:PORT
  ListenerRole role;
};

// Each role's name (in the config file and the log) and flag.
struct RoleNames {
  ListenerRole role;
  const char* name;
  const char* option;
};
constexpr RoleNames kRoles[] = {{ListenerRole::smtp, "smtp", "--listen"},
                                {ListenerRole::submission, "submission", "--submission"},
                                {ListenerRole::submissions, "submissions", "--submissions"}};
const RoleNames& names_of(ListenerRole role) {
  for (const RoleNames& r : kRoles)
    if (r.role == role) return r;
  return kRoles[0];
}

// The config file's tables, which CLI11 does not read: [routes] (DOMAIN = "HOST:PORT")
// and [[listener]] (address = "HOST:PORT", role = "smtp" | "submission" |
// "submissions"). An unknown key or a wrong type is an error naming it and its line.
void read_config_tables(const std::string& path, std::vector<Listener>& listeners,
                        std::vector<std::string>& routes) {
  toml::table config = parse_config_file(path);
  auto bad = [&](const toml::node& node, const std::string& why) {
    return InvalidArgument(
        fmt::format("config file '{}' line {}: {}", path, node.source().begin.line, why));
  };
  if (const toml::node* node = config.get("routes")) {
    const toml::table* table = node->as_table();
    if (!table) throw bad(*node, "routes must be a table: [routes] then DOMAIN = \"HOST:PORT\"");
    for (const auto& [domain, target] : *table) {
      auto where = target.value<std::string>();
      if (!where)
        throw bad(target, "route for '" + std::string(domain.str()) + "' must be \"HOST:PORT\"");
      routes.push_back(std::string(domain.str()) + "=" + *where);
    }
  }
  if (const toml::node* node = config.get("listener")) {
    const toml::array* array = node->as_array();
    if (!array) throw bad(*node, "listener must be a table array: [[listener]]");
    for (const toml::node& item : *array) {
      const toml::table* table = item.as_table();
      if (!table) throw bad(item, "each [[listener]] must be a table");
      Listener l{"", ListenerRole::smtp};
      for (const auto& [key, value] : *table) {
        auto text = value.value<std::string>();
        if (!text) throw bad(value, "listener " + std::string(key.str()) + " must be a string");
        if (key == "address") {
          l.address = *text;
        } else if (key == "role") {
          auto known = std::find_if(std::begin(kRoles), std::end(kRoles),
                                    [&](const RoleNames& r) { return *text == r.name; });
          if (known == std::end(kRoles)) {
            throw bad(value,
                      "listener role '" + *text + "' is not smtp, submission or submissions");
          }
          l.role = known->role;
        } else {
          throw bad(value, "unknown listener key '" + std::string(key.str()) + "' (address, role)");
        }
      }
      if (l.address.empty()) throw bad(item, "[[listener]] without an address");
      listeners.push_back(l);
    }
  }
}

// A network list from a flag (or its config key); errors name the flag.
IpNetworks networks_option(const std::string& value, const char* flag) {
  try {
    return IpNetworks::parse(value);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string(flag) + ": " + e.what());
  }
}

// The known recipients of the accept domains: one "user@domain" or "@domain" a line.
std::set<std::string> read_recipients(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument("cannot read --accept-recipients file '" + path + "'");
  std::set<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos || line[start] == '#') continue;
    size_t end = line.find_last_not_of(" \t\r");
    out.insert(line.substr(start, end - start + 1));
  }
  return out;
}

// Out: the smarthost, or else the MX hosts of each recipient's domain; ahead of
// either, the routes of the transport map.
// Each destination's connections take its [destinations] settings (a route's
// destination is its domain, the smarthost's HOST:PORT, an MX domain itself).
std::unique_ptr<Relay> make_relay(const ServeOptions& opts, const std::vector<std::string>& routes,
                                  const ShapingPolicy& shaping, std::ostream& err) {
  SmtpRelayOptions base;
  base.ehlo_name = opts.hostname;
  base.idle_connection_timeout = millis(opts.relay_idle_timeout);
  auto apply = [](SmtpRelayOptions& o, const DestinationLimits& l) {
    if (l.connect_timeout.count() > 0) o.connect_timeout = l.connect_timeout;
    if (l.idle_timeout.count() > 0) o.idle_connection_timeout = l.idle_timeout;
    o.max_messages_per_connection = l.max_messages_per_connection;
  };
  apply(base, shaping.defaults);
  auto for_destination = [&](SmtpRelayOptions o, const std::string& name) {
    auto it = shaping.destinations.find(name);
    if (it != shaping.destinations.end()) apply(o, it->second);
    return o;
  };
  std::shared_ptr<Relay> fallback;
  if (!opts.smarthost.empty()) {
    SmtpRelayOptions r = base;
    HostPort smarthost = parse_host_port(opts.smarthost, "--smarthost");
    r.host = smarthost.host;
    r.port = smarthost.port;
    using Tls = SmtpRelayOptions::Tls;
    if (opts.smarthost_tls == "never") r.starttls = Tls::never;
    if (opts.smarthost_tls == "required") r.starttls = Tls::required;
    r.tls_ca_file = opts.smarthost_ca;
    r.username = opts.smarthost_user;
    r.auth_insecure = opts.smarthost_auth_insecure;
    if (!r.username.empty() && r.starttls != Tls::required && !r.auth_insecure) {
      throw InvalidArgument(
          "--smarthost-user: the password goes only over TLS with a verified certificate: add "
          "--smarthost-tls required (with --smarthost-ca if the smarthost's CA is not the "
          "system's), or --smarthost-auth-insecure to send it anyway");
    }
    if (!r.username.empty()) r.password = smarthost_password(opts);
    fallback =
        std::make_shared<SmtpRelay>(for_destination(r, r.host + ":" + std::to_string(r.port)));
  } else {
    MxRelayOptions m;
    m.smtp = base;
    m.smtp.port = opts.mx_port;
    m.dns_server = opts.dns_server;
    for (const auto& [name, limits] : shaping.destinations)
      if (name.find(':') == std::string::npos) m.domains[name] = for_destination(m.smtp, name);
    fallback = std::make_shared<MxRelay>(m);
    err << "slimta-queue serve: no --smarthost: delivering to each domain's MX hosts\n";
  }
  std::map<std::string, std::shared_ptr<Relay>> by_domain;
  // One relay per HOST:PORT, or per route where its destination has settings of its own.
  std::map<std::string, std::shared_ptr<Relay>> by_target;
  for (const std::string& route : routes) {
    size_t eq = route.find('=');
    if (eq == std::string::npos || eq == 0)
      throw InvalidArgument("--route '" + route + "' is not DOMAIN=HOST:PORT");
    std::string target = route.substr(eq + 1);
    std::string domain = to_lower(route.substr(0, eq));
    bool own = shaping.destinations.contains(domain);
    auto& relay = by_target[own ? domain + "=" + target : target];
    if (!relay) {
      SmtpRelayOptions r = base;
      HostPort to = parse_host_port(target, "--route target");
      r.host = to.host;
      r.port = to.port;
      relay = std::make_shared<SmtpRelay>(own ? for_destination(r, domain) : r);
    }
    by_domain[route.substr(0, eq)] = relay;
  }
  return std::make_unique<RoutingRelay>(std::move(by_domain), std::move(fallback));
}

}  // namespace

namespace {

// What serve runs, built and checked from its options and the config file's tables
// before anything listens: check-config stops there.
struct ServePlan {
  std::vector<Listener> listeners;
  std::vector<HostPort> endpoints;
  std::vector<std::string> routes;
  ShapingPolicy shaping;  // [destinations]
  SmtpServerOptions server_opts;
  ReceptionOptions door;  // the one door's limits
  std::unique_ptr<Relay> relay;
};

ServePlan plan_serve(const ServeOptions& opts, std::ostream& err) {
  ServePlan plan;
  for (const auto& a : opts.listen) plan.listeners.push_back({a, ListenerRole::smtp});
  for (const auto& a : opts.submission) plan.listeners.push_back({a, ListenerRole::submission});
  for (const auto& a : opts.submissions) plan.listeners.push_back({a, ListenerRole::submissions});
  plan.routes = opts.routes;
  if (!opts.config_file.empty()) read_config_tables(opts.config_file, plan.listeners, plan.routes);
  plan.shaping = read_shaping(opts.config_file);
  for (const Listener& l : plan.listeners) {
    plan.endpoints.push_back(
        parse_host_port(l.address, names_of(l.role).option, std::nullopt, /*port_zero=*/true));
  }
  SmtpServerOptions& server_opts = plan.server_opts;
  server_opts.hostname = opts.hostname;
  plan.door.hostname = opts.hostname;
  plan.door.max_message_size = opts.max_message_size;
  server_opts.max_data_line = opts.max_line_length;
  server_opts.max_sessions = opts.max_sessions;
  server_opts.max_bytes_in_flight = opts.max_bytes_in_flight;
  try {  // the storage applies it (to a disk spool); a bad value is refused now
    MinFree::parse(opts.min_free);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("--") + e.what());
  }
  server_opts.max_sessions_per_client = opts.max_sessions_per_client;
  server_opts.data_timeout = millis(opts.data_timeout);
  server_opts.tls_certificate_file = opts.tls_cert;
  server_opts.tls_key_file = opts.tls_key;
  server_opts.relay_networks = networks_option(opts.relay_networks, "--relay-networks");
  server_opts.accept_domains = opts.accept_domains;
  if (!opts.accept_recipients.empty())
    server_opts.known_recipients = read_recipients(opts.accept_recipients);
  if (!opts.users.empty())
    server_opts.users = std::make_shared<UserDatabase>(UserDatabase::load(opts.users));
  server_opts.proxy_from = networks_option(opts.proxy_from, "--proxy-from");
  if (server_opts.relay_networks.contains("0.0.0.0") || server_opts.relay_networks.contains("::")) {
    err << "slimta-queue serve: warning: --relay-networks "
        << server_opts.relay_networks.to_string()
        << " takes in every address: this is an open relay\n";
  }
  if (opts.hostname.empty() && host_name().find('.') == std::string::npos) {
    err << "slimta-queue serve: warning: this host's name '" << host_name()
        << "' is not fully qualified: servers may refuse it in HELO and in bounces; give "
           "--hostname a name with its domain\n";
  }
  plan.relay = make_relay(opts, plan.routes, plan.shaping, err);
  return plan;
}

}  // namespace

int cmd_check_config(const ServeOptions& opts, std::ostream& out, std::ostream& err) {
  ServePlan plan = plan_serve(opts, err);
  out << "# listeners\n";
  for (const Listener& l : plan.listeners)
    out << "#   " << l.address << " (" << names_of(l.role).name << ")\n";
  out << "# routes\n";
  for (const std::string& r : plan.routes) out << "#   " << r << "\n";
  if (plan.routes.empty()) out << "#   (none)\n";
  out << "# destinations\n";
  auto print = [&](const std::string& name, const DestinationLimits& l) {
    out << "#   " << name << ": max-connections " << l.max_connections << ", max-rate "
        << (l.max_rate > 0 ? fmt::format("{:g}/s", l.max_rate) : std::string("none"))
        << ", max-messages-per-connection "
        << (l.max_messages_per_connection ? std::to_string(l.max_messages_per_connection)
                                          : std::string("none"))
        << ", connect-timeout "
        << (l.connect_timeout.count() ? fmt::format("{:g} s", l.connect_timeout.count() / 1000.0)
                                      : std::string("the relay's"))
        << "\n";
  };
  print("(default)", plan.shaping.defaults);
  for (const auto& [name, l] : plan.shaping.destinations) print(name, l);
  return 0;
}

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
// opts.user (default: slimta, when that user exists) and opts.group (default: the
// user's), before the storage is opened so that what serve creates is the user's.
void drop_privileges(const ServeOptions& opts, std::ostream& err) {
  const bool root = ::geteuid() == 0;
  std::string name = opts.user;
  if (name.empty()) {
    if (!opts.group.empty()) throw InvalidArgument("--group " + opts.group + " needs --user");
    if (!root) return;
    if (!::getpwnam("slimta")) {
      err << "slimta-queue serve: warning: running as root: create a 'slimta' system user "
             "(serve then runs as it) or give --user\n";
      return;
    }
    name = "slimta";
  }
  const struct passwd* pw = ::getpwnam(name.c_str());
  if (!pw) throw InvalidArgument("--user " + name + ": no such user");
  const uid_t uid = pw->pw_uid;
  gid_t gid = pw->pw_gid;
  if (!opts.group.empty()) {
    const struct group* gr = ::getgrnam(opts.group.c_str());
    if (!gr) throw InvalidArgument("--group " + opts.group + ": no such group");
    gid = gr->gr_gid;
  }
  if (!root) {
    if (uid == ::geteuid() && gid == ::getegid()) return;
    throw InvalidArgument("--user " + name + ": only root can switch users (serve runs as uid " +
                          std::to_string(::geteuid()) + ")");
  }
  if (uid == 0) return;  // --user root: stay
  if (::initgroups(name.c_str(), gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
    throw QueueError("cannot run as user " + name + ": " + std::strerror(errno));
  }
  if (::setuid(0) == 0) throw QueueError("ran as user " + name + " but could become root again");
  spdlog::info("serve: running as user {} (uid {}, gid {})", name, uid, gid);
}

// "HOST:PORT (role), ..." of the listeners, to compare across reloads.
std::string describe_listeners(const std::vector<Listener>& listeners) {
  std::string out;
  for (const Listener& l : listeners)
    out += (out.empty() ? "" : ", ") + l.address + " (" + names_of(l.role).name + ")";
  return out;
}

}  // namespace

int cmd_serve(const std::function<std::unique_ptr<QueueStorage>()>& open_storage,
              const ServeOptions& opts, const std::function<ServeOptions()>& reread,
              std::ostream& out, std::ostream& err) {
  // SIGTERM, SIGINT and SIGHUP are taken by one thread with sigwait(): blocked here,
  // before any other thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A closed stdout or stderr must not kill the daemon (sockets use MSG_NOSIGNAL).
  ::signal(SIGPIPE, SIG_IGN);

  ServePlan plan = plan_serve(opts, err);
  metrics::Registry registry;  // outlives everything that counts into it
  plan.server_opts.metrics = &registry;
  ReloadableRelay relay(std::move(plan.relay));
  // The storage and the queue, once serve runs as its user (before any session begins).
  std::unique_ptr<QueueStorage> storage;
  std::unique_ptr<Queue> queue;
  Reception reception([&queue](Envelope&& env) { return queue->enqueue(std::move(env)); },
                      [&storage](size_t bytes) { return storage->has_room(bytes); }, plan.door);
  SmtpServer server(plan.server_opts, reception);
  std::string bound;
  for (size_t i = 0; i < plan.listeners.size(); ++i) {
    const Listener& l = plan.listeners[i];
    auto [host, port] = plan.endpoints[i];
    uint16_t p = server.listen(host, port, l.role);
    bound += (bound.empty() ? "" : ", ") + l.address.substr(0, l.address.rfind(':')) + ":" +
             std::to_string(p) + " (" + names_of(l.role).name + ")";
  }
  drop_privileges(opts, err);

  storage = open_storage();
  TimedStorage timed_storage(*storage, registry);  // what the queue uses: its calls timed
  if (!storage->capabilities().durable) {
    err << "slimta-queue serve: warning: the storage does not make mail durable: a crash can "
           "lose mail already accepted (a Redis server needs appendonly yes and appendfsync "
           "always)\n";
  }
  // Large buffers (messages) straight from mmap, whatever glibc's adaptive threshold
  // has learnt: freed, they go back to the system at once, so memory follows the
  // messages in flight instead of their high-water mark.
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  QueuePolicy policy;
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
  std::unique_ptr<Activity> activity;  // for the status page
  if (!opts.http.empty()) {
    activity = std::make_unique<Activity>(registry);
    policy.on_deferral = [a = activity.get()](const std::string& reply) { a->deferred(reply); };
  }
  queue = std::make_unique<Queue>(timed_storage, relay, policy);

  // --http: metrics, health and readiness; the HTTP server goes first at the end.
  std::atomic<bool> draining = false;
  std::unique_ptr<QueueGauges> gauges;
  std::unique_ptr<StorageProbe> probe;
  std::unique_ptr<HttpServer> http;
  if (!opts.http.empty()) {
    registry.gauge("slimta_build_info", "The running slimta-queue: 1, with its version and storage",
                   [] { return 1.0; }, {{"version", SLIMTA_VERSION}, {"storage", storage->kind()}});
    registry.gauge("slimta_smtp_sessions_active", "SMTP sessions open now",
                   [&server] { return static_cast<double>(server.sessions()); });
    gauges = std::make_unique<QueueGauges>(*storage);
    const char* shared = " (the whole shared queue, the same on every node: aggregate with max())";
    registry.gauge("slimta_queue_messages", std::string("Messages queued") + shared,
                   [g = gauges.get()] { return g->messages(); });
    registry.gauge("slimta_queue_held_messages", std::string("Messages held") + shared,
                   [g = gauges.get()] { return g->held(); });
    registry.gauge("slimta_queue_oldest_message_age_seconds",
                   std::string("Age of the oldest queued message") + shared,
                   [g = gauges.get()] { return g->oldest_age(); });
    registry.gauge("slimta_queue_scan_seconds",
                   "Time the last background scan of the queue for these gauges took",
                   [g = gauges.get()] { return g->scan_seconds(); });
    probe = std::make_unique<StorageProbe>(*storage);
    auto ready = [&draining, &storage, &probe]() -> std::string {
      if (draining) return "draining: serve is stopping";
      if (!storage->has_room(0)) return "the storage is below its free-space guard (min-free)";
      return probe->check(std::chrono::seconds(2));
    };
    http = std::make_unique<HttpServer>(
        HttpOptions{opts.http, opts.http_token_file},
        HttpContext{registry, *gauges, *activity, timed_storage, ready, reception,
                    [&server](const std::string& ip, const Envelope& env, bool authenticated) {
                      for (const auto& r : env.recipients) {
                        if (auto why = server.refusal(ip, r, authenticated)) return *why;
                      }
                      return std::string();
                    }});
  }

  auto log_rules = [](const SmtpServerOptions& o, const ServeOptions& so) {
    spdlog::info(
        "serve: clients in {} and authenticated clients may relay to any domain; anyone may "
        "send to {}",
        o.relay_networks.empty() ? "no network" : o.relay_networks.to_string(),
        so.accept_domains.empty() ? "no domain"
                                  : fmt::format("{}", fmt::join(so.accept_domains, ", ")));
  };
  log_rules(plan.server_opts, opts);
  queue->start();
  if (http) bound += ", " + http->address() + " (http)";
  out << "slimta-queue serve: listening on " << bound << "\n" << std::flush;
  sd_notifyf(0, "READY=1\nSTATUS=listening on %s", bound.c_str());

  // SIGHUP: the command line and the config file are read again, and with them the
  // users, TLS and recipients files; everything serve checks at start is checked again.
  // The SMTP settings apply to new sessions (those under way keep theirs), the relay
  // settings to new delivery attempts. A reload that fails keeps the current settings.
  // Listeners, the storage, the user and the queue's workers and lease take a restart.
  const std::string listeners = describe_listeners(plan.listeners);
  auto reload = [&] {
    sd_notify(0, "RELOADING=1\nSTATUS=reloading");
    try {
      ServeOptions fresh_opts = reread();
      ServePlan fresh = plan_serve(fresh_opts, err);
      if (describe_listeners(fresh.listeners) != listeners) {
        spdlog::warn("serve: SIGHUP: the listeners changed ({}): that takes a restart; still on {}",
                     describe_listeners(fresh.listeners), listeners);
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
      fresh.server_opts.metrics = &registry;
      SmtpServerOptions applied = fresh.server_opts;
      server.reload(std::move(fresh.server_opts));
      reception.reload(std::move(fresh.door));
      relay.set(std::move(fresh.relay));
      log_rules(applied, fresh_opts);
      spdlog::info("serve: SIGHUP: configuration reloaded");
    } catch (const QueueError& e) {
      spdlog::error("serve: SIGHUP: reload failed, keeping the current settings: {}", e.what());
    }
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s", bound.c_str());
  };
  std::thread waiter([&] {
    while (true) {
      int sig = 0;
      sigwait(&signals, &sig);
      if (sig == SIGHUP) {
        reload();
        continue;
      }
      spdlog::info("serve: signal {}: stopping", sig);
      draining = true;
      sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing sessions and deliveries");
      server.stop();
      return;
    }
  });
  server.run();                                   // returns once stopped and every session ended
  pthread_kill(waiter.native_handle(), SIGTERM);  // no-op if it already returned
  waiter.join();
  http.reset();
  queue->stop();
  out << "slimta-queue serve: stopped\n";
  return 0;
}

int cmd_passwd(const std::string& user, const std::string& users_file, std::ostream& err) {
  bool terminal = ::isatty(STDIN_FILENO) == 1;
  auto read_password = [&](const char* prompt) {
    termios saved{};
    if (terminal) {
      err << prompt << std::flush;
      ::tcgetattr(STDIN_FILENO, &saved);
      termios quiet = saved;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::string line;
    bool got = static_cast<bool>(std::getline(std::cin, line));
    if (terminal) {
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
      err << "\n";
    }
    if (!got) throw InvalidArgument("no password given on standard input");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  };
  std::string password = read_password("Password: ");
  if (password.empty()) throw InvalidArgument("the password is empty");
  if (terminal && read_password("Again: ") != password)
    throw InvalidArgument("the passwords differ");
  UserDatabase::store(users_file, user, UserDatabase::hash(password));
  err << "slimta-queue passwd: " << user << " set in " << users_file << "\n";
  return 0;
}

}  // namespace slimta::cli
