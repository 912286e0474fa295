#include "plan.h"

#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <toml++/toml.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "config_file.h"
#include "disk/permissions.h"
#include "slimta/ascii.h"
#include "slimta/disk_storage.h"
#include "slimta/mx_relay.h"
#include "slimta/routing_relay.h"
#include "slimta/smtp_relay.h"
#include "slimta/user_database.h"

namespace slimta::daemon {

namespace {

// The smarthost password: from --smarthost-password-file (first line), else from
// $SLIMTA_SMARTHOST_PASSWORD; never from the command line, where `ps` would show it.
std::string smarthost_password(const ServeOptions& opts) {
  if (!opts.smarthost_password_file.empty()) {
    disk::check_permissions(opts.smarthost_password_file, "--smarthost-password-file",
                            disk::FileUse::secret);
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
void read_config_tables(const ConfigFile& file, std::vector<Listener>& listeners,
                        std::vector<std::string>& routes) {
  const toml::table& config = file.table;
  auto bad = [&](const toml::node& node, const std::string& why) { return file.error(node, why); };
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

// --sender-logins: "SENDER LOGIN[,LOGIN...]" a line (Postfix's smtpd_sender_login_maps),
// '#' comments; lower-cased.
std::map<std::string, std::set<std::string>> read_sender_logins(const std::string& path) {
  disk::check_permissions(path, "--sender-logins", disk::FileUse::setting);
  std::ifstream in(path);
  if (!in) throw InvalidArgument("cannot read --sender-logins file '" + path + "'");
  std::map<std::string, std::set<std::string>> out;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    std::istringstream fields(line);
    std::string sender, logins, extra;
    if (!(fields >> sender) || sender[0] == '#') continue;
    if (!(fields >> logins) || (fields >> extra) || sender.find('@') == std::string::npos) {
      throw InvalidArgument("--sender-logins '" + path + "' line " + std::to_string(number) +
                            ": expected SENDER LOGIN[,LOGIN...] (SENDER user@domain or @domain)");
    }
    for (size_t at = 0; at <= logins.size();) {
      size_t comma = std::min(logins.find(',', at), logins.size());
      if (comma > at) out[to_lower(sender)].insert(to_lower(logins.substr(at, comma - at)));
      at = comma + 1;
    }
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

// A group's name, or its number when it has none.
std::string group_name(gid_t gid) {
  const struct group* gr = ::getgrgid(gid);
  return gr ? std::string(gr->gr_name) : std::to_string(gid);
}

// --queue-lifetime and the rest of the queue's schedule, each named when bad.
QueuePolicy retry_policy(const ServeOptions& opts) {
  auto duration = [](const std::string& text, const char* option, bool zero_allowed) {
    if (zero_allowed && (text == "0" || text == "none")) return 0.0;
    try {
      return admin::parse_duration(text);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(std::string(option) + ": " + e.what());
    }
  };
  QueuePolicy p;
  p.max_age = duration(opts.queue_lifetime, "--queue-lifetime", false);
  p.bounce_max_age = duration(opts.bounce_lifetime, "--bounce-lifetime", false);
  p.initial_backoff = duration(opts.minimal_backoff, "--minimal-backoff", false);
  p.max_backoff = duration(opts.maximal_backoff, "--maximal-backoff", false);
  p.multiplier = opts.backoff_factor;
  p.max_attempts = opts.max_attempts;
  p.delay_warning = duration(opts.delay_warning, "--delay-warning", true);
  if (p.max_backoff < p.initial_backoff) {
    throw InvalidArgument("--maximal-backoff " + opts.maximal_backoff +
                          " is shorter than --minimal-backoff " + opts.minimal_backoff);
  }
  if (p.delay_warning >= p.max_age) {
    throw InvalidArgument("--delay-warning " + opts.delay_warning +
                          " is not before --queue-lifetime " + opts.queue_lifetime +
                          ": the message would be bounced first");
  }
  return p;
}

}  // namespace

std::optional<RunAs> run_as(const ServeOptions& opts) {
  std::string name = opts.user;
  if (name.empty()) {
    if (!opts.group.empty()) throw InvalidArgument("--group " + opts.group + " needs --user");
    if (::geteuid() != 0 || !::getpwnam("slimta")) return std::nullopt;
    name = "slimta";
  }
  const struct passwd* pw = ::getpwnam(name.c_str());
  if (!pw) throw InvalidArgument("--user " + name + ": no such user");
  RunAs out{name, pw->pw_uid, pw->pw_gid};
  if (!opts.group.empty()) {
    const struct group* gr = ::getgrnam(opts.group.c_str());
    if (!gr) throw InvalidArgument("--group " + opts.group + ": no such group");
    out.gid = gr->gr_gid;
  }
  return out;
}

ServePlan plan_serve(const ServeOptions& opts, std::ostream& err) {
  ServePlan plan;
  for (const auto& a : opts.listen) plan.listeners.push_back({a, ListenerRole::smtp});
  for (const auto& a : opts.submission) plan.listeners.push_back({a, ListenerRole::submission});
  for (const auto& a : opts.submissions) plan.listeners.push_back({a, ListenerRole::submissions});
  plan.routes = opts.routes;
  if (opts.config) read_config_tables(*opts.config, plan.listeners, plan.routes);
  plan.shaping = read_shaping(opts.config.get());
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
  plan.door.max_bytes_in_flight = opts.max_bytes_in_flight;
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
  server_opts.postmaster = opts.postmaster;
  if (!opts.sender_logins.empty())
    server_opts.sender_logins = read_sender_logins(opts.sender_logins);
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
  plan.retry = retry_policy(opts);
  // What the server, the HTTP listener and the switch of user would refuse, refused now:
  // check-config stops here, and says what serve would say.
  std::vector<std::pair<std::string, ListenerRole>> listeners;
  for (size_t i = 0; i < plan.listeners.size(); ++i)
    listeners.emplace_back(plan.endpoints[i].host, plan.listeners[i].role);
  SmtpServer::check(plan.server_opts, listeners);
  if (!opts.http.empty())
    plan.http = http_binding(HttpOptions{opts.http, opts.http_token_file, {}});
  plan.run_as = run_as(opts);
  return plan;
}

const char* role_name(ListenerRole role) { return names_of(role).name; }

admin::DestinationOf destination_map(const ServeOptions& opts) {
  std::vector<Listener> listeners;
  std::vector<std::string> routes = opts.routes;
  if (opts.config) read_config_tables(*opts.config, listeners, routes);
  std::ostringstream warnings;  // serve's to give, not the CLI's
  std::shared_ptr<Relay> relay =
      make_relay(opts, routes, read_shaping(opts.config.get()), warnings);
  return [relay](const std::string& recipient) { return relay->destination(recipient); };
}

std::vector<std::pair<std::string, std::string>> files_serve_reads(const ServeOptions& opts) {
  std::vector<std::pair<std::string, std::string>> files = {
      {"--users", opts.users},
      {"--tls-cert", opts.tls_cert},
      {"--tls-key", opts.tls_key},
      {"--accept-recipients", opts.accept_recipients},
      {"--sender-logins", opts.sender_logins},
      {"--smarthost-password-file", opts.smarthost_password_file},
      {"--http-token-file", opts.http_token_file}};
  if (opts.config) files.emplace_back("--config", opts.config->path);
  return files;
}

int check_config(const ServeOptions& opts, std::ostream& out, std::ostream& err) {
  ServePlan plan = plan_serve(opts, err);
  // Root reads everything; the service user serve becomes (and the unit starts as) may
  // not (issue 34: `passwd` made a users file only root could read, and check-config,
  // run as root, passed it).
  if (plan.run_as && plan.run_as->uid != ::geteuid()) {
    auto bad = admin::unreadable_files(*plan.run_as, files_serve_reads(opts));
    if (!bad.empty()) {
      const auto& b = bad.front();
      throw InvalidArgument(fmt::format(
          "{} '{}': serve runs as user {}, which cannot read it ({}): make it readable by the "
          "service's group (chown root:{} FILE; chmod 0640 FILE){}",
          b.what, b.path, plan.run_as->name, b.why, group_name(plan.run_as->gid),
          bad.size() > 1 ? fmt::format(" ({} more such files)", bad.size() - 1) : ""));
    }
  }
  out << "# listeners\n";
  for (const Listener& l : plan.listeners)
    out << "#   " << l.address << " (" << names_of(l.role).name << ")\n";
  out << "# routes\n";
  for (const std::string& r : plan.routes) out << "#   " << r << "\n";
  if (plan.routes.empty()) out << "#   (none)\n";
  out << "# destinations\n";
  auto print = [&](const std::string& name, const DestinationLimits& l) {
    const size_t cap = ShapingPolicy::worker_cap(opts.workers);
    out << "#   " << name << ": max-connections " << l.max_connections
        << (l.max_connections > cap ? fmt::format(" (at most {} of this process's {} workers: the "
                                                  "rest stay for other destinations)",
                                                  cap, opts.workers)
                                    : "")
        << ", max-rate "
        << (l.max_rate > 0 ? fmt::format("{:g}/s", l.max_rate) : std::string("none"))
        << ", max-messages-per-connection "
        << (l.max_messages_per_connection ? std::to_string(l.max_messages_per_connection)
                                          : std::string("none"))
        << ", connect-timeout "
        << (l.connect_timeout.count() ? fmt::format("{:g} s", l.connect_timeout.count() / 1000.0)
                                      : std::string("the relay's"))
        << "\n";
  };
  const QueuePolicy& r = plan.retry;
  out << "# queue\n#   lifetime " << opts.queue_lifetime << " (bounces " << opts.bounce_lifetime
      << "), retries after " << opts.minimal_backoff << ", each "
      << fmt::format("{:g}", r.multiplier) << "x as long up to " << opts.maximal_backoff << ", "
      << (r.max_attempts ? fmt::format("at most {} attempts", r.max_attempts)
                         : std::string("no limit of attempts"))
      << ", "
      << (r.delay_warning > 0 ? "a delay warning after " + opts.delay_warning
                              : std::string("no delay warning"))
      << "\n";
  print("(default)", plan.shaping.defaults);
  for (const auto& [name, l] : plan.shaping.destinations) print(name, l);
  return 0;
}

}  // namespace slimta::daemon
