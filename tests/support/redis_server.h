// A real redis-server for the tests: started on 127.0.0.1, a free port (another one if
// that was taken before redis bound it) and a temp dir, stopped by its PID. A test that
// needs one FAILS if it cannot start it; it is skipped only when a developer sets
// SLIMTA_SKIP_REDIS=1 locally (CI never does).
//
// Under ctest, the shared servers are the ones the "test_servers" fixture started once
// for the whole run (tests/support/test_servers.cc), found through $SLIMTA_TEST_SERVERS.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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
    int replica_of = 0;  // a replica of the server on this port (127.0.0.1)
    // A sentinel (redis-server --sentinel) watching the master on this port as
    // sentinel_master, agreeing on its failure with `quorum` sentinels; it is down after
    // 1 s without an answer.
    int sentinel_of = 0;
    std::string sentinel_master = "mm";
    int quorum = 1;
    // A Redis Cluster node (its bus on port + 10000; see RedisCluster).
    bool cluster = false;
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
  // The commands it has processed so far (INFO stats' total_commands_processed: scripts'
  // own calls and this INFO included).
  long long commands_processed() const;
  // The server also listens on this unix socket.
  std::string socket_path() const { return dir_ + "/redis.sock"; }
  const std::string& dir() const { return dir_; }
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  void kill();    // SIGKILL, as a crash would
  void pause();   // SIGSTOP: the server hangs, connections stay open
  void resume();  // SIGCONT
  void start();   // (re)start on the same port and data dir
  // Restarts it as a replica of the server on `port`, as an operator brings a failed
  // master back after a failover (the sentinels would make it one, but take 10-30 s).
  void start_as_replica_of(int port);

  // Options pointing at this server, with socket_timeout set and a prefix.
  RedisOptions options(const std::string& prefix = "test:", int db = 0) const;

  // True when SLIMTA_SKIP_REDIS=1 (local opt-out).
  static bool skipped();
  // A free port below the ephemeral range whose port + 10000 is free too.
  static int cluster_port();

 private:
  Config config_;
  std::optional<TempDir> own_dir_;
  std::string dir_;
  int port_ = 0;
  int tls_port_ = 0;
  pid_t pid_ = -1;
};

// A master, a replica and sentinels watching them as "mm": Redis as high availability
// deploys it. Server 0 is the master at first, server 1 its replica.
class SentinelGroup {
 public:
  static constexpr const char* kMaster = "mm";
  // Starts them (detached: see RedisServer::Config::detached).
  explicit SentinelGroup(int sentinels, bool detached = false);
  // Servers started by another process (the ctest fixture): data ports, sentinel ports
  // and dirs, in the order of ports().
  explicit SentinelGroup(const std::vector<std::pair<int, std::string>>& servers, int sentinels);

  RedisServer& server(size_t i) { return *data_.at(i); }
  RedisServer& sentinel(size_t i) { return *sentinels_.at(i); }
  size_t sentinels() const { return sentinels_.size(); }
  // Every server, data then sentinels.
  std::vector<RedisServer*> all();
  // Options that find the master through the sentinels.
  RedisOptions options(const std::string& prefix = "test:") const;
  // The master's port as the first sentinel that answers names it; 0 if none does.
  int master_port() const;

 private:
  std::vector<std::unique_ptr<RedisServer>> data_, sentinels_;
};

// A Redis Cluster made with redis-cli --cluster create (`replicas` for each master),
// ready (cluster_state:ok on every node) when constructed.
class RedisCluster {
 public:
  explicit RedisCluster(int masters = 3, bool detached = false, int replicas = 0);
  // Nodes started by another process (the ctest fixture): ports and dirs.
  explicit RedisCluster(const std::vector<std::pair<int, std::string>>& nodes);

  RedisServer& node(size_t i) { return *nodes_.at(i); }
  size_t size() const { return nodes_.size(); }
  // Options that reach it through its nodes.
  RedisOptions options(const std::string& prefix = "test:") const;
  // Keys a node holds (DBSIZE).
  long long keys(size_t i) const;
  // The commands all its nodes have processed so far (RedisServer::commands_processed()).
  long long commands_processed() const;

 private:
  std::vector<std::unique_ptr<RedisServer>> nodes_;
};

// Whether the master on `port` has `n` replicas that acknowledge writes at once (three
// in a row, each within 50 ms: just after its first sync a replica may answer WAIT only
// once a second for a while), waiting up to `limit`.
bool replicas_in_sync(int port, int n, std::chrono::milliseconds limit = std::chrono::seconds(20));

// `options` (for a server on `server`) as a new ACL user allowed exactly
// RedisStorage::acl_rule(options.prefix), the rule doc/redis.md gives.
RedisOptions as_acl_user(const RedisServer& server, RedisOptions options);

// One server shared by the tests of a process (started on first use).
RedisServer& shared_redis();
// One shared server with requirepass "s3cret".
RedisServer& shared_redis_with_password();
// One shared server with a TLS port too, and the certificate it presents (for
// localhost and 127.0.0.1, its own CA).
RedisServer& shared_redis_tls();
const std::string& shared_redis_tls_cert();
// One shared master + replica + 1 sentinel.
SentinelGroup& shared_redis_sentinel();
// One shared cluster of 3 masters.
RedisCluster& shared_redis_cluster();

}  // namespace slimta::testing
