// serve --http's queue gauges on a long queue: they count it with stats() (on Redis a
// request a minute, on S3 a LIST of the marks per 1,000 messages a minute), so the
// storage requests of a node with --http stay within 1.1x of one without (before
// stats(), the gauges read every message every few seconds: 10,000 reads a scan), and
// they count it right.
#include <gtest/gtest.h>
#include <httplib.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "slimta/cloud_storage.h"
#include "slimta/redis_storage.h"
#include "support/moto_server.h"
#include "support/redis_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;

std::unique_ptr<ChildProcess> start_serve(const std::string& url, const std::string& token_file,
                                          testing::Environment env = {}) {
  std::vector<std::string> argv{
      SLIMTA_QUEUE_BIN, "serve", "--listen",    "127.0.0.1:0",
      "--storage",      url,     "--smarthost", testing::closed_port().address()};
  if (!token_file.empty())
    argv.insert(argv.end(), {"--http", "127.0.0.1:0", "--http-token-file", token_file});
  return std::make_unique<ChildProcess>(argv, "listening on", env);
}

// Scrapes /metrics and /api/v1/info of the node on `port` every second for `window`;
// returns how many scrapes answered and the last info.
std::pair<int, nlohmann::json> scrape(int port, std::chrono::seconds window) {
  nlohmann::json info;
  int scrapes = 0;
  httplib::Client client("127.0.0.1", port);
  client.set_default_headers({{"Authorization", std::string("Bearer ") + testing::kHttpToken}});
  for (auto until = std::chrono::steady_clock::now() + window;
       std::chrono::steady_clock::now() < until;) {
    if (auto res = client.Get("/metrics"); res && res->status == 200) ++scrapes;
    if (auto res = client.Get("/api/v1/info"); res && res->status == 200)
      info = nlohmann::json::parse(res->body);
    std::this_thread::sleep_for(1s);
  }
  return {scrapes, info};
}

// The scrapes answered, and the last info counted what fill() wrote.
void expect_counted(int scrapes, const nlohmann::json& info, int waiting, int held) {
  EXPECT_GT(scrapes, 40);
  EXPECT_EQ(info["messages"], waiting) << info;
  EXPECT_EQ(info["held"], held) << info;
  EXPECT_GE(info["oldest_message_age_seconds"].get<double>(), 600) << info;
}

// `count` messages deferred by an hour (so no node attempts them), `held` of them held,
// oldest received 600 s ago; written by four threads, each on its own `open()`.
void fill(const std::function<std::unique_ptr<QueueStorage>()>& open, int count, int held) {
  Timestamp later = system_clock().now() + 3600;
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      std::unique_ptr<QueueStorage> storage = open();
      Envelope env = testing::sample_envelope(1, 64, static_cast<unsigned>(t));
      env.timestamp = system_clock().now() - 600 - t;
      for (int i = t; i < count; i += 4) {
        std::string id = storage->write(env, later + i % 600);
        if (i < held) storage->hold(id, "checking", system_clock().now());
      }
    });
  }
  for (auto& w : writers) w.join();
}

