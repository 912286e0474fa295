// A real S3 + SQS API server for the tests: moto (preinstalled with python3), run by
// tests/cloud/moto_serial.py so that its conditional writes are atomic as S3's are,
// started on 127.0.0.1 and a free port, stopped by its PID. A test that needs it FAILS
// if it cannot start it; SLIMTA_SKIP_MOTO=1 skips such tests, for local use only (CI
// never sets it).
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

#include "slimta/cloud_storage.h"

namespace slimta::testing {

class MotoServer {
 public:
  // `extra_env`: environment for moto_server (e.g. INITIAL_NO_AUTH_ACTION_COUNT).
  explicit MotoServer(std::map<std::string, std::string> extra_env = {});
  ~MotoServer();
  MotoServer(const MotoServer&) = delete;
  MotoServer& operator=(const MotoServer&) = delete;

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Options with this endpoint and the test credentials.
  AwsOptions aws() const;

  // Creates a bucket / a queue (returns the queue URL), signed with aws().
  void create_bucket(const std::string& bucket) const;
  std::string create_queue(const std::string& name) const;

  static bool skipped();

 private:
  int port_ = 0;
  pid_t pid_ = -1;
};

MotoServer& shared_moto();

}  // namespace slimta::testing
