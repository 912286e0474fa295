// The SMTP client that SmtpRelay (one smarthost) and MxRelay (the MX hosts of each
// domain) share: connections to one server, kept for reuse.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/smtp_relay.h"

namespace slimta::smtp {

// The message as SMTP DATA: every line ended by CRLF (a bare LF or a bare CR ends one
// too), a leading dot doubled, then "." CRLF.
std::string data_of(std::string_view message);

class Client {
 public:
  // options.host is the server (a name or an address); it is not checked here.
  explicit Client(SmtpRelayOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  struct Outcome {
    std::vector<RecipientResult> results;  // one per recipient
    // False when the server could not be reached or refused us before the
    // transaction began (connect, greeting, EHLO, STARTTLS, AUTH): every result is
    // then transient, and another server may be tried. True once MAIL FROM was sent.
    bool reached = false;
  };
  Outcome deliver(const Envelope& envelope);

  size_t connections_opened() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta::smtp
