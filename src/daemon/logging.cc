#include "logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "admin/format.h"
#include "core/overloaded.h"
#include "slimta/errors.h"

namespace slimta::daemon {
namespace {

// The fields of the event being logged on this thread (EventLog), for the JSON format.
thread_local const nlohmann::json* t_event_fields = nullptr;
// Whether the log is JSON: only then are an event's fields made.
std::atomic<bool> g_json_log{false};

// The syslog priority of a level, as journald reads it from a "<N>" prefix.
char priority(spdlog::level::level_enum level) {
  static constexpr char kPriority[] = {'7', '7', '6', '4', '3', '2', '6'};  // by level
  return kPriority[static_cast<int>(level)];
}

// Whether JOURNAL_STREAM names our stderr (systemd sets it so; sd-daemon(3)).
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  unsigned long long dev = 0, ino = 0;
  return stream && std::sscanf(stream, "%llu:%llu", &dev, &ino) == 2 && ::fstat(2, &st) == 0 &&
         st.st_dev == dev && st.st_ino == ino;
}

class SyslogPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    dest.push_back(priority(msg.level));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriority>();
  }
};

class JsonFormatter : public spdlog::formatter {
 public:
  explicit JsonFormatter(bool journal) : journal_(journal) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string_view text(msg.payload.data(), msg.payload.size());
    double t = std::chrono::duration<double>(msg.time.time_since_epoch()).count();
    auto millis = static_cast<int>((t - std::floor(t)) * 1000);
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03dZ", millis);
    nlohmann::json j{{"time", utc_time(t, "%Y-%m-%dT%H:%M:%S") + frac},
                     {"level", spdlog::level::to_string_view(msg.level).data()}};
    if (t_event_fields) j.update(*t_event_fields);
    j["msg"] = std::string(text);
    std::string line =
        (journal_ ? std::string("<") + priority(msg.level) + ">" : "") + admin::dump(j);
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(journal_);
  }

 private:
  bool journal_;
};

// relay, tls and delays {queued, connect, transmit} when a connection was made.
void put_hop(nlohmann::json& j, const events::Hop& h) {
  if (h.relay.empty()) return;
  j["relay"] = h.relay;
  if (!h.tls.empty()) j["tls"] = h.tls;
  j["delays"] = {{"queued", h.queued}, {"connect", h.connect}, {"transmit", h.transmit}};
}

}  // namespace

nlohmann::json event_fields(const QueueEvent& event) {
  nlohmann::json j{{"component", "queue"}, {"event", event_name(event)}};
  std::visit(
      Overloaded{
          [&](const events::Enqueued& e) {
            j.update({{"id", e.id}, {"from", e.sender}, {"rcpts", e.rcpts}, {"size", e.size}});
            for (const auto& [key, value] : {std::pair{"client", &e.client_ip},
                                             {"helo", &e.helo},
                                             {"sasl_username", &e.auth},
                                             {"message_id", &e.message_id}})
              if (!value->empty()) j[key] = *value;
          },
          [&](const events::NotEnqueued& e) {
            j.update({{"from", e.sender}, {"error", e.error}, {"retryable", e.retryable}});
          },
          [&](const events::Attempt& e) {
            j.update({{"id", e.id}, {"n", e.attempt}, {"rcpts", e.rcpts}, {"seconds", e.seconds}});
          },
          [&](const events::Delivered& e) {
            j.update({{"id", e.id},
                      {"rcpt", e.rcpt},
                      {"attempt", e.attempt},
                      {"delay", e.delay},
                      {"reply", e.reply}});
            put_hop(j, e.hop);
          },
          [&](const events::Failed& e) {
            j.update({{"id", e.id},
                      {"rcpt", e.rcpt},
                      {"attempt", e.attempt},
                      {"delay", e.delay},
                      {"reply", e.reply}});
            if (!e.gave_up.empty()) j["gave_up"] = e.gave_up;
            put_hop(j, e.hop);
          },
          [&](const events::Deferred& e) {
            j.update({{"id", e.id},
                      {"attempt", e.attempt},
                      {"next", iso8601_time(e.next)},
                      {"reply", e.reply},
                      {"rcpts", e.rcpts}});
            if (!e.rcpt.empty()) j["rcpt"] = e.rcpt;
            put_hop(j, e.hop);
          },
          [&](const events::Bounced& e) {
            j.update({{"id", e.id}, {"to", e.to}, {"rcpts", e.rcpts}, {"dsn", e.dsn}});
            if (e.delayed) j["delayed"] = true;
          },
          [&](const events::Removed& e) {
            j.update({{"id", e.id}, {"age", e.age}});
          },
          [&](const events::LeaseLost& e) {
            j.update({{"id", e.id}, {"detail", e.detail}});
          },
          [&](const events::Error& e) {
            j.update({{"id", e.id}, {"detail", e.detail}, {"retry", iso8601_time(e.retry)}});
          },
      },
      event);
  return j;
}

void EventLog::on_event(const QueueEvent& event) {
  if (!g_json_log.load(std::memory_order_relaxed)) return LogObserver::on_event(event);
  nlohmann::json fields = event_fields(event);
  t_event_fields = &fields;
  try {
    LogObserver::on_event(event);
  } catch (...) {
    t_event_fields = nullptr;
    throw;
  }
  t_event_fields = nullptr;
}

void configure_logging() {
  spdlog::set_default_logger(spdlog::stderr_color_mt("slimta-queue"));
  set_log_format("text");
}

void set_log_level(const std::string& level) {
  spdlog::set_level(spdlog::level::from_str(level == "warning" ? "warn" : level));
}

void set_log_format(const std::string& format) {
  auto logger = spdlog::default_logger();
  bool journal = stderr_is_journal();
  g_json_log = format == "json";
  if (format == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>(journal));
  } else if (format == "text") {
    if (journal) {
      auto formatter = std::make_unique<spdlog::pattern_formatter>();
      formatter->add_flag<SyslogPriority>('*').set_pattern("<%*>%v");
      logger->set_formatter(std::move(formatter));
    } else {
      logger->set_formatter(std::make_unique<spdlog::pattern_formatter>());
    }
  } else {
    throw InvalidArgument("--log-format '" + format + "': text or json");
  }
}

}  // namespace slimta::daemon
