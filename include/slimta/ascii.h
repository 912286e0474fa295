// ASCII case helpers for protocol text (SMTP verbs, header names, domains, addresses): the C
// locale's case, whatever the process locale.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

namespace slimta {

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }
inline char ascii_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }

// A control character (C0 or DEL): what a log line, a header or a reply must not carry
// raw.
inline bool is_control(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

inline std::string to_lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
  return out;
}
inline std::string to_upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), ascii_upper);
  return out;
}

inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return ascii_lower(x) == ascii_lower(y);
         });
}

// The domain of `address` (after its last '@'), lower-cased; "" when it has none.
inline std::string domain_of(std::string_view address) {
  size_t at = address.rfind('@');
  return at == std::string_view::npos ? std::string() : to_lower(address.substr(at + 1));
}

// `text` with each control character (and DEL) written as \xNN, so that what a peer
// sent cannot forge a log line or a terminal's output; `line_breaks` keeps CR, LF and
// TAB as they are.
std::string printable(std::string_view text, bool line_breaks = false);

}  // namespace slimta
