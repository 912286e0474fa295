#include "logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "admin/format.h"
#include "slimta/errors.h"

namespace slimta::daemon {
namespace {

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
    j.update(log_fields(text));
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

bool is_word(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
}

}  // namespace

nlohmann::json log_fields(std::string_view text) {
  nlohmann::json j = nlohmann::json::object();
  size_t colon = text.find(": ");
  if (colon == std::string_view::npos || !is_word(text.substr(0, colon))) return j;
  j["component"] = std::string(text.substr(0, colon));
  std::string_view rest = text.substr(colon + 2);
  auto next_token = [&rest]() {
    size_t end = rest.find(' ');
    std::string_view token = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    return token;
  };
  // A message's event: "ID event"; other lines are prose, with key=value pairs at most.
  if (std::string_view token = rest.substr(0, rest.find(' '));
      is_valid_id(token) && token.size() == 32) {
    j["id"] = std::string(next_token());
    if (std::string_view event = rest.substr(0, rest.find(' ')); is_word(event))
      j["event"] = std::string(next_token());
  }
  // key=value pairs; a quoted value runs to its closing quote (the last one for the
  // last pair, so a reply may hold quotes).
  while (!rest.empty()) {
    size_t eq = rest.find('=');
    if (eq == std::string_view::npos || !is_word(rest.substr(0, eq))) break;
    std::string key(rest.substr(0, eq));
    rest.remove_prefix(eq + 1);
    std::string value;
    if (rest.starts_with('"')) {
      size_t close = rest.find("\" ", 1);
      bool last =
          close == std::string_view::npos || rest.find('=', close) == std::string_view::npos;
      if (last) close = rest.rfind('"');
      if (close == 0 || close == std::string_view::npos) break;
      value = rest.substr(1, close - 1);
      rest = close + 2 <= rest.size() ? rest.substr(close + 2) : std::string_view();
    } else {
      value = next_token();
    }
    if (value.size() >= 2 && value.front() == '<' && value.back() == '>')
      value = value.substr(1, value.size() - 2);
    double number = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
    if (ec == std::errc() && end == value.data() + value.size() && !value.empty()) {
      j[key] = number;
    } else {
      j[key] = value;
    }
  }
  return j;
}

void configure_logging() {
  spdlog::set_default_logger(spdlog::stderr_color_mt("slimta-queue"));
  set_log_format("text");
}

void set_log_format(const std::string& format) {
  auto logger = spdlog::default_logger();
  bool journal = stderr_is_journal();
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
