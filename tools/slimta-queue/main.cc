// slimta-queue: inspect and manage a slimta queue in any storage.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <map>
#include <optional>

#include <fmt/format.h>

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "admin/audit.h"
#include "admin/commands.h"
#include "admin/identity.h"
#include "admin/sendmail.h"
#include "daemon/config_file.h"
#include "daemon/daemon.h"
#include "daemon/logging.h"
#include "daemon/plan.h"
#include "slimta/ascii.h"
#include "slimta/open_storage.h"
#include "slimta/smtp_relay.h"

namespace {

// The subcommand whose name is closest to `word`, if one is close.
std::optional<std::string> closest_subcommand(const CLI::App& app, const std::string& word) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  return slimta::daemon::closest(word, names);
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

using slimta::admin::EnqueueOptions;
using slimta::admin::Selection;

// The command line: every option's variable, and the CLI11 definitions that fill them.
// Built once to run; built again to read the config file anew on SIGHUP.
struct Cli {
  CLI::App app{"slimta-queue: inspect and manage a slimta mail queue"};
  std::string storage_url = "disk:./spool";
  bool json = false;
  std::string log_format = "text";
  std::string log_level = "info";
  double storage_timeout = 10;
  EnqueueOptions enq;
  std::string show_id;
  bool raw = false;
  Selection retry_sel, remove_sel, hold_sel, release_sel, bounce_sel;
  std::map<const Selection*, std::string> older_than_texts;  // --older-than as given
  std::string& older_than_text(const Selection& sel) { return older_than_texts[&sel]; }
  std::optional<std::string> hold_reason, bounce_reason;
  slimta::daemon::ServeOptions serve_opts;
  std::string passwd_user, users_file;
  std::string destination, suspend_for, suspend_reason;
  CLI::App* serve = nullptr;
  CLI::App* passwd = nullptr;

