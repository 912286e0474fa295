// serve's HTTP listener (--http): Prometheus metrics, health and readiness, and a
// JSON view of the queue, for operators and their monitoring.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "gauges.h"
#include "slimta/metrics.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/storage.h"

namespace slimta::daemon {

struct HttpOptions {
  std::string listen;      // HOST:PORT; port 0: any free one
  std::string token_file;  // first line: the bearer token /api/ needs; empty: loopback only
};

// Where --http binds and the token /api/ takes, read and checked from `options` (by
// HttpServer, and by check-config through plan_serve): InvalidArgument for a bad
// HOST:PORT, an address off loopback without a token file, or a token file that cannot
// be read or holds a token under 16 characters.
struct HttpBinding {
  std::string listen;  // as given, for errors
  std::string host;
  uint16_t port = 0;
  std::string token;  // empty: none (loopback only)
};
HttpBinding http_binding(const HttpOptions& options);

// What the HTTP server serves from; everything must outlive it.
struct HttpContext {
  metrics::Registry& registry;
  const QueueGauges& gauges;
  Activity& activity;
  QueueStorage& storage;  // the API's reads and actions
  // Whether serve can take traffic: "" when ready, else why not (503's body).
  std::function<std::string()> ready;
  // The door injected messages go through, as SMTP's DATA (its max_message_size is
  // also the body's limit).
  Reception& reception;
  // SMTP's relay rules for an injected message's recipients: "" when a client at `ip`
  // may send to all of them, else RCPT's reply. A client with the token counts as an
  // authenticated SMTP client.
  std::function<std::string(const std::string& ip, const Envelope& envelope, bool authenticated)>
      relay_refusal;
  // Set by HttpServer: whether /api/ takes a token (a caller that got through is then
  // trusted as an authenticated SMTP client).
  bool api_token = false;
};

class HttpServer {
 public:
  // Binds now (throws InvalidArgument naming the problem: a non-loopback address
  // without a token, a bad token file; QueueError if it cannot bind), serves from a
  // thread of its own until destroyed. Routes (http_routes.h, one function each):
  // GET / (the status page), /metrics,
  // /healthz, /readyz; under
  // /api/v1/ (the token's, if any): GET info, shape, messages (filters domain=, state=,
  // older-than=SECONDS; limit=, cursor= pages by id), messages/ID; POST messages/ID/
  // (retry|hold|release|bounce), DELETE messages/ID; POST messages/(retry|hold|release|
  // remove|bounce)
  // for every message the filters select; POST messages (a message/rfc822 body with
  // X-Envelope-Sender and X-Envelope-Recipient headers) -> 201 {"id"} once durable.
  HttpServer(const HttpBinding& binding, HttpContext context);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // "HOST:PORT" as bound.
  const std::string& address() const { return address_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

}  // namespace slimta::daemon
