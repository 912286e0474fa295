// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) that a
// load balancer sends ahead of the client's bytes, naming the client it accepted.
// Pure functions: no I/O, no state; shared by the server and its property tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace slimta::smtp {

struct ProxyHeader {
  enum class Status {
    incomplete,  // a valid beginning: read more and parse again
    invalid,     // not a PROXY header, or a malformed one: close the connection
    ok,
  };
  Status status = Status::incomplete;
  size_t length = 0;   // ok: bytes the header took (the client's own bytes follow)
  std::string source;  // ok: the client's address; empty when the header carries
                       // none (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX)
  uint16_t source_port = 0;
  std::string error;  // invalid: what was wrong, for the log
};

// Longest header accepted: v1's 107 bytes, or v2's 16 plus this many.
constexpr size_t kMaxProxyV2Payload = 1024;

// Parses the header at the start of `data` (what was read so far).
ProxyHeader parse_proxy_header(std::string_view data);

// Whether `data` starts with the whole signature of a PROXY header, of either version
// (a client that may not send one is refused when it does).
bool looks_like_proxy_header(std::string_view data);

}  // namespace slimta::smtp
