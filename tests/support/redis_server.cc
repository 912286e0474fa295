#include "support/redis_server.h"

#include "redis/connection.h"
#include "support/certificate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace slimta::testing {
namespace {

// True once the server answers PING with PONG (not LOADING, while it reads its AOF).
bool ready(int port, const std::string& password) {
  redisContext* c = redisConnect("127.0.0.1", port);
  bool ok = false;
  if (c && !c->err) {
    if (!password.empty()) freeReplyObject(redisCommand(c, "AUTH %s", password.c_str()));
    auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
    ok = r && r->type == REDIS_REPLY_STATUS && std::string(r->str) == "PONG";
    if (r) freeReplyObject(r);
  }
  if (c) redisFree(c);
  return ok;
}

// The fixture's server named `name` when ctest started one (see the header), else one
// of this process's own.
std::unique_ptr<RedisServer> fixture_redis(const std::string& name, RedisServer::Config config) {
  if (auto found = test_server(name)) {
    return std::make_unique<RedisServer>(config, found->at("port").get<int>(), found->at("dir"));
  }
  return std::make_unique<RedisServer>(config);
}

}  // namespace

namespace {

bool bindable(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}

}  // namespace

int RedisServer::cluster_port() {
  // Below the kernel's ephemeral range, and with its bus port (+10000) free as well.
  static std::mt19937 rng(std::random_device{}());
  for (int i = 0; i < 1000; ++i) {
    int port = 20000 + static_cast<int>(rng() % 12000);
    if (bindable(port) && bindable(port + 10000)) return port;
  }
  throw std::runtime_error("no free port pair for a cluster node");
}

bool RedisServer::skipped() {
  const char* v = std::getenv("SLIMTA_SKIP_REDIS");
  return v && std::string(v) == "1";
}

RedisServer::RedisServer(Config config) : config_(std::move(config)) {
  own_dir_.emplace();
  dir_ = own_dir_->path();
  if (config_.detached) own_dir_->keep();
  // free_port() races with every other process choosing ports: when redis finds its
  // port taken, another is tried.
  for (int tries = 0;; ++tries) {
    port_ = config_.cluster ? cluster_port() : free_port();
    if (!config_.tls_cert.empty()) tls_port_ = free_port();
    try {
      start();
      return;
    } catch (const std::runtime_error&) {
      if (tries == 5 ||
          read_file(dir_ + "/redis.log").find("Address already in use") == std::string::npos)
        throw;
    }
  }
}

RedisServer::RedisServer(Config config, int port, std::string dir)
    : config_(std::move(config)), dir_(std::move(dir)), port_(port) {}

RedisServer::~RedisServer() {
  if (pid_ > 0 && !config_.detached) {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
}

void RedisServer::start() {
  std::vector<std::string> args;
  if (config_.sentinel_of != 0) {
    // A sentinel rewrites its config file: written once, kept across restarts.
    std::string conf = dir_ + "/sentinel.conf";
    if (!std::filesystem::exists(conf)) {
      const std::string& m = config_.sentinel_master;
      write_file(conf, "port " + std::to_string(port_) + "\nbind 127.0.0.1\ndir " + dir_ +
                           "\nlogfile " + dir_ + "/redis.log\nsentinel monitor " + m +
                           " 127.0.0.1 " + std::to_string(config_.sentinel_of) + " " +
                           std::to_string(config_.quorum) + "\nsentinel down-after-milliseconds " +
                           m + " 1000\nsentinel failover-timeout " + m + " 5000\n");
    }
    args = {"redis-server", conf, "--sentinel"};
  } else {
    args = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
            "--dir", dir_, "--daemonize", "no", "--logfile", dir_ + "/redis.log", "--databases",
            "16", "--unixsocket", socket_path(), "--unixsocketperm", "700",
            // a replica's first sync at once, not 5 s later
            "--repl-diskless-sync-delay", "0"};
    if (config_.appendonly) {
      args.insert(args.end(), {"--appendonly", "yes", "--appendfsync", "always"});
    } else {
      args.insert(args.end(), {"--appendonly", "no"});
    }
    if (config_.replica_of != 0)
      args.insert(args.end(), {"--replicaof", "127.0.0.1", std::to_string(config_.replica_of)});
    if (config_.cluster)
      args.insert(args.end(), {"--cluster-enabled", "yes", "--cluster-config-file",
                               dir_ + "/nodes.conf", "--cluster-node-timeout", "2000"});
  }
  if (!config_.password.empty()) args.insert(args.end(), {"--requirepass", config_.password});
  if (!config_.tls_cert.empty()) {
    args.insert(args.end(),
                {"--tls-port", std::to_string(tls_port_), "--tls-cert-file", config_.tls_cert,
                 "--tls-key-file", config_.tls_key, "--tls-ca-cert-file", config_.tls_cert,
                 "--tls-auth-clients", "optional"});
  }
  Exec exec(args);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (config_.detached) {
      ::setsid();
    } else {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
    }
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 1);
    // Detached, it must not hold the pipes of whoever started it (ctest waits on them).
    if (config_.detached) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 2);
    }
    exec.run();
  }
  pid_ = pid;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!ready(port_, config_.password)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("redis-server did not start (exit status " +
                               std::to_string(WEXITSTATUS(status)) +
                               "); is it installed? (apt-get install redis-server)");
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("redis-server did not start in 20 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void RedisServer::start_as_replica_of(int port) {
  config_.replica_of = port;
  start();
}

void RedisServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RedisServer::pause() { ::kill(pid_, SIGSTOP); }

void RedisServer::resume() { ::kill(pid_, SIGCONT); }

RedisOptions RedisServer::options(const std::string& prefix, int db) const {
  RedisOptions o;
  o.host = "127.0.0.1";
  o.port = port_;
  o.db = db;
  if (!config_.password.empty()) o.password = config_.password;
  o.socket_timeout = 5.0;
  o.prefix = prefix;
  return o;
}

bool replicas_in_sync(int port, int n, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  std::string wait = "WAIT " + std::to_string(n) + " 50";
  redisContext* c = nullptr;
  int in_a_row = 0;
  while (in_a_row < 3 && std::chrono::steady_clock::now() <= deadline) {
    if (!c || c->err) {
      if (c) redisFree(c);
      c = redisConnect("127.0.0.1", port);
      if (c->err) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
    }
    freeReplyObject(redisCommand(c, "SET in-sync-probe %d", in_a_row));
    auto* r = static_cast<redisReply*>(redisCommand(c, wait.c_str()));
    bool acked = r && r->type == REDIS_REPLY_INTEGER && r->integer == n;
    if (r) freeReplyObject(r);
    in_a_row = acked ? in_a_row + 1 : 0;
    if (!acked) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (c) redisFree(c);
  return in_a_row == 3;
}

RedisOptions as_acl_user(const RedisServer& server, RedisOptions options) {
  options.username = "slimta" + random_hex(4);
  options.password = "pw" + random_hex(8);
  std::vector<std::string> argv = {"redis-cli", "-p",      std::to_string(server.port()),
                                   "ACL",       "SETUSER", *options.username,
                                   "reset",     "on",      ">" + *options.password};
  std::istringstream rule(RedisStorage::acl_rule(options.prefix));
  for (std::string word; rule >> word;) argv.push_back(word);
  CommandResult r = run_command(argv);
  if (r.exit_code != 0 || r.out.find("OK") == std::string::npos)
    throw std::runtime_error("ACL SETUSER failed: " + r.out + r.err);
  return options;
}

RedisServer& shared_redis() {
  static auto server = fixture_redis("redis", RedisServer::Config{});
  return *server;
}

const std::string& shared_redis_tls_cert() {
  static TempDir dir;
  static Certificate cert = make_certificate(dir, "redis");
  return cert.cert;
}

RedisServer& shared_redis_tls() {
  static RedisServer server(RedisServer::Config{
      .tls_cert = shared_redis_tls_cert(),
      .tls_key = shared_redis_tls_cert().substr(0, shared_redis_tls_cert().size() - 4) + ".key"});
  return server;
}

SentinelGroup::SentinelGroup(int sentinels, bool detached) {
  data_.push_back(std::make_unique<RedisServer>(RedisServer::Config{.detached = detached}));
  data_.push_back(std::make_unique<RedisServer>(
      RedisServer::Config{.detached = detached, .replica_of = data_[0]->port()}));
  for (int i = 0; i < sentinels; ++i) {
    sentinels_.push_back(std::make_unique<RedisServer>(RedisServer::Config{
        .detached = detached, .sentinel_of = data_[0]->port(), .quorum = sentinels / 2 + 1}));
  }
  // Ready when every sentinel knows the replica (or a failover finds none to promote)
  // and the other sentinels (or it cannot reach a quorum).
  auto count = [](int port, const char* what) {
    redisContext* c = redisConnect("127.0.0.1", port);
    size_t n = 0;
    if (c && !c->err) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "SENTINEL %s %s", what, kMaster));
      if (r && r->type == REDIS_REPLY_ARRAY) n = r->elements;
      if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return n;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  if (!replicas_in_sync(data_[0]->port(), 1,
                        std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())))
    throw std::runtime_error("the replica did not acknowledge writes in 20 s");
  for (auto& s : sentinels_) {
    while (count(s->port(), "replicas") != 1 ||
           count(s->port(), "sentinels") != sentinels_.size() - 1) {
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("the sentinels did not find the replica and each other in 20 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

SentinelGroup::SentinelGroup(const std::vector<std::pair<int, std::string>>& servers,
                             int sentinels) {
  for (size_t i = 0; i < servers.size(); ++i) {
    bool is_sentinel = i + static_cast<size_t>(sentinels) >= servers.size();
    auto server = std::make_unique<RedisServer>(
        RedisServer::Config{.sentinel_of = is_sentinel ? servers[0].first : 0}, servers[i].first,
        servers[i].second);
    (is_sentinel ? sentinels_ : data_).push_back(std::move(server));
  }
}

std::vector<RedisServer*> SentinelGroup::all() {
  std::vector<RedisServer*> out;
  for (auto& s : data_) out.push_back(s.get());
  for (auto& s : sentinels_) out.push_back(s.get());
  return out;
}

RedisOptions SentinelGroup::options(const std::string& prefix) const {
  RedisOptions o = data_[0]->options(prefix);
  o.host.clear();
  for (const auto& s : sentinels_) o.sentinels.push_back({"127.0.0.1", s->port()});
  o.sentinel_master = kMaster;
  return o;
}

int SentinelGroup::master_port() const {
  for (const auto& s : sentinels_) {
    redisContext* c = redisConnect("127.0.0.1", s->port());
    int port = 0;
    if (c && !c->err) {
      auto* r =
          static_cast<redisReply*>(redisCommand(c, "SENTINEL get-master-addr-by-name %s", kMaster));
      if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        port = std::atoi(r->element[1]->str);
      if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    if (port != 0) return port;
  }
  return 0;
}

SentinelGroup& shared_redis_sentinel() {
  static std::unique_ptr<SentinelGroup> group = [] {
    std::vector<std::pair<int, std::string>> found;
    for (const char* name : {"sentinel_master", "sentinel_replica", "sentinel"}) {
      if (auto s = test_server(name)) found.emplace_back(s->at("port").get<int>(), s->at("dir"));
    }
    return found.size() == 3 ? std::make_unique<SentinelGroup>(found, 1)
                             : std::make_unique<SentinelGroup>(1);
  }();
  return *group;
}

RedisCluster::RedisCluster(int masters, bool detached, int replicas) {
  std::vector<std::string> create = {"redis-cli", "--cluster", "create"};
  for (int i = 0; i < masters * (1 + replicas); ++i) {
    nodes_.push_back(
        std::make_unique<RedisServer>(RedisServer::Config{.detached = detached, .cluster = true}));
    create.push_back("127.0.0.1:" + std::to_string(nodes_.back()->port()));
  }
  create.insert(create.end(), {"--cluster-replicas", std::to_string(replicas), "--cluster-yes"});
  CommandResult made = run_command(create);
  if (made.exit_code != 0)
    throw std::runtime_error("redis-cli --cluster create failed: " + made.out + made.err);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (auto& n : nodes_) {
    while (run_command({"redis-cli", "-p", std::to_string(n->port()), "CLUSTER", "INFO"})
               .out.find("cluster_state:ok") == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("the cluster was not ok in 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

RedisCluster::RedisCluster(const std::vector<std::pair<int, std::string>>& nodes) {
  for (const auto& [port, dir] : nodes)
    nodes_.push_back(
        std::make_unique<RedisServer>(RedisServer::Config{.cluster = true}, port, dir));
}

RedisOptions RedisCluster::options(const std::string& prefix) const {
  RedisOptions o = nodes_[0]->options(prefix);
  o.host.clear();
  for (const auto& n : nodes_) o.cluster_nodes.push_back({"127.0.0.1", n->port()});
  return o;
}

long long RedisCluster::keys(size_t i) const {
  return std::atoll(
      run_command({"redis-cli", "-p", std::to_string(nodes_.at(i)->port()), "DBSIZE"}).out.c_str());
}

long long RedisCluster::commands_processed() const {
  long long sum = 0;
  for (const auto& node : nodes_) sum += node->commands_processed();
  return sum;
}

RedisCluster& shared_redis_cluster() {
  static std::unique_ptr<RedisCluster> cluster = [] {
    std::vector<std::pair<int, std::string>> found;
    for (const char* name : {"cluster0", "cluster1", "cluster2"}) {
      if (auto s = test_server(name)) found.emplace_back(s->at("port").get<int>(), s->at("dir"));
    }
    return found.size() == 3 ? std::make_unique<RedisCluster>(found)
                             : std::make_unique<RedisCluster>(3);
  }();
  return *cluster;
}

RedisServer& shared_redis_with_password() {
  static auto server = fixture_redis("redis_password", RedisServer::Config{.password = "s3cret"});
  return *server;
}

long long RedisServer::commands_processed() const {
  redis::Connection c(options("", 0));
  redis::Reply r = c.command({"INFO", "stats"});
  std::string info(r->str, r->len);
  return std::stoll(info.substr(info.find("total_commands_processed:") + 25));
}

}  // namespace slimta::testing
