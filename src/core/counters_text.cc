#include "core/counters_text.h"

#include <charconv>

#include <spdlog/spdlog.h>

namespace slimta {

std::string format_counters(const Counters& counters) {
  std::string out;
  for (const auto& [name, n] : counters) out += name + " " + std::to_string(n) + "\n";
  return out;
}

Counters parse_counters(std::string_view text, std::string_view what) {
  Counters out;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (line.empty()) continue;
    size_t sp = line.find(' ');
    int64_t n = 0;
    auto num = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
    if (sp == 0 || num.empty() || ec != std::errc() || end != num.data() + num.size()) {
      spdlog::warn("counters {}: skipping unreadable line '{}'", what, line);
      continue;
    }
    out[std::string(line.substr(0, sp))] += n;
  }
  return out;
}

}  // namespace slimta
