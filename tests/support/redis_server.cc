#include "support/redis_server.h"

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
#include <memory>
#include <nlohmann/json.hpp>
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
    port_ = free_port();
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
  std::vector<std::string> args = {"redis-server",
                                   "--port",
                                   std::to_string(port_),
                                   "--bind",
                                   "127.0.0.1",
                                   "--save",
                                   "",
                                   "--dir",
                                   dir_,
                                   "--daemonize",
                                   "no",
                                   "--logfile",
                                   dir_ + "/redis.log",
                                   "--databases",
                                   "16",
                                   "--unixsocket",
                                   socket_path(),
                                   "--unixsocketperm",
                                   "700"};
  if (config_.appendonly) {
    args.insert(args.end(), {"--appendonly", "yes", "--appendfsync", "always"});
  } else {
    args.insert(args.end(), {"--appendonly", "no"});
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

RedisServer& shared_redis_with_password() {
  static auto server = fixture_redis("redis_password", RedisServer::Config{.password = "s3cret"});
  return *server;
}

}  // namespace slimta::testing
