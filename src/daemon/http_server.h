// serve's HTTP listener (--http): Prometheus metrics, health and readiness, and a
// JSON view of the queue, for operators and their monitoring.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "admin/operations.h"
#include "gauges.h"
#include "http_limits.h"
#include "slimta/metrics.h"
#include "slimta/queue.h"
#include "slimta/reception.h"
#include "slimta/storage.h"

namespace slimta::daemon {

struct HttpOptions {
  std::string listen;      // HOST:PORT; port 0: any free one
  std::string token_file;  // first line: the bearer token /api/ needs; empty: no API
  HttpLimits limits;
};

// Where --http binds and the token /api/ takes, read and checked from `options` (by
// HttpServer, and by check-config through plan_serve): InvalidArgument for a bad
// HOST:PORT, an address off loopback without a token file, or a token file that cannot
// be read or holds a token under 16 characters.
struct HttpBinding {
  std::string listen;  // as given, for errors
  std::string host;
  uint16_t port = 0;
  std::string token;  // empty: none (loopback only, and no /api/)
  HttpLimits limits;
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
  // may send to all of them, else RCPT's reply. An API caller has the token: it counts
  // as an authenticated SMTP client, whatever its address.
  std::function<std::string(const std::string& ip, const Envelope& envelope, bool authenticated)>
      relay_refusal;
  // The destination serve delivers a recipient to (retry resets the down ones).
  admin::DestinationOf destination_of;
  // The destinations' limits ([destinations]), as at the start.
  ShapingPolicy shaping;
};

class HttpServer {
 public:
  // Binds now (throws InvalidArgument naming the problem: a non-loopback address
  // without a token, a bad token file; QueueError if it cannot bind), serves from
  // threads of its own until destroyed. Routes (http_routes.h, one function each):
  // GET / (the status page; the token's, as Bearer or a Basic password, if there is
  // one), /metrics, /healthz, /readyz; under /api/v1/ (the token's, always: without a
  // token file the API is off): GET info, shape, messages (filters domain=, state=,
  // older-than=SECONDS; limit=, cursor= pages by id), messages/ID; POST messages/ID/
  // (retry|hold|release|bounce), DELETE messages/ID; POST messages/(retry|hold|release|
  // remove|bounce) for every message the filters select; POST messages (a
  // message/rfc822 body with X-Envelope-Sender and X-Envelope-Recipient headers) -> 201
  // {"id"} once durable.
  //
  // Every request is checked from its head before its body is read (http_limits.h):
  // the Host it names (421), its framing (411, 415, 400), the route (404, 405), the
  // token (401, or 403 with no token file), the body's size against the door's limit
  // (413) and the door's memory budget (503). The limits in binding.limits bound what
  // a client costs; /healthz is answered on the network thread and the other routes on
  // workers of their own, so no route can starve it. Each API call is logged with its
  // caller.
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
