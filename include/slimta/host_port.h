// HOST:PORT as operators write it (listeners, smarthosts, routes, DNS servers, storage
// URLs): the one parser every option that names an endpoint goes through.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace slimta {

struct HostPort {
  std::string host;  // a name or an address, IPv6 without its brackets
  uint16_t port = 0;

  bool operator==(const HostPort&) const = default;
};

// Parses "HOST:PORT" or "[IPV6]:PORT"; with `default_port`, also "HOST", "[IPV6]" and a
// bare IPv6 address ("::1"), which then get that port. The port is 1 to 65535 in
// decimal digits, or 0 too with `port_zero` (a listener: the system picks one). Throws
// InvalidArgument "WHAT 'TEXT' is not HOST:PORT" (or "... HOST[:PORT]").
HostPort parse_host_port(std::string_view text, std::string_view what,
                         std::optional<uint16_t> default_port = std::nullopt,
                         bool port_zero = false);

}  // namespace slimta
