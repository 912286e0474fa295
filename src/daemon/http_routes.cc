#include "http_routes.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <sstream>

#include <spdlog/spdlog.h>

#include "admin/format.h"
#include "admin/operations.h"
#include "slimta/ascii.h"
#include "status_page.h"

namespace slimta::daemon::routes {

namespace {

// The request's query parameters, as admin::Filter::parse reads them.
std::function<std::optional<std::string>(const char*)> params_of(const HttpRequest& req) {
  return [&req](const char* name) -> std::optional<std::string> {
    if (!req.has_param(name)) return std::nullopt;
    return req.param(name);
  };
}

std::optional<std::string> reason_of(const HttpRequest& req) {
  if (!req.has_param("reason")) return std::nullopt;
  return req.param("reason");
}

// What an API caller changed, in serve's log: the audit trail (issue 34: API actions left
// no line). The request's path and query as sent, escaped.
void audit(const HttpRequest& req, const std::string& done) {
  std::string query;
  for (const auto& [k, v] : req.params) query += (query.empty() ? "?" : "&") + k + "=" + v;
  spdlog::info("api: [{}] {} {}{}: {}", printable(req.remote_addr), req.method, printable(req.path),
               printable(query), printable(done));
}

// X-Envelope-Recipient headers, each a comma-separated list.
std::vector<std::string> recipients_of(const HttpRequest& req) {
  std::vector<std::string> out;
  for (const std::string& v : req.header_values("X-Envelope-Recipient")) {
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

}  // namespace slimta::daemon::routes

namespace slimta::daemon {

bool HttpRequest::has_param(std::string_view name) const {
  return std::any_of(params.begin(), params.end(), [&](const auto& p) { return p.first == name; });
}

std::string HttpRequest::param(std::string_view name) const {
  for (const auto& [n, v] : params)
    if (n == name) return v;
  return "";
}

std::string HttpRequest::header(std::string_view name) const {
  std::vector<std::string> all = header_values(name);
  return all.empty() ? "" : all.front();
}

std::vector<std::string> HttpRequest::header_values(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [n, v] : headers)
    if (iequals(n, name)) out.push_back(v);
  return out;
}

void HttpResponse::set_header(const std::string& name, const std::string& value) {
  std::erase_if(headers, [&](const auto& h) { return iequals(h.first, name); });
  headers.emplace_back(name, value);
}

}  // namespace slimta::daemon

namespace slimta::daemon::routes {

void json_reply(HttpResponse& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(admin::dump(body) + "\n", "application/json");
}

void error_reply(HttpResponse& res, int status, const std::string& message) {
  json_reply(res, status, {{"error", message}});
}

void status_page(HttpContext& ctx, const HttpRequest&, HttpResponse& res) {
  res.set_header(  // the default one forbids its style
      "Content-Security-Policy",
      "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
      "frame-ancestors 'none'; base-uri 'none'");
  res.set_content(
      daemon::status_page(ctx.gauges.snapshot(), ctx.activity, ctx.reception.options()->hostname),
      "text/html; charset=utf-8");
}

void metrics(HttpContext& ctx, const HttpRequest&, HttpResponse& res) {
  res.set_content(ctx.registry.render(), "text/plain; version=0.0.4; charset=utf-8");
}

void healthz(HttpContext&, const HttpRequest&, HttpResponse& res) {
  res.set_content("ok\n", "text/plain");
}

void readyz(HttpContext& ctx, const HttpRequest&, HttpResponse& res) {
  std::string why = ctx.ready();
  res.status = why.empty() ? 200 : 503;
  res.set_content(why.empty() ? "ready\n" : why + "\n", "text/plain");
}

void info(HttpContext& ctx, const HttpRequest&, HttpResponse& res) {
  nlohmann::json j = ctx.gauges.storage_info();  // as the CLI's info --json, from the gauges
  j.update({{"messages", static_cast<uint64_t>(ctx.gauges.messages())},
            {"held", static_cast<uint64_t>(ctx.gauges.held())},
            {"oldest_message_age_seconds", ctx.gauges.oldest_age()},
            {"scan_seconds", ctx.gauges.count_seconds()}});
  json_reply(res, 200, j);
}

void list_destinations(HttpContext& ctx, const HttpRequest&, HttpResponse& res) {
  nlohmann::json list = nlohmann::json::array();
  Timestamp t = admin::now();
  for (const auto& s : ctx.storage.destinations()->status())
    list.push_back(admin::destination_json(s, ctx.shaping.limits(s.name), std::nullopt, t));
  json_reply(res, 200, {{"destinations", std::move(list)}});
}

void suspend_destination(HttpContext& ctx, const HttpRequest& req, HttpResponse& res) {
  std::string name = to_lower(std::string(req.matches[1]));
  nlohmann::json j{{"destination", name}};
  if (req.matches[2] == "resume") {
    ctx.storage.destinations()->resume(name);
    audit(req, "resumed");
    j["suspended"] = false;
    return json_reply(res, 200, j);
  }
  std::optional<Timestamp> until;
  if (req.has_param("for")) until = admin::now() + admin::parse_duration(req.param("for"));
  ctx.storage.destinations()->suspend(name, until.value_or(DestinationStatus::kForever),
                                      reason_of(req).value_or(""));
  j["suspended"] = true;
  admin::put_time(j, "until", until);
  audit(req, "suspended");
  if (std::string why = admin::not_a_destination(name, ctx.destination_of); !why.empty())
    j["warning"] = why;
  json_reply(res, 200, j);
}

void shape(HttpContext& ctx, const HttpRequest&, HttpResponse& res) {
  std::ostringstream ignored;
  json_reply(res, 200, admin::shape_json(admin::compute_shape(ctx.storage, ignored)));
}

void list_messages(HttpContext& ctx, const HttpRequest& req, HttpResponse& res) {
  admin::Filter filter = admin::Filter::parse(params_of(req));
  filter.destination_of = ctx.destination_of;
  size_t limit = 100;
  if (req.has_param("limit")) {
    std::string v = req.param("limit");
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 1 || n > 1000)
      throw InvalidArgument("limit='" + v + "': 1 to 1000");
    limit = static_cast<size_t>(n);
  }
  admin::Page page = admin::list_page(ctx.storage, filter, limit, req.param("cursor"));
  json_reply(
      res, 200,
      {{"messages", std::move(page.messages)},
       {"next_cursor", page.next_cursor ? nlohmann::json(*page.next_cursor) : nlohmann::json()}});
}

void show_message(HttpContext& ctx, const HttpRequest& req, HttpResponse& res) {
  std::string id = req.matches[1];
  json_reply(res, 200, admin::show_json(id, ctx.storage.get(id)));
}

void remove_message(HttpContext& ctx, const HttpRequest& req, HttpResponse& res) {
  std::string id = req.matches[1];  // act_on throws KeyError (404) if it is not there
  std::string done = admin::act_on(ctx.storage, "remove", id);
  audit(req, done);
  json_reply(res, 200, {{"id", id}, {"done", done}});
}

void act_on_message(HttpContext& ctx, const HttpRequest& req, HttpResponse& res) {
  std::string id = req.matches[1];
  admin::Flush flush(ctx.storage, ctx.destination_of);
  std::string done = admin::act_on(ctx.storage, req.matches[2], id, reason_of(req), &flush);
  audit(req, done);
  json_reply(res, 200, {{"id", id}, {"done", done}});
}

void act_on_matching(HttpContext& ctx, const HttpRequest& req, HttpResponse& res) {
  admin::Filter filter = admin::Filter::parse(params_of(req));
  filter.destination_of = ctx.destination_of;
  admin::Flush flush(ctx.storage, ctx.destination_of);
  nlohmann::json done =
      admin::act_on_matching(ctx.storage, req.matches[1], filter, reason_of(req), &flush);
  std::string counts;
  for (const auto& [what, ids] : done.items())
    counts += (counts.empty() ? "" : ", ") + what + " " + std::to_string(ids.size());
  audit(req, counts.empty() ? "nothing matched" : counts);
  json_reply(res, 200, done);
}

// As python-slimta's EdgeWsgi: the envelope in headers, the message as body.
void inject(HttpContext& ctx, const HttpRequest& req, HttpResponse& res) {
  if (!req.header("Content-Type").starts_with("message/rfc822"))
    return error_reply(res, 415, "the body must be message/rfc822");
  if (req.header_values("X-Envelope-Sender").empty())
    throw InvalidArgument("X-Envelope-Sender is missing (empty for the null sender)");
  Envelope env;
  env.sender = req.header("X-Envelope-Sender");
  env.recipients = recipients_of(req);
  if (env.recipients.empty()) throw InvalidArgument("X-Envelope-Recipient is missing");
  if (std::string why = ctx.relay_refusal(req.remote_addr, env, true); !why.empty())
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
