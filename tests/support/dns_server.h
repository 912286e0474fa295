// A DNS server for the tests: tests/support/dns_server.py on 127.0.0.1 and a port it
// binds itself (port 0, read back), answering from `zone` (see there).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "support/test_util.h"

namespace slimta::testing {

class DnsServer {
 public:
  explicit DnsServer(const nlohmann::json& zone)
      : process_({"python3", SLIMTA_SOURCE_DIR "/tests/support/dns_server.py", "0", zone.dump()},
                 "ready"),
        port_(port_after("ready ", process_.output())) {}
  // "127.0.0.1:PORT", for Resolver::server and --dns-server.
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  ChildProcess process_;
  int port_;
};

}  // namespace slimta::testing
