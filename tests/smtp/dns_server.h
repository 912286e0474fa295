// A DNS server for the tests: tests/smtp/dns_server.py on 127.0.0.1 and a free port,
// answering from `zone` (see there).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace slimta::testing {

class DnsServer {
 public:
  explicit DnsServer(const nlohmann::json& zone)
      : port_(free_port()),
        process_({"python3", SLIMTA_SOURCE_DIR "/tests/smtp/dns_server.py", std::to_string(port_),
                  zone.dump()},
                 "ready") {}
  // "127.0.0.1:PORT", for Resolver::server and --dns-server.
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int port_;
  ChildProcess process_;
};

}  // namespace slimta::testing
