#include "http_routes.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <sstream>

#include "admin/format.h"
#include "admin/operations.h"
#include "status_page.h"

namespace slimta::daemon::routes {

namespace {

// The request's query parameters, as admin::Filter::parse reads them.
std::function<std::optional<std::string>(const char*)> params_of(const httplib::Request& req) {
  return [&req](const char* name) -> std::optional<std::string> {
    if (!req.has_param(name)) return std::nullopt;
    return req.get_param_value(name);
  };
}

std::optional<std::string> reason_of(const httplib::Request& req) {
  if (!req.has_param("reason")) return std::nullopt;
  return req.get_param_value("reason");
}

// X-Envelope-Recipient headers, each a comma-separated list.
std::vector<std::string> recipients_of(const httplib::Request& req) {
  std::vector<std::string> out;
  for (size_t i = 0; i < req.get_header_value_count("X-Envelope-Recipient"); ++i) {
    std::string v = req.get_header_value("X-Envelope-Recipient", i);
    for (size_t at = 0; at <= v.size();) {
      size_t comma = std::min(v.find(',', at), v.size());
      std::string r = v.substr(at, comma - at);
      r.erase(0, r.find_first_not_of(' '));
      r.erase(r.find_last_not_of(' ') + 1);
      if (!r.empty()) out.push_back(r);
      at = comma + 1;
    }
  }
  return out;
}

}  // namespace

void json_reply(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(admin::dump(body) + "\n", "application/json");
}

void error_reply(httplib::Response& res, int status, const std::string& message) {
  json_reply(res, status, {{"error", message}});
}

void status_page(HttpContext& ctx, const httplib::Request&, httplib::Response& res) {
  res.headers.erase("Content-Security-Policy");  // the default one forbids its style
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
                 "frame-ancestors 'none'; base-uri 'none'");
  res.set_content(
      daemon::status_page(ctx.gauges.snapshot(), ctx.activity, ctx.reception.options()->hostname),
      "text/html; charset=utf-8");
}

void metrics(HttpContext& ctx, const httplib::Request&, httplib::Response& res) {
  res.set_content(ctx.registry.render(), "text/plain; version=0.0.4; charset=utf-8");
}

void healthz(HttpContext&, const httplib::Request&, httplib::Response& res) {
  res.set_content("ok\n", "text/plain");
}

void readyz(HttpContext& ctx, const httplib::Request&, httplib::Response& res) {
  std::string why = ctx.ready();
  res.status = why.empty() ? 200 : 503;
  res.set_content(why.empty() ? "ready\n" : why + "\n", "text/plain");
}

void info(HttpContext& ctx, const httplib::Request&, httplib::Response& res) {
  json_reply(res, 200,
             {{"messages", static_cast<uint64_t>(ctx.gauges.messages())},
              {"held", static_cast<uint64_t>(ctx.gauges.held())},
              {"oldest_message_age_seconds", ctx.gauges.oldest_age()},
              {"scan_seconds", ctx.gauges.count_seconds()}});
}

void shape(HttpContext& ctx, const httplib::Request&, httplib::Response& res) {
  std::ostringstream ignored;
  json_reply(res, 200, admin::shape_json(admin::compute_shape(ctx.storage, ignored)));
}

void list_messages(HttpContext& ctx, const httplib::Request& req, httplib::Response& res) {
  admin::Filter filter = admin::Filter::parse(params_of(req));
  size_t limit = 100;
  if (req.has_param("limit")) {
    std::string v = req.get_param_value("limit");
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 1 || n > 1000)
      throw InvalidArgument("limit='" + v + "': 1 to 1000");
    limit = static_cast<size_t>(n);
  }
  admin::Page page = admin::list_page(ctx.storage, filter, limit, req.get_param_value("cursor"));
  json_reply(
      res, 200,
      {{"messages", std::move(page.messages)},
       {"next_cursor", page.next_cursor ? nlohmann::json(*page.next_cursor) : nlohmann::json()}});
}

void show_message(HttpContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string id = req.matches[1];
  json_reply(res, 200, admin::show_json(id, ctx.storage.get(id)));
}

void remove_message(HttpContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string id = req.matches[1];
  ctx.storage.get(id);  // 404 if it is not there
  json_reply(res, 200, {{"id", id}, {"done", admin::act_on(ctx.storage, "remove", id)}});
}

void act_on_message(HttpContext& ctx, const httplib::Request& req, httplib::Response& res) {
  std::string id = req.matches[1];
  std::string done = admin::act_on(ctx.storage, req.matches[2].str(), id, reason_of(req));
  json_reply(res, 200, {{"id", id}, {"done", done}});
}

void act_on_matching(HttpContext& ctx, const httplib::Request& req, httplib::Response& res) {
  admin::Filter filter = admin::Filter::parse(params_of(req));
  json_reply(res, 200,
             admin::act_on_matching(ctx.storage, req.matches[1].str(), filter, reason_of(req)));
}

// As python-slimta's EdgeWsgi: the envelope in headers, the message as body.
void inject(HttpContext& ctx, const httplib::Request& req, httplib::Response& res) {
  if (req.get_header_value("Content-Type").rfind("message/rfc822", 0) != 0)
    return error_reply(res, 415, "the body must be message/rfc822");
  if (!req.has_header("X-Envelope-Sender"))
    throw InvalidArgument("X-Envelope-Sender is missing (empty for the null sender)");
  Envelope env;
  env.sender = req.get_header_value("X-Envelope-Sender");
  env.recipients = recipients_of(req);
  if (env.recipients.empty()) throw InvalidArgument("X-Envelope-Recipient is missing");
  if (std::string why = ctx.relay_refusal(req.remote_addr, env, ctx.api_token); !why.empty())
    return error_reply(res, 403, why);
  env.parse(req.body);
  env.client.ip = req.remote_addr;
  env.client.protocol = "HTTP";
  ReceptionResult result = ctx.reception.receive(std::move(env));
  if (result.queued()) return json_reply(res, 201, {{"id", result.id}});
  // The door's SMTP reply, as SMTP would have said it; a 4xx may be sent again.
  bool again = result.outcome == ReceptionResult::Outcome::deferred;
  if (again) res.set_header("Retry-After", "60");
  json_reply(res,
             again                             ? 503
             : result.reply.starts_with("552") ? 413
                                               : 400,
             {{"error", "message not accepted: " + result.reply}, {"reply", result.reply}});
}

}  // namespace slimta::daemon::routes
