// A real redis-server for the tests: started on 127.0.0.1, a free port (another one if
// that was taken before redis bound it) and a temp dir, stopped by its PID. A test that
// needs one FAILS if it cannot start it; it is skipped only when a developer sets
// SLIMTA_SKIP_REDIS=1 locally (CI never does).
//
// Under ctest, the shared servers are the ones the "test_servers" fixture started once
// for the whole run (tests/support/test_servers.cc), found through $SLIMTA_TEST_SERVERS.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "slimta/redis_storage.h"
#include "support/test_util.h"

namespace slimta::testing {

class RedisServer {
 public:
  struct Config {
    std::string password{};   // requirepass, if not empty
    bool appendonly = false;  // AOF with appendfsync always
    // Outlives this object and its process (the ctest fixture's servers): stop it by
    // its pid, remove its dir.
    bool detached = false;
    // Also a TLS port with this certificate and key (its own CA: see certificate.h);
    // client certificates are asked for but optional.
    std::string tls_cert{}, tls_key{};
  };
  explicit RedisServer(Config config);
  // A server that another process started and stops.
  RedisServer(Config config, int port, std::string dir);
  RedisServer() : RedisServer(Config{}) {}
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  int tls_port() const { return tls_port_; }  // 0 without Config::tls_cert
  // The server also listens on this unix socket.
  std::string socket_path() const { return dir_ + "/redis.sock"; }
  const std::string& dir() const { return dir_; }
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  void kill();    // SIGKILL, as a crash would
  void pause();   // SIGSTOP: the server hangs, connections stay open
  void resume();  // SIGCONT
  void start();   // (re)start on the same port and data dir

  // Options pointing at this server, with socket_timeout set and a prefix.
  RedisOptions options(const std::string& prefix = "test:", int db = 0) const;

  // True when SLIMTA_SKIP_REDIS=1 (local opt-out).
  static bool skipped();

 private:
  Config config_;
  std::optional<TempDir> own_dir_;
  std::string dir_;
  int port_ = 0;
  int tls_port_ = 0;
  pid_t pid_ = -1;
};

// One server shared by the tests of a process (started on first use).
RedisServer& shared_redis();
// One shared server with requirepass "s3cret".
RedisServer& shared_redis_with_password();
// One shared server with a TLS port too, and the certificate it presents (for
// localhost and 127.0.0.1, its own CA).
RedisServer& shared_redis_tls();
const std::string& shared_redis_tls_cert();

}  // namespace slimta::testing
