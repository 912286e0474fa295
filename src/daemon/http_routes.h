// The routes of serve's HTTP listener, one function each: HttpServer checks the request
// (http_limits.h) and maps errors (KeyError 404, InvalidArgument 400, QueueError 503)
// around the /api/ ones; each route reads its request and fills its response from the
// context. Requests and responses are plain values, whatever server carries them.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http_server.h"

namespace slimta::daemon {

// A request as a route sees it: read whole and checked by the server.
struct HttpRequest {
  std::string method;                                        // "GET", "POST", ...
  std::string path;                                          // without the query
  std::vector<std::string> matches;                          // the route's captures; [0]: path
  std::vector<std::pair<std::string, std::string>> params;   // the query, decoded, in order
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string body;
  std::string remote_addr;

  bool has_param(std::string_view name) const;
  // The first value of `name`; "" when there is none.
  std::string param(std::string_view name) const;
  // The first value of header `name` (any case); "" when there is none.
  std::string header(std::string_view name) const;
  std::vector<std::string> header_values(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // beside the server's defaults

  void set_content(std::string content, std::string type) {
    body = std::move(content);
    content_type = std::move(type);
  }
  // Sets `name` (replacing a value set before, or the server's default).
  void set_header(const std::string& name, const std::string& value);
};

}  // namespace slimta::daemon

namespace slimta::daemon::routes {

using Route = void (*)(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);

// GET /: the status page (status_page.h).
void status_page(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// GET /metrics: the registry in Prometheus' text format.
void metrics(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// GET /healthz: 200 while the process runs.
void healthz(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// GET /readyz: 200 "ready", or 503 and why not (ctx.ready()).
void readyz(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);

// GET /api/v1/info: the gauges' figures and admin::storage_info_json() as they last read
// it (no storage request per call).
void info(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// GET /api/v1/destinations: each destination with state (admin::destination_json(),
// "waiting" null: it would take a scan of the queue).
void list_destinations(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// POST /api/v1/destinations/NAME/suspend?for=DURATION&reason=, .../resume: as the CLI's
// suspend and resume; a name this configuration never delivers to is suspended with a
// "warning".
void suspend_destination(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// GET /api/v1/shape: admin::shape_json().
void shape(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// GET /api/v1/messages?domain=&state=&older-than=&limit=&cursor=: admin::list_page().
void list_messages(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// GET /api/v1/messages/ID: admin::show_json().
void show_message(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// DELETE /api/v1/messages/ID.
void remove_message(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// POST /api/v1/messages/ID/(retry|hold|release|bounce)?reason=.
void act_on_message(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// POST /api/v1/messages/(retry|hold|release|remove|bounce)?FILTERS&reason=.
void act_on_matching(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);
// POST /api/v1/messages: a message/rfc822 body with X-Envelope-Sender and
// X-Envelope-Recipient headers, through the relay rules (as an authenticated client:
// the token is the caller's credential) and the one door: 201 {"id"}; the door's
// refusal as 400 or 413, its deferral as 503 with Retry-After.
void inject(HttpContext& ctx, const HttpRequest& req, HttpResponse& res);

// A JSON body and its status; {"error": message}.
void json_reply(HttpResponse& res, int status, const nlohmann::json& body);
void error_reply(HttpResponse& res, int status, const std::string& message);

}  // namespace slimta::daemon::routes
