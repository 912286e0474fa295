// SmtpServer: the SMTP edge (RFC 5321) that accepts mail for a queue.
//
// EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY (answered 252 without looking
// anything up), with PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES and, with a
// certificate, STARTTLS, and with users, AUTH PLAIN and LOGIN (RFC 4954) under TLS.
//
// Closed by default: at RCPT a recipient is accepted when the client's address is in
// relay_networks (default: loopback only), or the session authenticated, or the
// recipient's domain is one of accept_domains; anyone else gets 554 5.7.1 Relay access
// denied. Listeners have roles: port 25 (the rules above), submission (587, RFC 6409:
// AUTH before MAIL) and submissions (465, RFC 8314: TLS from the first byte). Behind a
// load balancer, clients in proxy_from must open with a PROXY protocol header (v1 or
// v2), whose client address is then used for everything above, the Received: line and
// the log.
//
// A message is handed to the Reception (reception.h, the one door every way in shares:
// address, size and hop checks, our Received: line, stages, room, the storage write),
// and the client gets the reply it returns: 250 only once the message is durable, a 4xx
// when the storage failed or is full, and nothing is kept then. A client that
// disconnects before the end of DATA leaves nothing behind. The reception's
// max_message_size is the SIZE limit, applied while the data arrives.
// Every resource a client can take is bounded, each with its 4xx: sessions (in total
// and per client address), message bytes in memory, storage room, and time (a command
// line within idle_timeout of its first byte, the data within data_timeout).
//
// Networking runs on Asio (one event-loop thread); the reception runs on a pool of
// blocking threads, so slow storage never stalls other sessions.
//
// Thread safety: listen() before run(); stop() from any thread (e.g. a signal
// handler's thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "slimta/envelope.h"
#include "slimta/ip_networks.h"
#include "slimta/metrics.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/user_database.h"

namespace slimta {

struct SmtpServerOptions {
  // Our name in the greeting and the EHLO reply (the Received: line takes the
  // reception's). Empty: hostname.
  std::string hostname;
  // Command lines longer than this get 500 5.5.2 (RFC 5321: 512 with CRLF).
  size_t max_command_line = 512;
  // Message lines longer than this (octets, without the line ending) make the message
  // refused, 552 5.3.4. RFC 5321 allows 998, but mail with longer lines is common and
  // Postfix takes it; the relays break such lines on the way out (write_data()).
  size_t max_data_line = 65536;
  // A client silent this long, or not reading our replies for this long, or taking
  // this long to complete a command line from its first byte, gets 421 4.4.2 (if it
  // reads it within a second) and is disconnected.
  std::chrono::milliseconds idle_timeout = std::chrono::minutes(5);
  // The whole message data, from the 354 to the final ".", however it trickles in.
  std::chrono::milliseconds data_timeout = std::chrono::minutes(10);
  // Sessions at once over every listener; a client beyond gets 421 4.7.0 and is
  // closed. 0: derived from the file descriptor limit (RLIMIT_NOFILE): half of it less
  // 32, between 8 and 10,000.
  size_t max_sessions = 0;
  // Sessions at once from one client address (the PROXY header's, behind a balancer);
  // beyond it, 421 4.7.0.
  size_t max_sessions_per_client = 20;
  // A client making this many bad commands gets 421 4.7.0 and is disconnected.
  size_t max_errors = 20;
  // Where the server counts for Prometheus (not owned; the same one across reload()):
  // slimta_smtp_sessions_total, slimta_smtp_rejections_total{reason} (each 4xx/5xx
  // reply, by a small fixed set of reasons) and slimta_auth_failures_total.
  metrics::Registry* metrics = nullptr;
  // Threads that run the reception (storage writes): messages accepted concurrently.
  size_t deliver_threads = 32;
  // PEM files: when both are set, STARTTLS is offered (TLS 1.2 or later).
  std::string tls_certificate_file;
  std::string tls_key_file;

  // Clients that may relay to any domain without authenticating.
  IpNetworks relay_networks = IpNetworks::parse("127.0.0.0/8,::1/128");
  // Domains anyone may send to (we are their MX or backup MX); case does not matter.
  std::vector<std::string> accept_domains;
  // When set, the recipients of accept_domains that exist: "user@domain", or "@domain"
  // for every user of a domain (case does not matter). Others get 550 5.1.1 at RCPT,
  // rather than a bounce later to a sender who may be forged.
  std::optional<std::set<std::string>> known_recipients;
  // Where mail to "postmaster" (RFC 5321's address without a domain, which anyone may
  // send to) is delivered: "user@domain". Empty: RCPT TO:<postmaster> is refused (550
  // 5.1.1), for a postmaster without a domain cannot be delivered and its bounce would
  // go to whatever sender an outsider named.
  std::string postmaster;
  // When set, an authenticated client may use only the MAIL FROM senders its login
  // owns: lower-case "user@domain" or "@domain" -> the logins (lower case) that may
  // send as it; anything else gets 553 5.7.1 (Postfix's smtpd_sender_login_maps with
  // reject_authenticated_sender_login_mismatch). The null sender is anyone's.
  std::optional<std::map<std::string, std::set<std::string>>> sender_logins;

