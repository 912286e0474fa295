// A real SMTP sink for the tests: tests/support/sink.py on Debian's python3-aiosmtpd,
// started on 127.0.0.1 and a free port. A test that needs one FAILS if it cannot
// start it (python3-aiosmtpd is installed by scripts/install-deps.sh).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_util.h"

namespace slimta::testing {

class SmtpSink {
 public:
  // `rules`: recipient -> the replies its RCPT TO gets, in order (see sink.py).
  // With `user`, the sink offers AUTH and requires it (password `password`).
  explicit SmtpSink(const nlohmann::json& rules = nlohmann::json::object(),
                    const std::string& user = "", const std::string& password = "");
  ~SmtpSink();
  SmtpSink(const SmtpSink&) = delete;
  SmtpSink& operator=(const SmtpSink&) = delete;

  int port() const { return port_; }
  // The messages accepted so far (those whose log line is complete): {"from", "to": [...], "helo",
  // "size", "seq", "received" (the first Received: field, unfolded), "report"}.
  std::vector<nlohmann::json> received() const;

 private:
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace slimta::testing