  Cli();
  void global_options();
  void queue_commands();
  void serve_commands();
  // How serve opens the storage (and check-config reads its URL).
  slimta::OpenOptions open_options() const {
    slimta::OpenOptions o;
    o.timeout = storage_timeout;
    o.min_free = serve_opts.min_free;
    return o;
  }
  // Checks the config file named in argv strictly, then parses argv; throws
  // QueueError (the config file) or CLI::ParseError (the command line).
  // What serve's relay (from serve's options and the config file) names as each
  // recipient's destination; the recipient's domain, with a warning, when it cannot be
  // built here.
  slimta::admin::DestinationOf destinations() const;
  // serve, started as root, opens the disk spool as the user it becomes: that user must
  // be able to use it (admin::check_spool_access). check-config asks the same.
  void check_spool_for_serve() const;
  void parse(int argc, char** argv);
};

Cli::Cli() {
  global_options();
  queue_commands();
  serve_commands();
  add_global_options_to_help(app);
}

// The options of the whole program, before or after the command.
void Cli::global_options() {
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
  app.add_option("--log-level", log_level,
                 "the least a log line must be to be written: debug, info, warning or error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}))
      ->capture_default_str();
  app.set_config("--config", "",
                 "read options from this TOML/INI file: storage = \"URL\" at the top, "
                 "serve's options under [serve]")
      ->type_name("FILE");
}

// The commands that read or act on the queue in the storage.
void Cli::queue_commands() {
  using namespace slimta::admin;
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
  // Selectors as the API's parameters (admin::Filter), and ids from stdin with "-".
  auto selecting = [this](const char* name, const char* what, Selection& sel) {
    auto* sub = app.add_subcommand(name, what);
    sub->add_option("ids", sel.ids, "message ids; - reads them from standard input, one a line");
    sub->add_flag("--all", sel.all, "every queued message (with a selector: those it takes)");
    sub->add_option("--domain", sel.filter.domain, "messages with a recipient in this domain")
        ->transform([](std::string v) { return slimta::to_lower(v); });
    sub->add_option("--sender", sel.filter.sender, "messages from this sender (<> for bounces)")
        ->transform([](std::string v) { return slimta::to_lower(v); });
    sub->add_option("--state", sel.filter.state, "messages in this state: queued, held, active");
    sub->add_option("--older-than", older_than_text(sel),
                    "messages received longer ago than this (90s, 30m, 2h, 1d)");
    sub->add_option("--destination", sel.filter.destination,
                    "messages waiting for this destination (as `destinations` names it; "
                    "retry --destination D: Postfix's postqueue -s D)")
        ->transform([](std::string v) { return slimta::to_lower(v); });
    sub->callback([this, &sel] {
      try {
        std::string& text = older_than_text(sel);
        if (!text.empty()) sel.filter.older_than = slimta::admin::parse_duration(text);
        sel.check();
      } catch (const slimta::QueueError& e) {
        throw CLI::ValidationError(e.what());
      }
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
}

// serve, and the commands around it.
void Cli::serve_commands() {
  serve = app.add_subcommand(
      "serve", "run the queue: accept mail over SMTP, keep it in the storage, deliver it");
  slimta::daemon::define_serve_options(*serve, serve_opts);

  passwd = app.add_subcommand("passwd",
                              "add a user for SMTP AUTH, or change the password (read from stdin)");
  passwd->add_option("user", passwd_user, "user name")->required();
  passwd
      ->add_option("--users", users_file,
                   "users file to change (created 0640 in the service user's group when run as "
                   "root, else 0600)")
      ->required();

  app.add_subcommand("check-config",
                     "check --config's file (unknown keys, wrong types, bad values: exit 1) and "
                     "serve's settings, without listening or opening the storage; print the "
                     "effective configuration, passwords masked");
}

slimta::admin::DestinationOf Cli::destinations() const {
  try {
    return slimta::daemon::destination_map(serve_opts);
  } catch (const slimta::QueueError& e) {
    std::cerr << "slimta-queue: warning: cannot tell serve's destinations (" << e.what()
              << "): counting by recipient domain\n";
    return [](const std::string& rcpt) { return slimta::domain_of(rcpt); };
  }
}

void Cli::check_spool_for_serve() const {
  auto who = slimta::daemon::run_as(serve_opts);
  if (who && ::geteuid() == 0 && who->uid != 0)
    slimta::admin::check_spool_access(*who, storage_url);
}

void Cli::parse(int argc, char** argv) {
  using namespace slimta::daemon;
  // The file is read once: checked strictly first (CLI11 passes over what it does not
  // know), then CLI11 takes its options from the parsed table, and serve its tables.
  if (std::string path = config_path_in(argc, argv, SLIMTA_DEFAULT_CONFIG); !path.empty()) {
    serve_opts.config = ConfigFile::load(path);
    check_config_file(*serve_opts.config, app, *serve);
    app.config_formatter(cli_config(serve_opts.config));
    // Read as if given (the installed one, $SLIMTA_CONFIG): --config's default.
    app.get_config_ptr()->default_str(path);
  }
  app.parse(argc, argv);
}

// serve: the daemon, with SIGTERM and SIGINT (stop: sessions and deliveries under way
// finish) and SIGHUP (the command line and the config file read again) taken by one
// thread with sigwait(), and systemd told (sd_notify) when it is ready, reloading and
// stopping. The storage is opened once serve runs as its --user.
int run_serve(const Cli& cli, int argc, char** argv) {
  using namespace slimta;
  // Blocked before any other thread starts, so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A closed stdout or stderr must not kill the daemon (sockets use MSG_NOSIGNAL).
  ::signal(SIGPIPE, SIG_IGN);

  cli.check_spool_for_serve();
  auto open = [&] { return open_storage(cli.storage_url, cli.open_options()); };
  daemon::Daemon d(cli.serve_opts, open, std::cerr);
  d.start();
  std::cout << "slimta-queue serve: listening on " << d.listening() << "\n" << std::flush;
  sd_notifyf(0, "READY=1\nSTATUS=listening on %s", d.listening().c_str());
  auto reload = [&] {
    sd_notify(0, "RELOADING=1\nSTATUS=reloading");
    try {
      Cli fresh;
      try {
        fresh.parse(argc, argv);
      } catch (const CLI::ParseError& e) {
        throw InvalidArgument(std::string("the command line or config file: ") + e.what());
      }
      d.reload(fresh.serve_opts);
      daemon::set_log_level(fresh.log_level);  // a switch an operator flips with SIGHUP
    } catch (const QueueError& e) {
      spdlog::error("serve: SIGHUP: reload failed, keeping the current settings: {}", e.what());
    }
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s", d.listening().c_str());
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
      sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing sessions and deliveries");
      d.stop();
      return;
    }
  });
  d.run();
  pthread_kill(waiter.native_handle(), SIGTERM);  // no-op if it already returned
  waiter.join();
  std::cout << "slimta-queue serve: stopped\n";
  return 0;
}

// All of `n` bytes to `fd`; false when it fails.
bool write_fully(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// SMTP on standard input and output (sendmail -bs), through the local serve: bytes
// copied both ways until the server closes or the input ends.
int smtp_on_stdio(const slimta::HostPort& to) {
  ::signal(SIGPIPE, SIG_IGN);  // a server gone: write() fails, the session ends
  int fd = -1;
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(to.host.c_str(), std::to_string(to.port).c_str(), &hints, &res) == 0) {
    for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
      fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(res);
  }
  if (fd < 0) {
    std::cout << "421 4.3.0 the mail system is not running\r\n" << std::flush;
    return 75;
  }
  pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {fd, POLLIN, 0}};
  char buf[16384];
  while (true) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0 || !write_fully(STDOUT_FILENO, buf, static_cast<size_t>(n))) break;
    }
    if (fds[0].revents) {
      ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
      if (n <= 0) {
        ::shutdown(fd, SHUT_WR);  // no more commands: the server ends the session
        fds[0].fd = -1;
      } else if (!write_fully(fd, buf, static_cast<size_t>(n))) {
        break;
      }
    }
  }
  ::close(fd);
  return 0;
}

