// slimta-queue: inspect and manage a slimta queue in any storage.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <optional>

#include <fmt/format.h>

#include "commands.h"
#include "config_file.h"
#include "logging.h"
#include "serve.h"
#include "slimta/open_storage.h"

namespace {

// The subcommand whose name is closest to `word`, if one is close.
std::optional<std::string> closest_subcommand(const CLI::App& app, const std::string& word) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  return slimta::cli::closest(word, names);
}

// Each subcommand's --help lists the options of the whole program it also takes
// (--storage, --config, --json, ...), under its own.
void add_global_options_to_help(CLI::App& app) {
  std::string text = "Global options (before or after the command):\n";
  for (const CLI::Option* opt : app.get_options()) {
    if (opt == app.get_help_ptr() || opt == app.get_version_ptr()) continue;
    std::string name = opt->get_name(false, true);
    if (opt->get_type_size() != 0) name += " " + opt->get_type_name();
    text += fmt::format("  {:<27} {}\n", name, opt->get_description());
  }
  for (CLI::App* sub : app.get_subcommands({})) sub->footer(sub->get_footer() + text);
}

// A password in the storage URL on the command line is visible to every local user
// (`ps`): say so, and how to avoid it.
void warn_if_password_in_argv(const std::string& url, int argc, char** argv) {
  bool in_argv = false;
  for (int i = 1; i < argc; ++i)
    in_argv |= argv[i] == url || std::string(argv[i]) == "--storage=" + url;
  if (!in_argv || !url.starts_with("redis")) return;
  std::string authority = url.substr(0, url.find_first_of("/?", url.find("://") + 3));
  if (authority.find('@') != std::string::npos || url.find("password=") != std::string::npos) {
    std::cerr << "slimta-queue: warning: the storage URL's password is visible to other users "
                 "in the command line (ps); use password-file= in the URL, $SLIMTA_STORAGE or "
                 "the config file's storage = instead\n";
  }
}

}  // namespace

using slimta::cli::EnqueueOptions;
using slimta::cli::Selection;

// The command line: every option's variable, and the CLI11 definitions that fill them.
// Built once to run; built again to read the config file anew on SIGHUP.
struct Cli {
  CLI::App app{"slimta-queue: inspect and manage a slimta mail queue"};
  std::string storage_url = "disk:./spool";
  bool json = false;
  std::string log_format = "text";
  double storage_timeout = 10;
  EnqueueOptions enq;
  std::string show_id;
  bool raw = false;
  Selection retry_sel, remove_sel, hold_sel, release_sel, bounce_sel;
  std::optional<std::string> hold_reason, bounce_reason;
  slimta::cli::ServeOptions serve_opts;
  std::string passwd_user, users_file;
  std::string destination, suspend_for, suspend_reason;
  CLI::App* serve = nullptr;
  CLI::App* passwd = nullptr;

  Cli();
  // Checks the config file named in argv strictly, then parses argv; throws
  // QueueError (the config file) or CLI::ParseError (the command line).
  void parse(int argc, char** argv);
};

