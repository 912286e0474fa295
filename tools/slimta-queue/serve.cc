#include "serve.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "slimta/mx_relay.h"
#include "slimta/queue.h"
#include "slimta/smtp_relay.h"
#include "slimta/smtp_server.h"

namespace slimta::cli {

std::pair<std::string, uint16_t> parse_host_port(const std::string& text, const char* what) {
  auto bad = [&] {
    return InvalidArgument(std::string(what) + " '" + text + "' is not HOST:PORT");
  };
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) throw bad();
  std::string host = text.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string port = text.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) throw bad();
  unsigned long p = std::stoul(port);
  if (p == 0 || p > 65535) throw bad();
  return {host, static_cast<uint16_t>(p)};
}

namespace {

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

}  // namespace

int cmd_serve(QueueStorage& storage, const ServeOptions& opts, std::ostream& out,
              std::ostream& err) {
  auto [host, port] = parse_host_port(opts.listen, "--listen");
  // SIGTERM and SIGINT are taken by one thread with sigwait(): blocked here, before
  // any other thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A closed stdout or stderr must not kill the daemon (sockets use MSG_NOSIGNAL).
  ::signal(SIGPIPE, SIG_IGN);

  // Out: the smarthost, or else the MX hosts of each recipient's domain.
  std::unique_ptr<Relay> relay;
  if (!opts.smarthost.empty()) {
    SmtpRelayOptions r;
    std::tie(r.host, r.port) = parse_host_port(opts.smarthost, "--smarthost");
    r.ehlo_name = opts.hostname;
    using Tls = SmtpRelayOptions::Tls;
    if (opts.smarthost_tls == "never") r.starttls = Tls::never;
    if (opts.smarthost_tls == "required") r.starttls = Tls::required;
    r.tls_ca_file = opts.smarthost_ca;
    r.username = opts.smarthost_user;
    if (!r.username.empty()) r.password = smarthost_password(opts);
    relay = std::make_unique<SmtpRelay>(r);
  } else {
    MxRelayOptions m;
    m.smtp.ehlo_name = opts.hostname;
    m.smtp.port = opts.mx_port;
    m.dns_server = opts.dns_server;
    relay = std::make_unique<MxRelay>(m);
    err << "slimta-queue serve: no --smarthost: delivering to each domain's MX hosts\n";
  }
  QueuePolicy policy;
  policy.workers = opts.workers;
  policy.lease = std::chrono::milliseconds(static_cast<int64_t>(opts.lease * 1000));
  policy.reporting_mta = opts.hostname;
  policy.rescan_interval = opts.rescan;
  Queue queue(storage, *relay, policy);

  SmtpServerOptions server_opts;
  server_opts.hostname = opts.hostname;
  server_opts.max_message_size = opts.max_message_size;
  server_opts.tls_certificate_file = opts.tls_cert;
  server_opts.tls_key_file = opts.tls_key;
  SmtpServer server(server_opts, [&](Envelope&& env) { return queue.enqueue(env); });
  uint16_t bound = server.listen(host, port);
  queue.start();
  out << "slimta-queue serve: listening on " << host << ":" << bound << "\n" << std::flush;

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("serve: signal {}: stopping", sig);
    server.stop();
  });
  server.run();                                   // returns once stopped and every session ended
  pthread_kill(waiter.native_handle(), SIGTERM);  // no-op if it already returned
  waiter.join();
  queue.stop();
  out << "slimta-queue serve: stopped\n";
  return 0;
}

}  // namespace slimta::cli
