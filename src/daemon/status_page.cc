#include "status_page.h"

#include <fmt/format.h>

#include <algorithm>

#include "admin/format.h"
#include "slimta/envelope.h"

namespace slimta::daemon {
namespace {

std::string html(std::string_view text) {
  std::string out;
  for (char c : printable(text)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string age(double seconds) {
  if (seconds < 120) return fmt::format("{:.0f} s", seconds);
  if (seconds < 7200) return fmt::format("{:.0f} min", seconds / 60);
  if (seconds < 172800) return fmt::format("{:.1f} h", seconds / 3600);
  return fmt::format("{:.1f} days", seconds / 86400);
}

// Delivered, deferred and failed recipients and bounces per minute, as polylines.
std::string chart(const std::vector<Activity::Minute>& minutes) {
  const int width = 600, height = 160, left = 40, bottom = 20;
  uint64_t top = 1;
  for (const auto& m : minutes) top = std::max({top, m.delivered, m.deferred, m.failed, m.bounced});
  auto x = [&](size_t i) { return left + (width - left) * static_cast<double>(i) / 59.0; };
  auto y = [&](uint64_t v) {
    return (height - bottom) - (height - bottom - 10) * static_cast<double>(v) / top;
  };
  std::string svg = fmt::format(
      "<svg role=\"img\" aria-label=\"deliveries in the last hour\" width=\"{}\" height=\"{}\" "
      "viewBox=\"0 0 {} {}\"><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>"
      "<text x=\"0\" y=\"14\" font-size=\"11\">{}/min</text>"
      "<text x=\"{}\" y=\"{}\" font-size=\"11\">-60 min</text>"
      "<text x=\"{}\" y=\"{}\" font-size=\"11\">now</text>",
      width, height, width, height, left, height - bottom, width, height - bottom, top, left,
      height - 4, width - 24, height - 4);
  size_t offset = 60 - std::min<size_t>(60, minutes.size());  // the newest minute at the right
  struct Series {
    const char* name;
    const char* color;
    uint64_t Activity::Minute::*field;
  };
  for (const Series& s : {Series{"delivered", "#2a7", &Activity::Minute::delivered},
                          Series{"deferred", "#e90", &Activity::Minute::deferred},
                          Series{"failed", "#c33", &Activity::Minute::failed},
                          Series{"bounced", "#66c", &Activity::Minute::bounced}}) {
    std::string points;
    for (size_t i = 0; i < minutes.size(); ++i)
      points += fmt::format("{:.1f},{:.1f} ", x(offset + i), y(minutes[i].*s.field));
    svg += fmt::format(
        "<polyline class=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
        s.name, s.color, points);
  }
  return svg + "</svg>";
}

// The figures the gauges counted.
void queue_section(const QueueSnapshot& queue, Timestamp t, std::string& out) {
  out += "<h2>Queue</h2>";
  if (queue.taken == 0) {
    out += "<p id=\"scanning\">The first scan of the queue is under way.</p>";
  } else {
    out += fmt::format(
        "<p><span class=\"n\" id=\"depth\">{}</span> messages queued, "
        "<span id=\"held\">{}</span> held; the oldest was received <span id=\"oldest\">{}</span> "
        "ago. (Counted {} ago in {:.2f} s; the whole shared queue.)</p>",
        static_cast<uint64_t>(queue.messages), static_cast<uint64_t>(queue.held),
        queue.oldest > 0 ? age(t - queue.oldest) : "-", age(t - queue.taken), queue.count_seconds);
  }
}

// This process's last hour, minute by minute, and why it deferred.
void activity_section(Activity& activity, std::string& out) {
  std::vector<Activity::Minute> minutes = activity.last_hour();
  Activity::Minute sum;
  for (const auto& m : minutes) {
    sum.delivered += m.delivered;
    sum.deferred += m.deferred;
    sum.failed += m.failed;
    sum.bounced += m.bounced;
  }
  out += fmt::format(
      "<h2>The last hour, this process</h2><p class=\"legend\">"
      "<span style=\"color:#2a7\">delivered <b id=\"delivered\">{}</b></span>"
      "<span style=\"color:#e90\">deferred <b id=\"deferred\">{}</b></span>"
      "<span style=\"color:#c33\">failed <b id=\"failed\">{}</b></span>"
      "<span style=\"color:#66c\">bounced <b id=\"bounced\">{}</b></span> (recipients; "
      "bounces are messages)</p>",
      sum.delivered, sum.deferred, sum.failed, sum.bounced);
  out += chart(minutes);

  out += "<h2>Top deferral reasons</h2>";
  auto reasons = activity.top_deferrals(10);
  if (reasons.empty()) {
    out += "<p>None since this process started.</p>";
  } else {
    out += "<table id=\"reasons\"><tr><th>Reply</th><th>Attempts</th></tr>";
    for (const auto& [reply, n] : reasons)
      out += fmt::format("<tr><td>{}</td><td>{}</td></tr>", html(reply), n);
    out += "</table>";
  }
}

// By domain and age, from the last scan.
void shape_section(const QueueSnapshot& queue, Timestamp t, std::string& out) {
  out += "<h2>By recipient domain and age (minutes)</h2>";
  // Read message by message, only while this page is looked at (gauges.h).
  out += queue.scanned == 0
             ? std::string(
                   "<p id=\"shape-scanning\">The first scan of every message (for this "
                   "table and the held messages) is under way: reload in a moment.</p>")
             : fmt::format("<p>Scanned {} ago.</p>", age(t - queue.scanned));
  out +=
      "<table id=\"shape\"><tr><th>Domain</th>"
      "<th>Total</th>";
  for (const char* b : Shape::kBucketNames) out += fmt::format("<th>{}</th>", b);
  out += "</tr>";
  auto row = [&](const std::string& name, const Shape::Row& r) {
    size_t total = 0;
    for (size_t n : r) total += n;
    out += fmt::format("<tr><td>{}</td><td>{}</td>", html(name), total);
    for (size_t n : r) out += fmt::format("<td>{}</td>", n);
    out += "</tr>";
  };
  row("TOTAL", queue.shape.total);
  size_t shown = 0;
  for (const auto& [domain, r] : queue.shape.domains) {
    if (++shown > 50) break;
    row(domain, r);
  }
  out += "</table>";
}

// The first held messages, from the last scan.
void held_section(const QueueSnapshot& queue, std::string& out) {
  out += "<h2>Held messages</h2>";
  if (queue.held_messages.empty()) {
    out += "<p>None.</p>";
  } else {
    out +=
        "<table id=\"held-messages\"><tr><th>Id</th><th>Since (UTC)</th><th>Reason</th>"
        "<th>Sender</th><th>Recipients</th><th>Last reply</th></tr>";
    for (const auto& m : queue.held_messages) {
      std::string rcpts;
      for (const auto& r : m["recipients"])
        rcpts += (rcpts.empty() ? "" : ", ") + r["address"].get<std::string>();
      std::string reply = m["last_reply"].is_string() ? m["last_reply"].get<std::string>() : "";
      out +=
          fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                      html(m["id"].get<std::string>()), html(m["hold"]["since"].get<std::string>()),
                      html(m["hold"]["reason"].get<std::string>()),
                      html(m["sender"].get<std::string>()), html(rcpts), html(reply));
    }
    out += "</table>";
  }
}

// The destinations with state (down, suspended, failing first), from the last look.
void destinations_section(const QueueSnapshot& queue, Timestamp t, std::string& out) {
  out += "<h2>Destinations</h2>";
  if (queue.destinations.empty()) {
    out += "<p>None has state: no delivery under way, none failing, down or suspended.</p>";
    return;
  }
  out +=
      "<table id=\"destinations\"><tr><th>Destination</th><th>State</th><th>In use</th>"
      "<th>Failures</th><th>Until (UTC)</th><th>Last reply or reason</th></tr>";
  for (const DestinationStatus& s : queue.destinations) {
    std::string state = admin::destination_state(s, t);
    std::string until = state == "suspended" ? (s.suspended_until == DestinationStatus::kForever
                                                    ? "resumed"
                                                    : admin::format_time(s.suspended_until))
                        : state == "down"    ? admin::format_time(s.down_until)
                                             : "";
    std::string note = state == "suspended" ? s.suspend_reason : s.last_reply;
    out +=
        fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    html(s.name), html(state), s.in_use, s.failures, html(until), html(note));
  }
  out += "</table>";
}

}  // namespace

std::string status_page(const QueueSnapshot& queue, Activity& activity,
                        const std::string& hostname) {
  Timestamp t = admin::now();
  std::string out = fmt::format(
      "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta http-equiv=\"refresh\" content=\"30\"><title>slimta-queue on {}</title><style>"
      "body{{font-family:sans-serif;margin:1.5em;color:#222}}"
      "table{{border-collapse:collapse;margin-bottom:1.5em}}"
      "td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right}}"
      "td:first-child,th:first-child{{text-align:left}}.n{{font-size:2em}}"
      ".legend span{{margin-right:1em}}</style></head><body>"
      "<h1>slimta-queue on {}</h1>",
      html(hostname), html(hostname));

  queue_section(queue, t, out);
  activity_section(activity, out);
  destinations_section(queue, t, out);
  shape_section(queue, t, out);
  held_section(queue, out);
  return out + "</body></html>\n";
}

}  // namespace slimta::daemon