  // AUTH PLAIN and LOGIN against these users, offered only under TLS (else AUTH gets
  // 538 5.7.11). Null: no AUTH.
  std::shared_ptr<const UserDatabase> users;
  // After the n-th failed AUTH of a session, wait n times this before the 535 5.7.8;
  // after max_auth_failures, 421 4.7.0 and disconnect.
  std::chrono::milliseconds auth_failure_delay = std::chrono::seconds(1);
  size_t max_auth_failures = 3;
  // Across sessions: a client network (an IPv4 address, an IPv6 /64) with this many
  // failed AUTHs within auth_lockout_window, or any client trying a user name that
  // failed auth_failures_per_user times in it (unless it authenticated as that user in
  // the last day), gets 454 4.7.0 with no password checked until the window passes.
  // 0: no limit. The first values are kept (reload() does not change them).
  size_t auth_failures_per_client = 10;
  size_t auth_failures_per_user = 30;
  std::chrono::seconds auth_lockout_window{900};

  // Load balancers that send a PROXY protocol header (v1 or v2). A connection from
  // these addresses must start with one (else it is closed, unanswered); one from any
  // other address that sends one is closed. A header that names no client (LOCAL,
  // UNKNOWN) leaves the client's address "unknown", which matches no network.
  IpNetworks proxy_from;
  std::chrono::milliseconds proxy_timeout = std::chrono::seconds(10);
};

// What a listening port is for.
enum class ListenerRole {
  smtp,         // port 25: relay rules at RCPT; STARTTLS and AUTH when configured
  submission,   // port 587 (RFC 6409): AUTH (so STARTTLS) required before MAIL: 530 5.7.0
  submissions,  // port 465 (RFC 8314): TLS from the first byte, then as submission
};

class SmtpServer {
 public:
  // Hands each received message to `reception` (which must outlive the server), and
  // asks it for room before DATA. Throws InvalidArgument for an unusable TLS
  // certificate or key (naming the file).
  SmtpServer(SmtpServerOptions options, Reception& reception);
  ~SmtpServer();
  SmtpServer(const SmtpServer&) = delete;
  SmtpServer& operator=(const SmtpServer&) = delete;

  // What the constructor and listen() would refuse for `options` and these listeners
  // (host, role), in the same words, without building or binding anything (serve's
  // check-config): an unusable TLS certificate or key, an address that is not an IP, a
  // submission listener without TLS and users. Throws InvalidArgument.
  static void check(const SmtpServerOptions& options,
                    const std::vector<std::pair<std::string, ListenerRole>>& listeners);

  // Listen on `host`:`port` (port 0: a free one) for `role`; returns the port. May be
  // called several times (several listeners). Throws InvalidArgument for a bad
  // address, or a submission role without a TLS certificate and users; QueueError if
  // it cannot listen.
  uint16_t listen(const std::string& host, uint16_t port, ListenerRole role = ListenerRole::smtp);

  // Takes new options (a reloaded users file, TLS certificate, relay rules, limits) for
  // the sessions that start from now on; sessions under way finish with the options they
  // began with. Throws InvalidArgument, changing nothing, for options it cannot use (an
  // unreadable certificate, submission listeners left without TLS or users).
  // deliver_threads keeps its first value. Thread-safe.
  void reload(SmtpServerOptions options);
  // Serve until stop(): on the calling thread.
  void run();
  // Stop accepting, end every session (a message not yet accepted is not kept; one
  // whose write is under way finishes it), and make run() return.
  void stop();

  // The decision RCPT TO would make for `recipient` from `client_ip` (authenticated or
  // not), with the settings new sessions get: nullopt when accepted, else the reply.
  // For mail that arrives another way (serve's HTTP injection).
  std::optional<std::string> refusal(const std::string& client_ip, const std::string& recipient,
                                     bool authenticated) const;

  // Whether this server vouches for a client: it authenticated (client.auth), or its
  // address is in the relay networks (with the settings new sessions get). A client it
  // does not vouch for could only send to the accept domains.
  bool vouches_for(const ClientInfo& client) const;

  // Sessions open now, and messages accepted so far.
  size_t sessions() const;
  size_t accepted() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
