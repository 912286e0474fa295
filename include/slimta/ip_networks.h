// IpNetworks: a list of IP networks in CIDR notation, IPv4 and IPv6, for deciding
// who may relay and who may send a PROXY protocol header.
//
// "192.0.2.0/24", "2001:db8::/32", "127.0.0.1" (a single host), "::1/128". An IPv4
// address written as IPv6 (v4-mapped, "::ffff:192.0.2.7", as a dual-stack socket
// reports IPv4 peers) matches the IPv4 networks, and an IPv4 network written in that
// form matches plain IPv4 addresses.
//
// Thread safety: immutable after construction; contains() from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace slimta {

class IpNetworks {
 public:
  IpNetworks() = default;  // matches nothing
  // Throws InvalidArgument naming the entry that is not an address or network (a
  // prefix longer than the address, bits set past the prefix, a host name).
  explicit IpNetworks(const std::vector<std::string>& networks);
  // "net[,net...]"; spaces around entries are ignored; "" is the empty list.
  static IpNetworks parse(std::string_view comma_separated);

  // Whether `ip` (an address in text form, as from a socket) is in one of the
  // networks. Text that is not an address matches nothing.
  bool contains(std::string_view ip) const;
  bool empty() const { return networks_.empty(); }
  // The networks as given, normalized ("127.0.0.0/8"), for logs and --help.
  std::string to_string() const;

 private:
  struct Network {
    std::array<uint8_t, 16> address;  // IPv4 as v4-mapped IPv6
    unsigned prefix;                  // of the 128 bits
    std::string text;
  };
  std::vector<Network> networks_;
};

}  // namespace slimta
