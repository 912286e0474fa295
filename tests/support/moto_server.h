// A real S3 + SQS API server for the tests: moto (preinstalled with python3), run by
// tests/support/moto_serial.py so that its conditional writes are atomic as S3's are,
// started on 127.0.0.1 and a port it binds itself (port 0, read back), stopped by its
// PID. A test that needs it FAILS if it cannot start it; SLIMTA_SKIP_MOTO=1 skips such
// tests, for local use only (CI never sets it).
//
// Under ctest, shared_moto() is the server the "test_servers" fixture started once for
// the whole run (tests/support/test_servers.cc), found through $SLIMTA_TEST_SERVERS.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

#include "slimta/cloud_storage.h"

namespace slimta::testing {

class MotoServer {
 public:
  // `extra_env`: environment for moto_server (e.g. INITIAL_NO_AUTH_ACTION_COUNT).
  // `detached`: it outlives this object and its process (stop it by its pid).
  explicit MotoServer(std::map<std::string, std::string> extra_env = {}, bool detached = false);
  // A server that another process started and stops.
  explicit MotoServer(int port) : port_(port) {}
  ~MotoServer();
  MotoServer(const MotoServer&) = delete;
  MotoServer& operator=(const MotoServer&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Options with this endpoint and the test credentials.
  AwsOptions aws() const;

  // Creates a bucket / a queue (returns the queue URL), signed with aws().
  void create_bucket(const std::string& bucket) const;
  std::string create_queue(const std::string& name) const;
  // The requests it has served so far, by kind ("s3 GET", "s3 LIST", "sqs SendMessage",
  // ...), whoever made them (counted by tests/support/moto_serial.py).
  std::map<std::string, uint64_t> request_counts() const;

  static bool skipped();

 private:
  int port_ = 0;
  pid_t pid_ = -1;
  bool detached_ = false;
};

MotoServer& shared_moto();

}  // namespace slimta::testing
