// The shortest decimal text of a double that reads back as exactly the same double, and
// its reader: how timestamps and seconds are written wherever they are text (Redis
// fields, S3 object names, the shaping state).
#pragma once

#include <charconv>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>

namespace slimta {

inline std::string decimal_text(double d) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, end);
}

// decimal_text()'s output (or any decimal number) back; nullopt unless all of `s` is a
// finite number.
inline std::optional<double> parse_decimal(std::string_view s) {
  double v = 0;
  auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

}  // namespace slimta
