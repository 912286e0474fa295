// serve --http with a large queue on Redis: how long /metrics and /readyz take while
// the background scan for the queue gauges walks every message. The reference is
// /healthz (no work at all), timed in the same run.
//   [SLIMTA_QUEUE_BIN=PATH] http_bench [--messages N] [--requests N]   (prints JSON)
#include <httplib.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "slimta/redis_storage.h"
#include "support/redis_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using bench::Clock;
using bench::seconds_since;

nlohmann::json time_requests(int port, const std::string& path, int requests) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  std::vector<double> ms;
  for (int i = 0; i < requests; ++i) {
    auto start = Clock::now();
    auto res = client.Get(path.c_str());
    if (!res || res->status != 200) throw std::runtime_error(path + " failed");
    ms.push_back(seconds_since(start) * 1000);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::sort(ms.begin(), ms.end());
  return {{"median_ms", ms[ms.size() / 2]}, {"max_ms", ms.back()}};
}

int run(int argc, char** argv) {
  size_t messages = 1000000;
  int requests = 40;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--messages") {
      messages = std::stoul(v);
    } else if (a == "--requests") {
      requests = std::stoi(v);
    } else {
      throw std::runtime_error("unknown option " + a);
    }
  }
  testing::RedisServer redis;
  testing::TempDir dir;
  // Small messages, due in a day: serve keeps them and the gauges count them.
  auto fill_start = Clock::now();
  const int threads = 8;
  std::vector<std::thread> fillers;
  for (int t = 0; t < threads; ++t) {
    fillers.emplace_back([&, t] {
      RedisStorage storage(redis.options("bench:"));
      Envelope env;
      env.sender = "a@example.com";
      env.recipients = {"b@example.org"};
      env.parse("Subject: x\r\n\r\nhello\r\n");
      env.timestamp = static_cast<double>(::time(nullptr));
      for (size_t i = t; i < messages; i += threads) storage.write(env, env.timestamp + 86400);
    });
  }
  for (auto& f : fillers) f.join();
  double fill_seconds = seconds_since(fill_start);

  int http = testing::free_port();
  testing::ChildProcess serve(
      {bench::queue_bin(), "serve", "--listen", "127.0.0.1:0", "--http",
       "127.0.0.1:" + std::to_string(http), "--http-token-file", testing::write_http_token(dir),
       "--storage", "redis://127.0.0.1:" + std::to_string(redis.port()) + "/0?prefix=bench:",
       "--smarthost", "127.0.0.1:9", "--user", "root", "--rescan", "0"},
      "listening on");
  nlohmann::json out{{"messages", messages}, {"fill_seconds", fill_seconds}};
  out["healthz"] = time_requests(http, "/healthz", requests);
  out["metrics"] = time_requests(http, "/metrics", requests);
  out["readyz"] = time_requests(http, "/readyz", requests);
  // Once the background scan has counted every message: its time, and /metrics again.
  httplib::Client client("127.0.0.1", http);
  client.set_default_headers({{"Authorization", std::string("Bearer ") + testing::kHttpToken}});
  auto scan_start = Clock::now();
  nlohmann::json info;
  while (seconds_since(scan_start) < 900) {
    auto res = client.Get("/api/v1/info");
    if (res && res->status == 200) {
      info = nlohmann::json::parse(res->body);
      if (info["messages"] == messages) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  out["gauges"] = info;
  out["metrics_after_scan"] = time_requests(http, "/metrics", requests);
  for (const char* path : {"metrics", "readyz"}) {
    out[std::string(path) + "_vs_healthz"] =
        out[path]["median_ms"].get<double>() / out["healthz"]["median_ms"].get<double>();
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}

}  // namespace
}  // namespace slimta

int main(int argc, char** argv) {
  try {
    return slimta::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "http_bench: " << e.what() << "\n";
    return 1;
  }
}
