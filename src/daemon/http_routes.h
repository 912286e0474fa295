// The routes of serve's HTTP listener, one function each: HttpServer checks the token
// and maps errors (KeyError 404, InvalidArgument 400, QueueError 503) around the /api/
// ones; each route reads its request and fills its response from the context.
#pragma once

#include <httplib.h>

#include "http_server.h"

namespace slimta::daemon::routes {

using Route = void (*)(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);

// GET /: the status page (status_page.h).
void status_page(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// GET /metrics: the registry in Prometheus' text format.
void metrics(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// GET /healthz: 200 while the process runs.
void healthz(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// GET /readyz: 200 "ready", or 503 and why not (ctx.ready()).
void readyz(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);

// GET /api/v1/info: the gauges' figures.
void info(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// GET /api/v1/shape: admin::shape_json().
void shape(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// GET /api/v1/messages?domain=&state=&older-than=&limit=&cursor=: admin::list_page().
void list_messages(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// GET /api/v1/messages/ID: admin::show_json().
void show_message(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// DELETE /api/v1/messages/ID.
void remove_message(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// POST /api/v1/messages/ID/(retry|hold|release|bounce)?reason=.
void act_on_message(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// POST /api/v1/messages/(retry|hold|release|remove|bounce)?FILTERS&reason=.
void act_on_matching(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);
// POST /api/v1/messages: a message/rfc822 body with X-Envelope-Sender and
// X-Envelope-Recipient headers, through the relay rules and the one door: 201 {"id"};
// the door's refusal as 400 or 413, its deferral as 503 with Retry-After.
void inject(HttpContext& ctx, const httplib::Request& req, httplib::Response& res);

// A JSON body and its status; {"error": message}.
void json_reply(httplib::Response& res, int status, const nlohmann::json& body);
void error_reply(httplib::Response& res, int status, const std::string& message);

}  // namespace slimta::daemon::routes
