// The SMTP client that SmtpRelay (one smarthost) and MxRelay (the MX hosts of each
// domain) share: connections to one server, kept for reuse.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "slimta/smtp_relay.h"

namespace slimta::smtp {

// The message, given in `parts` that each end at a line end (its header section, its
// body), as SMTP DATA: every line ended by CRLF (a bare LF or a bare CR ends one too),
// a leading dot doubled, a line over 998 octets broken with CRLF SPACE, then "." CRLF. Handed to
// `out` in pieces of about `chunk` bytes, so a large message is never copied whole.
void write_data(std::initializer_list<std::string_view> parts, size_t chunk,
                const std::function<void(std::string_view)>& out);
// All of it at once, for one part.
std::string data_of(std::string_view message);

// Calls `fn` every `interval` on a thread of its own until destroyed: the relays'
// sweeper of idle connections.
class Every {
 public:
  Every(std::chrono::milliseconds interval, std::function<void()> fn);
  ~Every();
  Every(const Every&) = delete;
  Every& operator=(const Every&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// How often a relay sweeps its idle connections: a quarter of their timeout, at most
// once a second.
std::chrono::milliseconds sweep_interval(const SmtpRelayOptions& options);

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
  const SmtpRelayOptions& options() const;

  // Closes the idle connections that are of no more use: idle longer than
  // options.idle_connection_timeout (QUIT), or closed or written to by the server.
  // Returns whether the client is still worth keeping (connections idle, a delivery
  // under way, or one within the idle timeout). Thread-safe.
  bool sweep();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta::smtp
