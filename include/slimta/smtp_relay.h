// SmtpRelay: a Relay that delivers to one SMTP server (a smarthost), RFC 5321.
//
// Each attempt gets a connection (an idle one from an earlier message, checked with
// RSET, or a new one: connect, greeting, EHLO, falling back to HELO), does
// STARTTLS and AUTH as configured, then MAIL FROM, one RCPT TO per recipient and DATA,
// pipelined when the server offers PIPELINING, and
// answers per recipient: the RCPT reply when it refused the recipient, the reply to
// the message data otherwise. Every step has a time limit. A connection that cannot be
// made, or breaks, is a transient failure for every recipient (the queue retries).
//
// Thread safety: attempt() may be called from several threads at once (the queue's
// workers); each uses its own connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "slimta/queue.h"

namespace slimta {

struct SmtpRelayOptions {
  std::string host;
  uint16_t port = 25;
  std::string ehlo_name;  // empty: this host's name
  // For the TCP connection and the server's greeting.
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(30);
  // For each command's reply; the reply to the message data gets data_timeout.
  std::chrono::milliseconds command_timeout = std::chrono::minutes(5);
  std::chrono::milliseconds data_timeout = std::chrono::minutes(10);
  // Idle connections kept for the next messages (0: a connection per message). One
  // idle this long is closed (QUIT), and one the server closed or wrote to while idle
  // is closed at once, so no descriptor is held by a connection that is of no use.
  size_t max_idle_connections = 16;
  std::chrono::milliseconds idle_connection_timeout = std::chrono::seconds(30);
  // Messages a connection carries before it is closed (QUIT); 0: no limit.
  size_t max_messages_per_connection = 0;
  // STARTTLS: never; opportunistic (when offered, encrypted but not authenticated,
  // like Postfix's "may"); required (must be offered, and the certificate must chain
  // to tls_ca_file, or the system's CAs when empty, and name `host`).
  enum class Tls { never, opportunistic, required };
  Tls starttls = Tls::opportunistic;
  std::string tls_ca_file;
  // AUTH PLAIN (or LOGIN) when username is set: only over TLS whose certificate and
  // host name were verified (starttls = required; the constructor refuses a username
  // otherwise), unless auth_insecure, which sends them over any TLS or none.
  std::string username;
  std::string password;
  bool auth_insecure = false;
};

class SmtpRelay : public Relay {
 public:
  // Throws InvalidArgument for an empty host or a zero port.
  explicit SmtpRelay(SmtpRelayOptions options);
  ~SmtpRelay() override;

  std::vector<RecipientResult> attempt(const Envelope& envelope, uint32_t attempt) override;
  // "HOST:PORT" of the smarthost: every recipient goes there.
  std::string destination(const std::string& recipient) const override;

  // Connections opened so far (for tests and reports: reuse keeps this low).
  size_t connections_opened() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