// As /usr/sbin/sendmail and mailq (by argv[0]) or `slimta-queue sendmail ...`:
// sendmail's options (admin/sendmail.h), sendmail's exit codes (sysexits.h). The
// message goes straight into the storage through the door when this process may open
// it (root, or the spool's user), else over SMTP to serve's first listener (any user:
// cron's, the web server's).
int run_sendmail(std::vector<std::string> args, bool mailq) {
  using namespace slimta;
  using namespace slimta::admin;
  SendmailArgs sa;
  try {
    sa = parse_sendmail_args(args);
  } catch (const QueueError& e) {
    std::cerr << "sendmail: " << e.what() << "\n";
    return EX_USAGE;
  }
  if (mailq) sa.mode = SendmailArgs::Mode::list;
  spdlog::set_level(spdlog::level::warn);  // quiet when all is well: cron mails what it prints
  // The installed configuration, when this user may read it.
  Cli cli;
  bool configured = true;
  try {
    std::vector<std::string> words = {"slimta-queue", "list"};
    std::vector<char*> cargs;
    for (auto& w : words) cargs.push_back(w.data());
    cli.parse(static_cast<int>(cargs.size()), cargs.data());
  } catch (const std::exception&) {
    configured = false;  // not readable by this user: serve's listener takes the mail
  }
  HostPort listener{"127.0.0.1", 25};
  if (configured && !cli.serve_opts.listen.empty())
    listener = parse_host_port(cli.serve_opts.listen.front(), "--listen");
  if (listener.host == "0.0.0.0" || listener.host == "::") listener.host = "127.0.0.1";
  if (sa.mode == SendmailArgs::Mode::smtp_on_stdio) return smtp_on_stdio(listener);
  // Straight into the storage, as the spool's user when root.
  std::unique_ptr<QueueStorage> storage;
  if (configured) {
    try {
      if (auto owner = spool_owner(cli.storage_url)) become(*owner);
      storage = open_storage(cli.storage_url, cli.storage_timeout, /*create=*/false);
    } catch (const QueueError&) {
      storage.reset();  // not this user's to open: over SMTP
    }
  }
  try {
    if (sa.mode == SendmailArgs::Mode::list || sa.mode == SendmailArgs::Mode::flush) {
      if (!storage) {
        std::cerr << (mailq ? "mailq" : "sendmail") << ": the queue is not readable by this user\n";
        return EX_NOPERM;
      }
      if (sa.mode == SendmailArgs::Mode::list)
        return cmd_list(*storage, cli.destinations(), false, std::cout, std::cerr);
      Selection all;
      all.all = true;
      return cmd_retry(*storage, all, cli.destinations(), false, std::cout, std::cerr);
    }
    const passwd* pw = ::getpwuid(::getuid());
    std::string host =
        configured && !cli.serve_opts.hostname.empty() ? cli.serve_opts.hostname : host_name();
    std::string user = pw ? pw->pw_name : "uid" + std::to_string(::getuid());
    Envelope env = sendmail_envelope(sa, std::cin, user + "@" + host,
                                     configured ? cli.serve_opts.max_message_size : 50 << 20);
    if (storage) {
      std::ostringstream id;
      int rc = enqueue_envelope(*storage, std::move(env), id, std::cerr);
      return rc == 0 ? EX_OK : rc == 75 ? EX_TEMPFAIL : EX_DATAERR;
    }
    SmtpRelayOptions o;
    o.host = listener.host;
    o.port = listener.port;
    o.ehlo_name = "localhost";  // a local submission: not our own name (the loop check)
    o.max_idle_connections = 0;
    o.starttls = SmtpRelayOptions::Tls::never;  // this host's own listener
    SmtpRelay relay(o);
    std::vector<RecipientResult> results = relay.attempt(env, 1);
    int rc = EX_OK;
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].kind == RecipientResult::Kind::delivered) continue;
      std::cerr << "sendmail: " << printable(env.recipients[i]) << ": "
                << printable(results[i].reply) << "\n";
      if (results[i].kind == RecipientResult::Kind::transient)
        rc = std::max(rc, EX_TEMPFAIL);
      else if (rc != EX_TEMPFAIL)
        rc = EX_UNAVAILABLE;
    }
    return rc;
  } catch (const InvalidArgument& e) {
    std::cerr << "sendmail: " << e.what() << "\n";
    return EX_USAGE;
  } catch (const QueueError& e) {
    std::cerr << "sendmail: " << e.what() << "\n";
    return EX_TEMPFAIL;
  }
}

