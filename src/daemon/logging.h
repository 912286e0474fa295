// slimta-queue's log lines: text (with a time stamp, or journald's "<N>" priority
// prefix when JOURNAL_STREAM names stderr), or one JSON object per line.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "slimta/queue_events.h"

namespace slimta::daemon {

// Sets up the default logger on stderr, as text.
void configure_logging();
// "text" or "json"; InvalidArgument for anything else.
void set_log_format(const std::string& format);
// --log-level: "debug", "info", "warning" or "error".
void set_log_level(const std::string& level);

// The queue's events to the log: each one's text line, which the JSON format writes
// with the event's fields as data (event_fields), never parsed back from the text.
class EventLog : public LogObserver {
 public:
  void on_event(const QueueEvent& event) override;
};

// An event's fields for the JSON log: component "queue", id, event, and its own
// (queue_events.h; times as ISO 8601, addresses unbracketed).
nlohmann::json event_fields(const QueueEvent& event);

}  // namespace slimta::daemon
