#include "options.h"

namespace slimta::daemon {

namespace {

// Listeners, and who may send what through them.
void who_sends(CLI::App& serve, ServeOptions& opts) {
  serve.footer(
      "Who may send what (closed by default): clients in --relay-networks (default: this host "
      "only) and clients that authenticated (AUTH, only under TLS, against --users) may relay "
      "to any domain; anyone may send to --accept-domains, and to nothing else (554 5.7.1 "
      "Relay access denied).\n"
      "A safe set-up for the internet: --listen 0.0.0.0:25 --accept-domains example.org "
      "--route example.org=10.0.0.5:25 (inbound mail for your domain) and --submission "
      "0.0.0.0:587 --tls-cert CERT --tls-key KEY --users /etc/slimta/users (your users send "
      "anywhere after AUTH; add users with `slimta-queue passwd USER --users FILE`).\n");
  serve
      .add_option(
          "--listen", opts.listen,
          "HOST:PORT to accept SMTP on (port 25 role: relay rules at RCPT); port 0: a free one, "
          "printed in the \"listening on\" line; repeatable")
      ->capture_default_str();
  serve.add_option("--submission", opts.submission,
                   "HOST:PORT for message submission (587): AUTH required before MAIL, "
                   "STARTTLS before AUTH; repeatable");
  serve.add_option("--submissions", opts.submissions,
                   "HOST:PORT for submission over implicit TLS (465, RFC 8314); repeatable");
  serve
      .add_option("--relay-networks", opts.relay_networks,
                  "CIDR[,CIDR...] of clients that may relay to any domain without AUTH")
      ->capture_default_str();
  serve
      .add_option("--accept-domains", opts.accept_domains,
                  "DOMAIN[,DOMAIN...] we take mail for from anyone (MX or backup MX)")
      ->delimiter(',');
  serve.add_option("--accept-recipients", opts.accept_recipients,
                   "file of the accept domains' valid recipients (user@domain, or @domain for "
                   "all), one a line: others are refused at RCPT (550 5.1.1)");
  serve.add_option("--postmaster", opts.postmaster,
                   "ADDRESS: where mail to <postmaster> (no domain; anyone may send to it) is "
                   "delivered; unset, RCPT TO:<postmaster> is refused (550 5.1.1)");
  serve.add_option("--sender-logins", opts.sender_logins,
                   "file of 'SENDER LOGIN[,LOGIN...]' lines (SENDER user@domain or @domain): "
                   "an authenticated client may then use only the MAIL FROM its login owns "
                   "(553 5.7.1), as Postfix's smtpd_sender_login_maps");
  serve.add_option("--route", opts.routes,
                   "DOMAIN=HOST:PORT: deliver that domain's mail there, ahead of the smarthost "
                   "and MX (repeatable; [routes] in the config file)");
  serve.add_option("--users", opts.users,
                   "users file (name:crypt-hash a line, as Dovecot's passwd-file): offer AUTH "
                   "PLAIN/LOGIN under TLS");
  serve.add_option("--proxy-from", opts.proxy_from,
                   "CIDR[,CIDR...] of load balancers that send a PROXY protocol header (v1/v2): "
                   "required from them, refused from anyone else");
}

// Where mail goes, under which name, how large.
void where_mail_goes(CLI::App& serve, ServeOptions& opts) {
  serve.add_option("--smarthost", opts.smarthost,
                   "HOST:PORT to relay every message to (without it: to each domain's MX hosts)");
  serve.add_option("--dns-server", opts.dns_server,
                   "IP[:PORT] of the DNS server for MX lookups (default: /etc/resolv.conf's)");
  serve.add_option("--mx-port", opts.mx_port, "port of the MX hosts")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  serve.add_option("--hostname", opts.hostname,
                   "our name in the greeting, Received: headers and bounces");
  serve.add_option("--max-size", opts.max_message_size, "largest message, bytes")
      ->capture_default_str();
  serve
      .add_option("--max-line-length", opts.max_line_length,
                  "longest message line taken, octets (RFC 5321 says 998; longer lines are "
                  "broken with CRLF SPACE on relay, as Postfix does); beyond, 552 5.3.4")
      ->check(CLI::Range(998, 1 << 30))
      ->capture_default_str();
}

// The HTTP listener, the user, the limits, the queue's workers and schedule.
void how_it_runs(CLI::App& serve, ServeOptions& opts) {
  serve.add_option("--http", opts.http,
                   "HOST:PORT for HTTP: /metrics (Prometheus), /healthz, /readyz, /api/v1/info; "
                   "a loopback address unless --http-token-file is given");
  serve.add_option("--http-token-file", opts.http_token_file,
                   "file whose first line (16 characters or more) is the bearer token /api/ "
                   "requires");
  serve.add_option("--user", opts.user,
                   "started as root: bind the ports, then run as this user (default: slimta, "
                   "when that user exists; root to stay root)");
  serve.add_option("--group", opts.group,
                   "with --user: run with this group (default: the user's own)");
  serve
      .add_option("--max-sessions", opts.max_sessions,
                  "SMTP sessions at once; beyond, 421 (0: half the file descriptor limit)")
      ->capture_default_str();
  serve
      .add_option("--max-sessions-per-client", opts.max_sessions_per_client,
                  "SMTP sessions at once from one client address; beyond, 421")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve
      .add_option("--max-bytes-in-flight", opts.max_bytes_in_flight,
                  "bytes of messages held in memory at once (being received or stored); "
                  "beyond, 452 4.3.1")
      ->capture_default_str();
  serve.add_option("--min-free", opts.min_free,
                   "disk spool: free space to keep, BYTES[K|M|G], N% or none (default: 1G or 5%, "
                   "the smaller; the URL's min-free= wins); a message that would go below gets "
                   "452 4.3.1");
  serve
      .add_option("--relay-idle-timeout", opts.relay_idle_timeout,
                  "seconds an idle outgoing SMTP connection is kept for the next message")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve
      .add_option("--data-timeout", opts.data_timeout,
                  "seconds a client has for a whole message's data, however it trickles in")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve.add_option("--workers", opts.workers, "deliveries in flight")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  serve
      .add_option("--rescan", opts.rescan,
                  "seconds between full rescans of the storage, for messages announced to "
                  "another node that died (0: never; not with a due index)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  serve
      .add_option("--queue-lifetime", opts.queue_lifetime,
                  "give up on a message this long after it was received and bounce it (90s, "
                  "30m, 2h, 5d; Postfix's maximal_queue_lifetime)")
      ->capture_default_str();
  serve
      .add_option("--bounce-lifetime", opts.bounce_lifetime,
                  "the same for a bounce (from the null sender, never bounced)")
      ->capture_default_str();
  serve
      .add_option("--minimal-backoff", opts.minimal_backoff,
                  "the first retry this long after a failed attempt")
      ->capture_default_str();
  serve
      .add_option("--maximal-backoff", opts.maximal_backoff,
                  "each next retry --backoff-factor times later, up to this")
      ->capture_default_str();
  serve.add_option("--backoff-factor", opts.backoff_factor, "how much longer each next wait is")
      ->check(CLI::Range(1.0, 100.0))
      ->capture_default_str();
  serve
      .add_option("--max-attempts", opts.max_attempts,
                  "give up after this many attempts (0: by --queue-lifetime alone)")
      ->capture_default_str();
  serve
      .add_option("--delay-warning", opts.delay_warning,
                  "tell the sender once that a message is still waiting, this long after it "
                  "was received (a DSN with Action: delayed; none or 0: never; Postfix's "
                  "delay_warning_time)")
      ->capture_default_str();
  serve.add_flag("--full-schedule", opts.full_schedule,
                 "hold every message's schedule in memory and rescan, even on a storage with "
                 "a due-time index (Redis): the behaviour before the index");
}

// TLS in, and TLS and AUTH to the smarthost; the lease.
void tls_and_the_smarthost(CLI::App& serve, ServeOptions& opts) {
  serve.add_option("--tls-cert", opts.tls_cert,
                   "PEM certificate chain: offer STARTTLS (with --tls-key)");
  serve.add_option("--tls-key", opts.tls_key, "PEM private key for --tls-cert");
  serve
      .add_option("--smarthost-tls", opts.smarthost_tls,
                  "STARTTLS to the smarthost: never, opportunistic (encrypt when offered) or "
                  "required (verified certificate)")
      ->check(CLI::IsMember({"never", "opportunistic", "required"}))
      ->capture_default_str();
  serve.add_option("--smarthost-ca", opts.smarthost_ca,
                   "CA file to verify the smarthost with (default: the system's)");
  serve.add_option("--smarthost-user", opts.smarthost_user,
                   "AUTH PLAIN/LOGIN user at the smarthost (needs --smarthost-tls required)");
  serve.add_flag("--smarthost-auth-insecure", opts.smarthost_auth_insecure,
                 "send the smarthost password even over TLS that was not verified, or none");
  serve.add_option("--smarthost-password-file", opts.smarthost_password_file,
                   "file whose first line is that user's password (or set "
                   "$SLIMTA_SMARTHOST_PASSWORD)");
  serve
      .add_option(
          "--lease", opts.lease,
          "seconds a claim lasts unless renewed (it is, every third of it, while its attempt runs)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

}  // namespace

void define_serve_options(CLI::App& serve, ServeOptions& opts) {
  // In this order in --help and check-config's output.
  who_sends(serve, opts);
  where_mail_goes(serve, opts);
  how_it_runs(serve, opts);
  tls_and_the_smarthost(serve, opts);
}

}  // namespace slimta::daemon
