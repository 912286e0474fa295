// serve's options: one struct, and the one place that defines them (names, help,
// defaults, checks) for the command line and the config file's [serve] table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace slimta::daemon {

struct ConfigFile;

struct ServeOptions {
  std::vector<std::string> listen{"127.0.0.1:2525"};   // HOST:PORT, [V6]:PORT: port-25 role
  std::vector<std::string> submission;                 // with AUTH required (587)
  std::vector<std::string> submissions;                // implicit TLS, AUTH required (465)
  std::string relay_networks = "127.0.0.0/8,::1/128";  // who may relay without AUTH
  std::vector<std::string> accept_domains;             // mail for these from anyone
  std::string accept_recipients;                       // file: the accept domains' users
  std::string postmaster;                              // where RCPT TO:<postmaster> goes
  std::string sender_logins;                           // file: SENDER LOGIN[,LOGIN...]
  std::vector<std::string> routes;                     // DOMAIN=HOST:PORT
  std::string users;                                   // users file: AUTH offered under TLS
  std::string proxy_from;                              // load balancers sending PROXY headers
  std::shared_ptr<const ConfigFile> config;  // --config's file: [routes], [[listener]], ...
  std::string smarthost;                     // HOST:PORT; empty: MX delivery by DNS
  std::string dns_server;                    // IP[:PORT] for MX lookups; empty: resolv.conf's
  uint16_t mx_port = 25;                     // port of the MX hosts
  std::string hostname;                      // empty: this host's name
  size_t max_message_size = 50 * 1024 * 1024;
  size_t max_line_length = 65536;  // octets, without CRLF
  std::string user, group;         // started as root: who to run as after binding
  std::string http;                // HOST:PORT of the metrics/health listener; empty: none
  std::string http_token_file;     // bearer token for /api/ (needed off loopback)
  double data_timeout = 600;       // seconds for a whole message's data
  size_t max_sessions = 0;         // 0: from the file descriptor limit
  size_t max_sessions_per_client = 20;
  double relay_idle_timeout = 30;                // seconds an idle outgoing connection is kept
  size_t max_bytes_in_flight = size_t{1} << 30;  // messages held in memory at once
  std::string min_free;        // disk spool: BYTES[K|M|G] or N%; empty: 1 GiB or 5%, the smaller
  size_t workers = 16;         // delivery attempts in flight
  double lease = 300;          // seconds
  double rescan = 300;         // seconds between full rescans of the storage (0: never)
  bool full_schedule = false;  // hold every message's schedule even with a due index
  // The queue's policy (durations as parse_duration reads them: 90s, 30m, 2h, 5d):
  std::string queue_lifetime = "5d";   // give up and bounce (maximal_queue_lifetime)
  std::string bounce_lifetime = "5d";  // the same for bounces (bounce_queue_lifetime)
  std::string minimal_backoff = "5m";  // the first retry after this
  std::string maximal_backoff =
      "1h";  // each next one after twice (backoff_factor) as long, up to this
  double backoff_factor = 2;
  uint32_t max_attempts = 0;           // give up after this many attempts; 0: by lifetime alone
  std::string delay_warning = "none";  // one delay warning to the sender after this, or none
  std::string tls_cert, tls_key;       // PEM: offer STARTTLS
  std::string smarthost_tls = "opportunistic";  // never | opportunistic | required
  std::string smarthost_ca;                     // CA file for required TLS (default: system)
  std::string smarthost_user;                   // AUTH to the smarthost
  bool smarthost_auth_insecure = false;         // ... even without verified TLS
  std::string smarthost_password_file;          // its password (or $SLIMTA_SMARTHOST_PASSWORD)
};

// Adds serve's options to its CLI11 subcommand, each filling its member of `opts`.
void define_serve_options(CLI::App& serve, ServeOptions& opts);

}  // namespace slimta::daemon
