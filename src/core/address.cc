// A small RFC 5322 address-list reader, enough to take envelope recipients from
// To/Cc/Bcc (like `sendmail -t`). Hand-written because no Debian C++ package parses
// address lists; it only has to find the addr-specs, not validate them.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/ascii.h"
#include "slimta/envelope.h"

namespace slimta {
namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return std::string(s.substr(b, e - b));
}

}  // namespace

std::vector<std::string> parse_address_list(std::string_view value) {
  std::vector<std::string> out;
  std::string plain;  // text of the current mailbox outside quotes/comments/<>
  std::string angle;  // contents of <...>, if any
  bool have_angle = false;
  auto finish = [&] {
    std::string addr = have_angle ? trim(angle) : trim(plain);
    // An address without '@' (a bare display name or group leftovers) is not kept.
    if (addr.find('@') != std::string::npos) out.push_back(addr);
    plain.clear();
    angle.clear();
    have_angle = false;
  };
  for (size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (c == '"') {  // quoted string: copied only when it is a local part
      std::string quoted = "\"";
      for (++i; i < value.size() && value[i] != '"'; ++i) {
        if (value[i] == '\\' && i + 1 < value.size()) quoted += value[i++];
        quoted += value[i];
      }
      quoted += '"';
      plain += quoted;
    } else if (c == '(') {  // comment, possibly nested
      int depth = 1;
      for (++i; i < value.size() && depth > 0; ++i) {
        if (value[i] == '\\')
          ++i;
        else if (value[i] == '(')
          ++depth;
        else if (value[i] == ')')
          --depth;
      }
      --i;
    } else if (c == '<') {
      have_angle = true;
      for (++i; i < value.size() && value[i] != '>'; ++i) angle += value[i];
    } else if (c == ':') {  // group name ends: what came before is a display name
      plain.clear();
    } else if (c == ',' || c == ';') {
      finish();
    } else {
      plain += c;
    }
  }
  finish();
  return out;
}

std::string printable(std::string_view text, bool line_breaks) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    bool kept = line_breaks && (c == '\r' || c == '\n' || c == '\t');
    if (is_control(c) && !kept) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace slimta