Cli::Cli() {
  using namespace slimta::cli;
  app.require_subcommand(1);
  app.set_version_flag("-V,--version", "slimta-queue " SLIMTA_VERSION);
  app.fallthrough();  // --storage and --json are accepted after the subcommand too
  app.add_option("--storage", storage_url,
                 "storage URL: disk:PATH (default disk:./spool), redis://HOST:PORT/DB, "
                 "s3://BUCKET/PREFIX?..., memory:")
      ->envname("SLIMTA_STORAGE")
      ->type_name("URL");
  app.add_option("--storage-timeout", storage_timeout,
                 "seconds a Redis or S3 call may take (unless the URL says timeout=): a hung "
                 "server then fails the call, and an SMTP client gets 451 in time")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--json", json, "machine-readable JSON output");
  app.add_option("--log-format", log_format,
                 "log lines on stderr: text, or json (one object a line: time, level, id, "
                 "event, rcpt, reply, ...)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.set_config("--config", "",
                 "read options from this TOML/INI file: storage = \"URL\" at the top, "
                 "serve's options under [serve]")
      ->type_name("FILE");

  auto* enqueue = app.add_subcommand(
      "enqueue", "queue a message read from FILE or stdin; prints the new id on the last line");
  enqueue->add_option("file", enq.file, "RFC 5322 message file, - for stdin")
      ->capture_default_str();
  enqueue->add_option("--from", enq.from,
                      "envelope sender ('' for the null sender); default: Return-Path, Sender "
                      "or From header");
  enqueue
      ->add_option("--to", enq.to,
                   "envelope recipient, repeatable; default: the To, Cc and Bcc headers")
      ->allow_extra_args(false);  // one address per --to: a word after it is the FILE

  app.add_subcommand("list", "list queued messages, soonest next attempt first");

  auto* show = app.add_subcommand("show", "show one message and its queue metadata");
  show->add_option("id", show_id, "message id")->required();
  show->add_flag("--raw", raw, "write the stored message bytes to stdout");

  // A subcommand acting on the messages named, or on --all of them.
  auto selecting = [this](const char* name, const char* what, Selection& sel) {
    auto* sub = app.add_subcommand(name, what);
    sub->add_option("ids", sel.ids, "message ids");
    sub->add_flag("--all", sel.all, "every queued message");
    sub->callback([&sel] {
      if (sel.all == !sel.ids.empty())
        throw CLI::ValidationError("give message ids or --all (not both)");
    });
    return sub;
  };
  selecting("retry", "make messages due for delivery now", retry_sel);
  selecting("remove", "delete messages from the queue", remove_sel);
  selecting("hold", "keep messages in the queue without attempting them, until released", hold_sel)
      ->add_option("--reason", hold_reason,
                   std::string("why (shown by list and show; default: \"") + kDefaultHoldReason +
                       "\"); a message held already keeps its reason and time unless one is "
                       "given");
  selecting("release", "release held messages", release_sel);
  selecting("bounce",
            "return messages to their senders now (a DSN for their pending recipients), then "
            "remove them",
            bounce_sel)
      ->add_option("--reason", bounce_reason,
                   std::string("the DSN's diagnostic (default: \"") + kDefaultBounceReason + "\")");

  app.add_subcommand("info", "count queued messages and bytes, and the queue's event counters");
  app.add_subcommand("shape", "queued messages by recipient domain and age in minutes (qshape)");
  auto* suspend = app.add_subcommand(
      "suspend",
      "stop deliveries to a destination (an MX domain, a route's domain, a smarthost "
      "HOST:PORT) on every serve process of the storage; its mail waits, unattempted");
  suspend->add_option("destination", destination, "the destination")->required();
  suspend->add_option("--for", suspend_for,
                      "for this long (90s, 30m, 2h, 1d); default: until resumed");
  suspend->add_option("--reason", suspend_reason, "shown by destinations and in the log");
  app.add_subcommand("resume", "deliver to a suspended destination again, at once")
      ->add_option("destination", destination, "the destination")
      ->required();
  app.add_subcommand("destinations",
                     "destinations: state (ok, failing, down, suspended), connections in use "
                     "and the limit ([destinations] of --config), messages waiting, failures, "
                     "until when, last reply");

  serve = app.add_subcommand(
      "serve", "run the queue: accept mail over SMTP, keep it in the storage, deliver it");
  serve->footer(
      "Who may send what (closed by default): clients in --relay-networks (default: this host "
      "only) and clients that authenticated (AUTH, only under TLS, against --users) may relay "
      "to any domain; anyone may send to --accept-domains, and to nothing else (554 5.7.1 "
      "Relay access denied).\n"
      "A safe set-up for the internet: --listen 0.0.0.0:25 --accept-domains example.org "
      "--route example.org=10.0.0.5:25 (inbound mail for your domain) and --submission "
      "0.0.0.0:587 --tls-cert CERT --tls-key KEY --users /etc/slimta/users (your users send "
      "anywhere after AUTH; add users with `slimta-queue passwd USER --users FILE`).\n");
  serve
      ->add_option(
          "--listen", serve_opts.listen,
          "HOST:PORT to accept SMTP on (port 25 role: relay rules at RCPT); port 0: a free one, "
          "printed in the \"listening on\" line; repeatable")
      ->capture_default_str();
  serve->add_option("--submission", serve_opts.submission,
                    "HOST:PORT for message submission (587): AUTH required before MAIL, "
                    "STARTTLS before AUTH; repeatable");
  serve->add_option("--submissions", serve_opts.submissions,
                    "HOST:PORT for submission over implicit TLS (465, RFC 8314); repeatable");
  serve
      ->add_option("--relay-networks", serve_opts.relay_networks,
                   "CIDR[,CIDR...] of clients that may relay to any domain without AUTH")
      ->capture_default_str();
  serve
      ->add_option("--accept-domains", serve_opts.accept_domains,
                   "DOMAIN[,DOMAIN...] we take mail for from anyone (MX or backup MX)")
      ->delimiter(',');
  serve->add_option("--accept-recipients", serve_opts.accept_recipients,
                    "file of the accept domains' valid recipients (user@domain, or @domain for "
                    "all), one a line: others are refused at RCPT (550 5.1.1)");
  serve->add_option("--route", serve_opts.routes,
                    "DOMAIN=HOST:PORT: deliver that domain's mail there, ahead of the smarthost "
                    "and MX (repeatable; [routes] in the config file)");
  serve->add_option("--users", serve_opts.users,
                    "users file (name:crypt-hash a line, as Dovecot's passwd-file): offer AUTH "
                    "PLAIN/LOGIN under TLS");
  serve->add_option("--proxy-from", serve_opts.proxy_from,
                    "CIDR[,CIDR...] of load balancers that send a PROXY protocol header (v1/v2): "
                    "required from them, refused from anyone else");
  serve->add_option("--smarthost", serve_opts.smarthost,
                    "HOST:PORT to relay every message to (without it: to each domain's MX hosts)");
  serve->add_option("--dns-server", serve_opts.dns_server,
                    "IP[:PORT] of the DNS server for MX lookups (default: /etc/resolv.conf's)");
  serve->add_option("--mx-port", serve_opts.mx_port, "port of the MX hosts")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  serve->add_option("--hostname", serve_opts.hostname,
                    "our name in the greeting, Received: headers and bounces");
  serve->add_option("--max-size", serve_opts.max_message_size, "largest message, bytes")
      ->capture_default_str();
  serve
      ->add_option("--max-line-length", serve_opts.max_line_length,
                   "longest message line taken, octets (RFC 5321 says 998; longer lines are "
                   "broken with CRLF SPACE on relay, as Postfix does); beyond, 552 5.3.4")
      ->check(CLI::Range(998, 1 << 30))
      ->capture_default_str();
  serve->add_option("--http", serve_opts.http,
                    "HOST:PORT for HTTP: /metrics (Prometheus), /healthz, /readyz, /api/v1/info; "
                    "a loopback address unless --http-token-file is given");
  serve->add_option("--http-token-file", serve_opts.http_token_file,
                    "file whose first line (16 characters or more) is the bearer token /api/ "
                    "requires");
  serve->add_option("--user", serve_opts.user,
                    "started as root: bind the ports, then run as this user (default: slimta, "
                    "when that user exists; root to stay root)");
  serve->add_option("--group", serve_opts.group,
                    "with --user: run with this group (default: the user's own)");
  serve
      ->add_option("--max-sessions", serve_opts.max_sessions,
                   "SMTP sessions at once; beyond, 421 (0: half the file descriptor limit)")
      ->capture_default_str();
  serve
      ->add_option("--max-sessions-per-client", serve_opts.max_sessions_per_client,
                   "SMTP sessions at once from one client address; beyond, 421")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve
      ->add_option("--max-bytes-in-flight", serve_opts.max_bytes_in_flight,
                   "bytes of messages held in memory at once (being received or stored); "
                   "beyond, 452 4.3.1")
      ->capture_default_str();
  serve->add_option("--min-free", serve_opts.min_free,
                    "disk spool: free space to keep, BYTES[K|M|G], N% or none (default: 1G or 5%, "
                    "the smaller; the URL's min-free= wins); a message that would go below gets "
                    "452 4.3.1");
  serve
      ->add_option("--relay-idle-timeout", serve_opts.relay_idle_timeout,
                   "seconds an idle outgoing SMTP connection is kept for the next message")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve
      ->add_option("--data-timeout", serve_opts.data_timeout,
                   "seconds a client has for a whole message's data, however it trickles in")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve->add_option("--workers", serve_opts.workers, "deliveries in flight")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  serve
      ->add_option("--rescan", serve_opts.rescan,
                   "seconds between full rescans of the storage, for messages announced to "
                   "another node that died (0: never; not with a due index)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  serve->add_flag("--full-schedule", serve_opts.full_schedule,
                  "hold every message's schedule in memory and rescan, even on a storage with "
                  "a due-time index (Redis): the behaviour before the index");
  serve->add_option("--tls-cert", serve_opts.tls_cert,
                    "PEM certificate chain: offer STARTTLS (with --tls-key)");
  serve->add_option("--tls-key", serve_opts.tls_key, "PEM private key for --tls-cert");
  serve
      ->add_option("--smarthost-tls", serve_opts.smarthost_tls,
                   "STARTTLS to the smarthost: never, opportunistic (encrypt when offered) or "
                   "required (verified certificate)")
      ->check(CLI::IsMember({"never", "opportunistic", "required"}))
      ->capture_default_str();
  serve->add_option("--smarthost-ca", serve_opts.smarthost_ca,
                    "CA file to verify the smarthost with (default: the system's)");
  serve->add_option("--smarthost-user", serve_opts.smarthost_user,
                    "AUTH PLAIN/LOGIN user at the smarthost (needs --smarthost-tls required)");
  serve->add_flag("--smarthost-auth-insecure", serve_opts.smarthost_auth_insecure,
                  "send the smarthost password even over TLS that was not verified, or none");
  serve->add_option("--smarthost-password-file", serve_opts.smarthost_password_file,
                    "file whose first line is that user's password (or set "
                    "$SLIMTA_SMARTHOST_PASSWORD)");
  serve
      ->add_option(
          "--lease", serve_opts.lease,
          "seconds a claim lasts unless renewed (it is, every third of it, while its attempt runs)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  passwd = app.add_subcommand("passwd",
                              "add a user for SMTP AUTH, or change the password (read from stdin)");
  passwd->add_option("user", passwd_user, "user name")->required();
  passwd->add_option("--users", users_file, "users file to change (created 0600)")->required();

  app.add_subcommand("check-config",
                     "check --config's file (unknown keys, wrong types, bad values: exit 1) and "
                     "serve's settings, without listening or opening the storage; print the "
                     "effective configuration, passwords masked");

  add_global_options_to_help(app);
}

