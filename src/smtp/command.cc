#include "smtp/command.h"

#include "slimta/ascii.h"

#include <algorithm>
#include <cctype>

namespace slimta::smtp {
namespace {

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && to_upper(s.substr(0, prefix.size())) == to_upper(prefix);
}

// Characters never allowed in an address we accept: controls, space, and the
// brackets that delimit it.
bool bad_address_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x21 || u == 0x7F || c == '<' || c == '>';
}

}  // namespace

Command parse_command(std::string_view line) {
  size_t sp = line.find(' ');
  Command c;
  c.verb = to_upper(line.substr(0, sp));
  if (sp != std::string_view::npos) c.arg = std::string(line.substr(sp + 1));
  return c;
}

std::optional<PathArg> parse_path_arg(std::string_view arg, std::string_view keyword,
                                      std::string& error) {
  std::string want = std::string(keyword) + ":";
  if (!istarts_with(arg, want)) {
    error = "501 5.5.4 Syntax: " +
            std::string(keyword == "FROM" ? "MAIL FROM:<address>" : "RCPT TO:<address>");
    return std::nullopt;
  }
  arg.remove_prefix(want.size());
  while (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);
  std::string_view path, rest;
  if (!arg.empty() && arg.front() == '<') {
    size_t close = arg.find('>');
    if (close == std::string_view::npos) {
      error = "501 5.1.7 Bad address syntax: missing '>'";
      return std::nullopt;
    }
    path = arg.substr(1, close - 1);
    rest = arg.substr(close + 1);
  } else {
    size_t sp = arg.find(' ');
    path = arg.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : arg.substr(sp);
  }
  if (!path.empty() && path.front() == '@') {  // source route: @a,@b:user@host
    size_t colon = path.find(':');
    if (colon == std::string_view::npos) {
      error = "501 5.1.7 Bad address syntax";
      return std::nullopt;
    }
    path.remove_prefix(colon + 1);
  }
  if (path.size() > 254 || std::any_of(path.begin(), path.end(), bad_address_char)) {
    error = "501 5.1.7 Bad address syntax";
    return std::nullopt;
  }
  // Internationalized addresses need SMTPUTF8 (RFC 6531), which is not offered.
  if (std::any_of(path.begin(), path.end(), [](char c) { return (c & 0x80) != 0; })) {
    error = "553 5.6.7 Non-ASCII address requires SMTPUTF8, which this server does not offer";
    return std::nullopt;
  }
  if (!path.empty() &&
      (path.find('@') == std::string_view::npos || path.front() == '@' || path.back() == '@')) {
    // RFC 5321 allows RCPT TO:<postmaster> without a domain.
    if (!(keyword == "TO" && to_upper(path) == "POSTMASTER")) {
      error = "501 5.1.3 Bad address syntax: user@domain expected";
      return std::nullopt;
    }
  }
  PathArg out;
  out.address = std::string(path);
  if (!rest.empty() && rest.front() != ' ') {
    error = "501 5.5.4 Syntax error after the address";
    return std::nullopt;
  }
  while (!rest.empty()) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty()) break;
    size_t sp = rest.find(' ');
    std::string_view p = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp);
    size_t eq = p.find('=');
    out.params.emplace_back(to_upper(p.substr(0, eq)),
                            eq == std::string_view::npos ? "" : std::string(p.substr(eq + 1)));
  }
  return out;
}

}  // namespace slimta::smtp
