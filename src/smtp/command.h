// Parsing of SMTP command lines (RFC 5321 section 4.1), shared by the server and its
// fuzz test. Pure functions: no I/O, no state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slimta::smtp {

struct Command {
  std::string verb;  // upper-cased: "EHLO", "MAIL", ...
  std::string arg;   // the rest of the line after one space, as sent
};

// Splits a command line (without its line ending) into verb and argument.
Command parse_command(std::string_view line);

// A MAIL FROM / RCPT TO argument: the path and its ESMTP parameters.
struct PathArg {
  std::string address;                                      // empty for the null path <>
  std::vector<std::pair<std::string, std::string>> params;  // KEYWORD (upper-cased), value
};

// Parses "FROM:<a@b> SIZE=10" (keyword "FROM") or "TO:<a@b>" (keyword "TO"). Returns
// nullopt with `error` set to the reply to send when the argument is malformed.
// Accepts "FROM: <a@b>" (a space before the path, as some clients send) and a path
// without angle brackets only when it has no spaces. Source routes (@a,@b:x@y) are
// dropped, as RFC 5321 section 4.1.1.3 permits.
std::optional<PathArg> parse_path_arg(std::string_view arg, std::string_view keyword,
                                      std::string& error);

}  // namespace slimta::smtp
