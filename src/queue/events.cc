#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/overloaded.h"
#include "slimta/ascii.h"
#include "slimta/envelope.h"
#include "slimta/queue_events.h"

namespace slimta {
namespace {

// A remote string for a quoted value: control characters as \xNN (printable()), and
// quotes and backslashes escaped, so that it cannot end its value early.
std::string quoted(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return printable(out);
}

// " relay=host[ip]:port delays=a/b/c tls=\"...\"" when a connection was made; "" else.
std::string text_of(const events::Hop& h) {
  if (h.relay.empty()) return "";
  std::string out = fmt::format(" relay={} delays={:.2f}/{:.2f}/{:.2f}", printable(h.relay),
                                h.queued, h.connect, h.transmit);
  if (!h.tls.empty()) out += fmt::format(" tls=\"{}\"", quoted(h.tls));
  return out;
}

std::string text_of(const events::Enqueued& e) {
  std::string who;
  if (!e.client_ip.empty()) who += " client=[" + printable(e.client_ip) + "]";
  if (!e.helo.empty()) who += " helo=<" + printable(e.helo) + ">";
  if (!e.auth.empty()) who += " sasl_username=" + printable(e.auth);
  if (!e.message_id.empty()) who += " message-id=" + printable(e.message_id);
  return fmt::format("{} enqueued from=<{}> rcpts={} size={}{}", e.id, printable(e.sender), e.rcpts,
                     e.size, who);
}
std::string text_of(const events::NotEnqueued& e) {
  return fmt::format("not enqueued from=<{}>: {}", printable(e.sender), printable(e.error));
}
std::string text_of(const events::Attempt& e) {
  return fmt::format("{} attempt n={} rcpts={}", e.id, e.attempt, e.rcpts);
}
std::string text_of(const events::Delivered& e) {
  return fmt::format("{} delivered rcpt=<{}> attempt={} delay={:.2f}{} reply=\"{}\"", e.id,
                     printable(e.rcpt), e.attempt, e.delay, text_of(e.hop), quoted(e.reply));
}
std::string text_of(const events::Failed& e) {
  std::string gave_up =
      e.gave_up.empty() ? std::string() : fmt::format(" gave_up=\"{}\"", quoted(e.gave_up));
  return fmt::format("{} failed rcpt=<{}> attempt={} delay={:.2f}{}{} reply=\"{}\"", e.id,
                     printable(e.rcpt), e.attempt, e.delay, text_of(e.hop), gave_up,
                     quoted(e.reply));
}
std::string text_of(const events::Deferred& e) {
  std::string rcpt = e.rcpt.empty() ? "" : " rcpt=<" + printable(e.rcpt) + ">";
  if (e.rcpts > 1) rcpt += fmt::format(" (and {} more)", e.rcpts - 1);
  return fmt::format("{} deferred{} attempt={}{} next={} reply=\"{}\"", e.id, rcpt, e.attempt,
                     text_of(e.hop), iso8601_time(e.next), quoted(e.reply));
}
std::string text_of(const events::Bounced& e) {
  return fmt::format("{} bounced to=<{}> rcpts={} dsn={}{}", e.id, printable(e.to), e.rcpts, e.dsn,
                     e.delayed ? " delayed=1 (a delay warning: still being tried)" : "");
}
std::string text_of(const events::Removed& e) { return e.id + " removed"; }
std::string text_of(const events::LeaseLost& e) {
  return fmt::format("{} lease_lost: {}", e.id, printable(e.detail));
}
std::string text_of(const events::Error& e) {
  return fmt::format("{} error: {}; retry at {}", e.id, printable(e.detail), iso8601_time(e.retry));
}

}  // namespace

const char* event_name(const QueueEvent& event) {
  static constexpr const char* kNames[] = {"enqueued",   "not_enqueued", "attempt", "delivered",
                                           "failed",     "deferred",     "bounced", "removed",
                                           "lease_lost", "error"};
  static_assert(std::size(kNames) == std::variant_size_v<QueueEvent>);
  return kNames[event.index()];
}

std::string event_text(const QueueEvent& event, bool component) {
  std::string text = std::visit([](const auto& e) { return text_of(e); }, event);
  return component ? "queue: " + text : text;
}

void LogObserver::on_event(const QueueEvent& event) {
  auto level = std::visit(Overloaded{[](const events::LeaseLost&) { return spdlog::level::warn; },
                                     [](const events::NotEnqueued&) { return spdlog::level::warn; },
                                     [](const events::Error&) { return spdlog::level::err; },
                                     [](const auto&) { return spdlog::level::info; }},
                          event);
  if (spdlog::should_log(level)) spdlog::log(level, "{}", event_text(event));
}

void notify(const QueueObservers& observers, const QueueEvent& event) {
  for (const auto& o : observers) {
    if (!o) continue;
    try {
      o->on_event(event);
    } catch (const std::exception& e) {
      spdlog::error("queue: an observer failed on a {} event: {}", event_name(event), e.what());
    }
  }
}

}  // namespace slimta
