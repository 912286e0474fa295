// SmtpServer: the SMTP edge (RFC 5321) that accepts mail for a queue.
//
// EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, VRFY (answered 252 without looking
// anything up), with PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES and, with a
// certificate, STARTTLS. A message
// gets its 250 only after `deliver` returned an id (for a Queue: the storage's write()
// returned, so the message is durable); when it fails the client gets 451 4.3.0 and
// nothing is kept. A client that disconnects before the end of DATA leaves nothing
// behind. A Received: header is added.
//
// Networking runs on Asio (one event-loop thread); `deliver` runs on a pool of
// blocking threads, so slow storage never stalls other sessions.
//
// Thread safety: listen() before run(); stop() from any thread (e.g. a signal
// handler's thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "slimta/envelope.h"
#include "slimta/queue.h"

namespace slimta {

struct SmtpServerOptions {
  // Our name in the greeting, the EHLO reply and Received: headers. Empty: hostname.
  std::string hostname;
  // The SIZE limit: a larger message gets 552 5.3.4 (at MAIL if announced).
  size_t max_message_size = 50 * 1024 * 1024;
  size_t max_recipients = 1000;  // more get 452 4.5.3
  // Command lines longer than this get 500 5.5.2 (RFC 5321: 512 with CRLF).
  size_t max_command_line = 512;
  // Message lines longer than this make the message refused, 500 5.5.2 (RFC 5321: 1000).
  size_t max_data_line = 1000;
  // A client silent this long, or not reading our replies for this long, gets
  // 421 4.4.2 (if it reads it within a second) and is disconnected.
  std::chrono::milliseconds idle_timeout = std::chrono::minutes(5);
  // A client making this many bad commands gets 421 4.7.0 and is disconnected.
  size_t max_errors = 20;
  // Threads that run `deliver` (storage writes): messages accepted concurrently.
  size_t deliver_threads = 32;
  // PEM files: when both are set, STARTTLS is offered (TLS 1.2 or later).
  std::string tls_certificate_file;
  std::string tls_key_file;
};

class SmtpServer {
 public:
  // Takes each received message; returns its id (accepted) or the error (refused,
  // 451 4.3.0 if retryable, else 554 5.3.0). Runs on a deliver thread.
  using Deliver = std::function<EnqueueResult(Envelope&& envelope)>;

  // Throws InvalidArgument for an unusable TLS certificate or key (naming the file).
  SmtpServer(SmtpServerOptions options, Deliver deliver);
  ~SmtpServer();
  SmtpServer(const SmtpServer&) = delete;
  SmtpServer& operator=(const SmtpServer&) = delete;

  // Listen on `host`:`port` (port 0: a free one); returns the port. Throws
  // InvalidArgument for a bad address, QueueError if it cannot listen.
  uint16_t listen(const std::string& host, uint16_t port);
  // Serve until stop(): on the calling thread.
  void run();
  // Stop accepting, end every session (a message not yet accepted is not kept; one
  // whose write is under way finishes it), and make run() return.
  void stop();

  // Sessions open now, and messages accepted so far.
  size_t sessions() const;
  size_t accepted() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