int main(int argc, char** argv) {
  using namespace slimta;
  using namespace slimta::admin;
  using namespace slimta::daemon;
  configure_logging();
  // Called as sendmail or mailq (the package's links), or `slimta-queue sendmail ...`.
  std::string called = std::filesystem::path(argv[0]).filename().string();
  if (called == "sendmail" || called == "mailq" ||
      (argc > 1 && std::string_view(argv[1]) == "sendmail")) {
    std::vector<std::string> args(argv + (called == "sendmail" || called == "mailq" ? 1 : 2),
                                  argv + argc);
    return run_sendmail(std::move(args), called == "mailq");
  }

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

  // What changes the queue, its destinations or its users is also logged to syslog
  // beside serve's lines (admin/audit.h): its output is taken, passed on, and logged.
  // Every command on the storage writes to out and err and returns through done(), so
  // that changes_something() alone decides which are audited.
  const std::string name =
      app.get_subcommands().empty() ? "" : app.get_subcommands().front()->get_name();
  const std::string user = invoking_user();
  std::ostringstream said_out, said_err;
  const bool audited = changes_something(name);
  std::ostream& out = audited ? static_cast<std::ostream&>(said_out) : std::cout;
  std::ostream& err = audited ? static_cast<std::ostream&>(said_err) : std::cerr;
  auto done = [&](int status) {
    if (!audited) return status;
    std::cout << said_out.str() << std::flush;
    std::cerr << said_err.str() << std::flush;
    audit(user, name, said_out.str() + said_err.str(), status);
    return status;
  };
  try {
    set_log_format(cli.log_format);
    set_log_level(cli.log_level);
    if (cli.passwd->parsed()) {
      // A new users file is the service's to read (root:slimta 0640), as serve, run by
      // its unit as that user, must read it.
      std::optional<gid_t> group;
      if (auto who = run_as(cli.serve_opts); who && ::geteuid() == 0) group = who->gid;
      return done(cmd_passwd(cli.passwd_user, cli.users_file, group, err));
    }
    if (app.got_subcommand("check-config")) {
      check_storage_url(cli.storage_url, cli.open_options());
      cli.check_spool_for_serve();
      check_config(cli.serve_opts, std::cout, std::cerr);
      print_effective_config(app, std::cout);
      return 0;
    }
    warn_if_password_in_argv(cli.storage_url, argc, argv);
    if (name == "serve") return run_serve(cli, argc, argv);
    // Root on a spool that is the service user's acts as that user, so that what it
    // rewrites stays readable by serve (issue 34).
    if (auto owner = spool_owner(cli.storage_url)) become(*owner);
    // Only what stores mail makes a spool; the others report a missing one.
    std::unique_ptr<QueueStorage> storage =
        open_storage(cli.storage_url, cli.storage_timeout, /*create=*/name == "enqueue");
    bool json = cli.json;
    // --destination selects by serve's destinations: the relay that names them.
    for (Selection* sel :
         {&cli.retry_sel, &cli.remove_sel, &cli.hold_sel, &cli.release_sel, &cli.bounce_sel}) {
      if (!sel->filter.destination.empty()) sel->filter.destination_of = cli.destinations();
    }
    if (name == "enqueue") return done(cmd_enqueue(*storage, cli.enq, out, err));
    if (name == "list") return done(cmd_list(*storage, cli.destinations(), json, out, err));
    if (name == "show") return done(cmd_show(*storage, cli.show_id, cli.raw, json, out));
    if (name == "retry")
      return done(cmd_retry(*storage, cli.retry_sel, cli.destinations(), json, out, err));
    if (name == "remove") return done(cmd_remove(*storage, cli.remove_sel, json, out, err));
    if (name == "info") return done(cmd_info(*storage, json, out, err));
    if (name == "hold")
      return done(cmd_hold(*storage, cli.hold_sel, cli.hold_reason, json, out, err));
    if (name == "release") return done(cmd_release(*storage, cli.release_sel, json, out, err));
    if (name == "bounce")
      return done(cmd_bounce(*storage, cli.bounce_sel, cli.bounce_reason, json, out, err));
    if (name == "shape") return done(cmd_shape(*storage, json, out, err));
    if (name == "suspend") {
      std::optional<double> seconds;
      if (!cli.suspend_for.empty()) seconds = parse_duration(cli.suspend_for);
      return done(cmd_suspend(*storage, cli.destination, seconds, cli.suspend_reason,
                              cli.destinations(), json, out, err));
    }
    if (name == "resume") return done(cmd_resume(*storage, cli.destination, json, out));
    if (name == "destinations")
      return done(cmd_destinations(*storage, read_shaping(cli.serve_opts.config.get()),
                                   cli.destinations(), json, out, err));
  } catch (const QueueError& e) {
    err << "slimta-queue: error: " << e.what() << "\n";
    return done(1);
  }
  return 1;
}