// Two nodes side by side, each on its own redis-server holding the same queue, one with
// --http: their commands are counted over the same minute, so that the repair sweep's
// steps (every 5 s on each) fall alike in both counts.
TEST(GaugesCostTest, OnRedisTheGaugesReadNoMessage) {
  if (testing::RedisServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  const int kWaiting = 10000, kHeld = 7;
  testing::RedisServer plain_server, http_server;  // their own: no other test's commands
  std::string prefix = "gauges" + random_hex(4) + ":";
  auto url = [&](testing::RedisServer& server) {
    return "redis://127.0.0.1:" + std::to_string(server.port()) + "/0?prefix=" + prefix;
  };
  for (auto* server : {&plain_server, &http_server})
    fill([&] { return std::make_unique<RedisStorage>(server->options(prefix, 0)); }, kWaiting,
         kHeld);

  testing::TempDir dir;
  auto plain = start_serve(url(plain_server), "");
  auto http = start_serve(url(http_server), testing::write_http_token(dir));
  int port = testing::http_port(http->output());
  std::this_thread::sleep_for(5s);
  // A minute: the --http node counts with stats() once in it (it counts once a minute).
  const auto kWindow = 60s;
  long long plain_before = plain_server.commands_processed();
  long long http_before = http_server.commands_processed();
  auto [scrapes, info] = scrape(port, kWindow);
  double seconds = std::chrono::duration<double>(kWindow).count();
  double without =
      static_cast<double>(plain_server.commands_processed() - plain_before - 1) / seconds;
  double with = static_cast<double>(http_server.commands_processed() - http_before - 1) / seconds;
  plain->stop(SIGTERM);
  http->stop(SIGTERM);
  std::printf(
      "[ report ] redis, %d messages waiting: a node's Redis commands/s %.2f without --http, "
      "%.2f with (%d scrapes of /metrics and /api/v1/info in the same 60 s): %.3fx\n",
      kWaiting, without, with, scrapes, with / without);
  expect_counted(scrapes, info, kWaiting, kHeld);
  // Within 1.1x, give or take one tick of either node's timers: both poll the index
  // every second and step the repair sweep (~4 commands) every 5 s, and on a loaded
  // machine one node may fit a step more in the same minute (0.07 commands/s). A read
  // per message would be 10,000 commands a scan.
  EXPECT_LE(with, 1.1 * without + 0.1) << "the gauges should not read the queue message by message";
}

// The requests `moto` has served, all kinds together.
uint64_t requests(const testing::MotoServer& moto) {
  uint64_t n = 0;
  for (const auto& [kind, count] : moto.request_counts()) n += count;
  return n;
}

// The same on S3 + SQS, 1,000 messages waiting on each of two moto servers: a node's
// gauges count the marks beside the messages (a LIST a minute) and read none of them.
TEST(GaugesCostTest, OnS3TheGaugesReadNoMessage) {
  if (testing::MotoServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
  const int kWaiting = 1000, kHeld = 7;
  testing::MotoServer plain_moto, http_moto;  // their own: no other test's requests
  auto fill_s3 = [&](testing::MotoServer& moto) {
    moto.create_bucket("gauges");
    std::string queue = moto.create_queue("gauges");
    fill(
        [&] {
          return std::make_unique<CloudStorage>(
              SimpleStorageService("gauges", 30, "q/", moto.aws()),
              SimpleQueueService(queue, 30, 0.1, moto.aws()));
        },
        kWaiting, kHeld);
    return "s3://gauges/q/?region=us-east-1&endpoint=" + moto.endpoint() + "&sqs=" + queue;
  };
  std::string plain_url = fill_s3(plain_moto), http_url = fill_s3(http_moto);
  testing::Environment aws{{"AWS_ACCESS_KEY_ID", "test"}, {"AWS_SECRET_ACCESS_KEY", "test"}};
  testing::TempDir dir;
  auto plain = start_serve(plain_url, "", aws);
  auto http = start_serve(http_url, testing::write_http_token(dir), aws);
  int port = testing::http_port(http->output());
  std::this_thread::sleep_for(5s);
  const auto kWindow = 60s;
  uint64_t plain_before = requests(plain_moto), http_before = requests(http_moto);
  auto [scrapes, info] = scrape(port, kWindow);
  double seconds = std::chrono::duration<double>(kWindow).count();
  double without = static_cast<double>(requests(plain_moto) - plain_before) / seconds;
  double with = static_cast<double>(requests(http_moto) - http_before) / seconds;
  auto gets = http_moto.request_counts()["s3 GET"];
  plain->stop(SIGTERM);
  http->stop(SIGTERM);
  std::printf(
      "[ report ] s3, %d messages waiting: a node's S3 and SQS requests/s %.2f without "
      "--http, %.2f with (%d scrapes of /metrics and /api/v1/info in the same 60 s): %.3fx\n",
      kWaiting, without, with, scrapes, with / without);
  expect_counted(scrapes, info, kWaiting, kHeld);
  // The held messages are read by each sweep pass of either node; no other GET.
  EXPECT_LT(gets, 1000u) << "the gauges should not read the queue message by message";
  // Within 1.1x, give or take one tick of either node's timers (both long-poll SQS and
  // step the repair sweep, two LISTs and the held messages' reads, every 5 s).
  EXPECT_LE(with, 1.1 * without + 0.2) << "the gauges should not read the queue message by message";
}

}  // namespace
}  // namespace slimta
