// serve --http's queue gauges on a long Redis queue: they count it with stats() (a
// request a minute), so the storage requests of a node with --http stay within 1.1x of
// one without (before stats(), the gauges read every message every few seconds: 10,000
// reads a scan), and they count it right.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "slimta/redis_storage.h"
#include "support/redis_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;

std::unique_ptr<ChildProcess> start_serve(const std::string& url, bool http) {
  std::vector<std::string> argv{
      SLIMTA_QUEUE_BIN, "serve", "--listen",    "127.0.0.1:0",
      "--storage",      url,     "--smarthost", testing::closed_port().address()};
  if (http) argv.insert(argv.end(), {"--http", "127.0.0.1:0"});
  return std::make_unique<ChildProcess>(argv, "listening on");
}

TEST(GaugesCostTest, OnRedisTheGaugesReadNoMessage) {
  if (testing::RedisServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  testing::RedisServer server;  // its own: other tests' commands would be counted
  std::string prefix = "gauges" + random_hex(4) + ":";
  std::string url = "redis://127.0.0.1:" + std::to_string(server.port()) + "/0?prefix=" + prefix;

  // 10,000 messages deferred by an hour (so no node attempts them), 7 of them held;
  // written by four threads.
  const int kWaiting = 10000, kHeld = 7;
  Timestamp later = system_clock().now() + 3600;
  std::vector<std::thread> writers;
  std::vector<std::string> held;
  std::mutex mu;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      RedisStorage storage(server.options(prefix, 0));
      Envelope env = testing::sample_envelope(1, 64, static_cast<unsigned>(t));
      env.timestamp = system_clock().now() - 600 - t;
      for (int i = t; i < kWaiting; i += 4) {
        std::string id = storage.write(env, later + i % 600);
        if (i < kHeld) {
          storage.hold(id, "checking", system_clock().now());
          std::lock_guard lock(mu);
          held.push_back(id);
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  ASSERT_EQ(held.size(), static_cast<size_t>(kHeld));

  // Redis commands per second of one node over `window`, after it settled.
  const auto kWindow = 30s;
  auto rate = [&](bool http, const std::function<void(int)>& meanwhile) {
    auto node = start_serve(url, http);
    int port = http ? testing::http_port(node->output()) : -1;
    std::this_thread::sleep_for(5s);
    long long before = server.commands_processed();
    auto until = std::chrono::steady_clock::now() + kWindow;
    while (std::chrono::steady_clock::now() < until) {
      meanwhile(port);
      std::this_thread::sleep_for(1s);
    }
    double per_second = static_cast<double>(server.commands_processed() - before - 1) /
                        std::chrono::duration<double>(kWindow).count();
    node->stop(SIGTERM);
    return per_second;
  };
  double without = rate(false, [](int) {});
  nlohmann::json info;
  int scrapes = 0;
  double with = rate(true, [&](int port) {
    httplib::Client client("127.0.0.1", port);
    if (auto res = client.Get("/metrics"); res && res->status == 200) ++scrapes;
    if (auto res = client.Get("/api/v1/info"); res && res->status == 200)
      info = nlohmann::json::parse(res->body);
  });
  std::printf(
      "[ report ] redis, %d messages waiting: one node's Redis commands/s %.2f without --http, "
      "%.2f with (%d scrapes of /metrics and /api/v1/info): %.3fx\n",
      kWaiting, without, with, scrapes, with / without);
  EXPECT_GT(scrapes, 20);
  EXPECT_EQ(info["messages"], kWaiting) << info;
  EXPECT_EQ(info["held"], kHeld) << info;
  EXPECT_GE(info["oldest_message_age_seconds"].get<double>(), 600) << info;
  EXPECT_LE(with, 1.1 * without) << "the gauges should not read the queue message by message";
}

}  // namespace
}  // namespace slimta
