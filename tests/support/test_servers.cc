// The servers every test process of one ctest run shares: one redis-server, one with a
// password, a master + replica + sentinel, a cluster of 3 masters, one moto_server
// (S3 + SQS), started once by the "test_servers" fixture instead of once per test
// process (moto alone takes a second or more to start).
//
//   test_servers start FILE   starts them detached and describes them in FILE (JSON)
//   test_servers stop FILE    stops them and removes their directories and FILE
//
// ctest gives every test SLIMTA_TEST_SERVERS=FILE (tests/CMakeLists.txt); shared_redis(),
// shared_redis_with_password() and shared_moto() then attach to these. Tests keep apart
// on them by key prefix, bucket prefix and queue name.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "support/moto_server.h"
#include "support/redis_server.h"
#include "support/test_util.h"

using slimta::testing::MotoServer;
using slimta::testing::RedisServer;

namespace {

int start(const std::string& file) {
  nlohmann::json all = nlohmann::json::object();
  // Written after each start, so that stop finds whatever did start.
  auto save = [&] { slimta::testing::write_file(file, all.dump(2) + "\n"); };
  save();
  if (!RedisServer::skipped()) {  // (the skip variables are local opt-outs CI never sets)
    RedisServer redis(RedisServer::Config{.password = "", .detached = true});
    all["redis"] = {{"port", redis.port()}, {"pid", redis.pid()}, {"dir", redis.dir()}};
    save();
    RedisServer secured(RedisServer::Config{.password = "s3cret", .detached = true});
    all["redis_password"] = {
        {"port", secured.port()}, {"pid", secured.pid()}, {"dir", secured.dir()}};
    save();
    slimta::testing::SentinelGroup group(1, /*detached=*/true);
    const char* names[] = {"sentinel_master", "sentinel_replica", "sentinel"};
    std::vector<RedisServer*> servers = group.all();
    for (size_t i = 0; i < servers.size(); ++i) {
      all[names[i]] = {
          {"port", servers[i]->port()}, {"pid", servers[i]->pid()}, {"dir", servers[i]->dir()}};
    }
    save();
    slimta::testing::RedisCluster cluster(3, /*detached=*/true);
    for (size_t i = 0; i < cluster.size(); ++i) {
      RedisServer& n = cluster.node(i);
      all["cluster" + std::to_string(i)] = {{"port", n.port()}, {"pid", n.pid()}, {"dir", n.dir()}};
    }
    save();
  }
  if (!MotoServer::skipped()) {
    MotoServer moto({}, /*detached=*/true);
    all["moto"] = {{"port", moto.port()}, {"pid", moto.pid()}};
    save();
  }
  std::cout << "test servers: " << all.dump() << "\n";
  return 0;
}

int stop(const std::string& file) {
  nlohmann::json all = nlohmann::json::parse(slimta::testing::read_file(file));
  for (const auto& [name, server] : all.items()) {
    ::kill(server.at("pid").get<pid_t>(), SIGKILL);
    if (server.contains("dir")) std::filesystem::remove_all(server.at("dir").get<std::string>());
  }
  std::filesystem::remove(file);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string command = argc == 3 ? argv[1] : "";
  try {
    if (command == "start") return start(argv[2]);
    if (command == "stop") return stop(argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "test_servers " << command << ": " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: test_servers start|stop FILE\n";
  return 2;
}
