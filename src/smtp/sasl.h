// SASL pieces of SMTP AUTH (RFC 4954): base64 as SMTP carries it, and the PLAIN
// mechanism's message (RFC 4616). Pure functions, shared by the server, the client
// and the property tests.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace slimta::smtp {

std::string base64_encode(std::string_view data);
// Strict: the alphabet of RFC 4648 section 4, padded to a multiple of 4, nothing
// else (no spaces, no line breaks). nullopt for anything else.
std::optional<std::string> base64_decode(std::string_view text);

struct PlainCredentials {
  std::string authzid;  // who to act as; empty: the same as user
  std::string user;     // authcid
  std::string password;
};
// The decoded PLAIN message: authzid NUL authcid NUL passwd, authcid and passwd not
// empty, none with a NUL of its own (RFC 4616 section 2). nullopt if malformed.
std::optional<PlainCredentials> parse_plain(std::string_view message);

}  // namespace slimta::smtp
