// MX lookups for delivery by DNS (RFC 5321 section 5.1), on the system resolver
// (glibc's libresolv: res_nquery with a per-call state, so it is thread-safe).
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <string>
#include <vector>

namespace slimta::smtp {

// The address of a DNS server given as "IPV4" or "IPV4:PORT" (port 53 by default).
// Throws InvalidArgument naming `server` otherwise.
sockaddr_in dns_server_address(const std::string& server);

struct Resolver {
  // "IP" or "IP:PORT" of the DNS server to ask; empty: those of /etc/resolv.conf.
  std::string server;
  std::chrono::milliseconds timeout = std::chrono::seconds(5);
};

// Where mail for a domain goes: addresses, most preferred MX first (each host's IPv4
// addresses before its IPv6 ones).
struct MxResult {
  enum class Status { ok, no_domain, null_mx, temporary };
  Status status = Status::temporary;
  std::vector<std::string> hosts;      // MX host names in order of preference
  std::vector<std::string> addresses;  // their addresses, in the same order
  std::string detail;                  // what went wrong, for the reply
};

// MX records of `domain`, sorted by preference; no MX: the domain's own address
// (the implicit MX); a single MX "." (RFC 7505): null_mx.
MxResult lookup_mx(const std::string& domain, const Resolver& resolver);

}  // namespace slimta::smtp
