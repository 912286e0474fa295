// slimta-queue's log lines: text (with a time stamp, or journald's "<N>" priority
// prefix when JOURNAL_STREAM names stderr), or one JSON object per line.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace slimta::daemon {

// Sets up the default logger on stderr, as text.
void configure_logging();
// "text" or "json"; InvalidArgument for anything else.
void set_log_format(const std::string& format);

// The fields of a log line "component: [ID event] key=value key=\"value\"...":
// component, id and event, and each key (numbers as numbers, <address> unbracketed).
nlohmann::json log_fields(std::string_view text);

}  // namespace slimta::daemon