void Cli::parse(int argc, char** argv) {
  using namespace slimta::cli;
  // CLI11 passes over what it does not know in the config file: checked first, strictly.
  if (std::string config = config_path_in(argc, argv); !config.empty())
    check_config_file(config, app, *serve);
  app.parse(argc, argv);
  if (auto* config = app.get_config_ptr(); config && config->count() > 0)
    serve_opts.config_file = config->as<std::string>();
}

int main(int argc, char** argv) {
  using namespace slimta;
  using namespace slimta::cli;
  configure_logging();

  Cli cli;
  CLI::App& app = cli.app;
  try {
    cli.parse(argc, argv);
  } catch (const QueueError& e) {  // the config file
    std::cerr << "slimta-queue: error: " << e.what() << "\n";
    return 1;
  } catch (const CLI::ParseError& e) {
    // A word where the subcommand should be: name it, and the closest one.
    std::vector<std::string> left = app.remaining();
    if (app.get_subcommands().empty() && !left.empty() && left.front().front() != '-') {
      std::cerr << "slimta-queue: unknown command '" << left.front() << "'";
      if (auto near = closest_subcommand(app, left.front()))
        std::cerr << "; did you mean '" << *near << "'?";
      std::cerr << "\n";
      return 2;
    }
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    set_log_format(cli.log_format);
    if (cli.passwd->parsed()) return cmd_passwd(cli.passwd_user, cli.users_file, std::cerr);
    if (app.got_subcommand("check-config")) {
      cmd_check_config(cli.serve_opts, std::cout, std::cerr);
      print_effective_config(app, std::cout);
      return 0;
    }
    warn_if_password_in_argv(cli.storage_url, argc, argv);
    std::string name = app.get_subcommands().front()->get_name();
    if (name == "serve") {
      // The storage is opened once serve runs as its --user; SIGHUP reads the command
      // line and the config file again.
      auto open = [&] {
        OpenOptions o;
        o.timeout = cli.storage_timeout;
        o.min_free = cli.serve_opts.min_free;
        return open_storage(cli.storage_url, o);
      };
      auto reread = [argc, argv] {
        Cli fresh;
        try {
          fresh.parse(argc, argv);
        } catch (const CLI::ParseError& e) {
          throw InvalidArgument(std::string("the command line or config file: ") + e.what());
        }
        return fresh.serve_opts;
      };
      return cmd_serve(open, cli.serve_opts, reread, std::cout, std::cerr);
    }
    // Only what stores mail makes a spool; the others report a missing one.
    std::unique_ptr<QueueStorage> storage =
        open_storage(cli.storage_url, cli.storage_timeout, /*create=*/name == "enqueue");
    bool json = cli.json;
    if (name == "enqueue") return cmd_enqueue(*storage, cli.enq, std::cout, std::cerr);
    if (name == "list") return cmd_list(*storage, json, std::cout, std::cerr);
    if (name == "show") return cmd_show(*storage, cli.show_id, cli.raw, json, std::cout);
    if (name == "retry") return cmd_retry(*storage, cli.retry_sel, json, std::cout, std::cerr);
    if (name == "remove") return cmd_remove(*storage, cli.remove_sel, json, std::cout, std::cerr);
    if (name == "info") return cmd_info(*storage, json, std::cout, std::cerr);
    if (name == "hold")
      return cmd_hold(*storage, cli.hold_sel, cli.hold_reason, json, std::cout, std::cerr);
    if (name == "release")
      return cmd_release(*storage, cli.release_sel, json, std::cout, std::cerr);
    if (name == "bounce")
      return cmd_bounce(*storage, cli.bounce_sel, cli.bounce_reason, json, std::cout, std::cerr);
    if (name == "shape") return cmd_shape(*storage, json, std::cout, std::cerr);
    if (name == "suspend") {
      std::optional<double> seconds;
      if (!cli.suspend_for.empty()) seconds = parse_duration(cli.suspend_for);
      return cmd_suspend(*storage, cli.destination, seconds, cli.suspend_reason, json, std::cout);
    }
    if (name == "resume") return cmd_resume(*storage, cli.destination, json, std::cout);
    if (name == "destinations")
      return cmd_destinations(*storage, read_shaping(cli.serve_opts.config_file), json, std::cout,
                              std::cerr);
  } catch (const QueueError& e) {
    std::cerr << "slimta-queue: error: " << e.what() << "\n";
    return 1;
  }
  return 1;
}
