// A self-signed certificate for localhost and 127.0.0.1 (its own CA) for the TLS tests,
// made with the openssl command (Debian package openssl, installed by install-deps).
#pragma once

#include <stdexcept>
#include <string>

#include "support/test_util.h"

namespace slimta::testing {

struct Certificate {
  std::string cert, key;  // PEM files
};

inline Certificate make_certificate(const TempDir& dir, const std::string& name) {
  Certificate c{dir.sub(name + ".crt"), dir.sub(name + ".key")};
  auto r = run_command({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", c.key, "-out", c.cert});
  if (r.exit_code != 0) throw std::runtime_error("openssl req failed: " + r.err);
  return c;
}

}  // namespace slimta::testing
