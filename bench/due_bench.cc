// The due-time index against the whole schedule in memory (serve --full-schedule), side
// by side in one run on one redis-server 7.0 the bench starts: with N messages waiting
// (deferred by an hour), one `slimta-queue serve` node's RSS, the commands it costs
// Redis (at start, and per minute while idle, with its rescans every 300 s spread over
// the minutes), and the delay from a message's due time to its attempt at a sink
// (p50, p99 of `--due` messages coming due over 2 s). The same on S3+SQS through a
// moto_server it starts (its requests counted by kind), and on a Redis Cluster of 3
// masters with due-slots=64. Prints JSON.
//
//   due_bench [--sizes 10000,100000,1000000] [--cluster-sizes 100000] [--cloud-sizes 1000]
//             [--cloud-queues 1] [--due 200]
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench_util.h"
#include "slimta/cloud_storage.h"
#include "slimta/redis_storage.h"
#include "support/moto_server.h"
#include "support/redis_server.h"
#include "support/sink.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;

constexpr double kRescan = 300;  // serve's default --rescan
constexpr double kIdleSeconds = 20;

// One backend the bench runs on: how serve names it, how its service counts the
// requests it serves, and a storage object on it (another process, for the writes).
struct Backend {
  std::string url;
  std::function<double()> requests;
  std::function<std::unique_ptr<QueueStorage>()> open;
};

double moto_requests(const testing::MotoServer& moto) {
  double n = 0;
  for (const auto& [kind, count] : moto.request_counts()) n += static_cast<double>(count);
  return n;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// `n` messages deferred by an hour, written by 8 threads.
void fill(const Backend& backend, size_t n) {
  auto storage = backend.open();
  Envelope env = testing::sample_envelope(1, 64, 1);
  env.timestamp = system_clock().now();
  Timestamp later = system_clock().now() + 3600;
  std::atomic<size_t> next{0};
  bench::rate(8, 1e9, [&](int, size_t) {
    size_t i = next++;
    if (i >= n) return false;
    storage->write(env, later + static_cast<double>(i % 600));
    return true;
  });
}

nlohmann::json measure(const Backend& backend, bool full, size_t due_count) {
  testing::SmtpSink sink;
  std::vector<std::string> argv{
      SLIMTA_QUEUE_BIN, "serve",     "--listen",    "127.0.0.1:0",
      "--storage",      backend.url, "--smarthost", "127.0.0.1:" + std::to_string(sink.port()),
      "--workers",      "16"};
  if (full) argv.push_back("--full-schedule");
  double c0 = backend.requests();
  auto started = bench::Clock::now();
  testing::ChildProcess node(
      argv, "listening on",
      testing::Environment{{"AWS_ACCESS_KEY_ID", "test"}, {"AWS_SECRET_ACCESS_KEY", "test"}});
  double start_seconds = bench::seconds_since(started);
  std::this_thread::sleep_for(3s);
  double c1 = backend.requests();
  std::this_thread::sleep_for(std::chrono::duration<double>(kIdleSeconds));
  double c2 = backend.requests();
  size_t rss = testing::peak_rss(node.pid());

  // Messages coming due over 2 s, written by another process.
  std::map<std::string, Timestamp> due_at;
  {
    auto storage = backend.open();
    Timestamp start = system_clock().now() + 2;
    for (size_t i = 0; i < due_count; ++i) {
      Envelope env = testing::sample_envelope(1, 64, static_cast<unsigned>(i));
      env.headers.add("X-Test-Seq", std::to_string(i));
      env.timestamp = system_clock().now();
      Timestamp t = start + 2.0 * static_cast<double>(i) / static_cast<double>(due_count);
      storage->write(env, t);
      due_at[std::to_string(i)] = t;
    }
  }
  testing::eventually([&] { return sink.received().size() >= due_count; }, 60s);
  std::vector<double> delays;
  for (const auto& m : sink.received())
    delays.push_back(m["t"].get<double>() - due_at[m["seq"].get<std::string>()]);
  node.stop(SIGTERM);

  double idle_per_minute = (c2 - c1) / kIdleSeconds * 60;
  double at_start = c1 - c0;
  nlohmann::json out;
  out["rss_mib"] = static_cast<double>(rss) / 1048576.0;
  out["start_seconds"] = start_seconds;
  out["requests_first_3s"] = at_start;
  out["requests_per_minute_idle"] = idle_per_minute;
  // The full schedule rescans every 300 s, as costly as its start-up load.
  out["requests_per_minute_with_rescans"] = idle_per_minute + (full ? at_start * 60 / kRescan : 0);
  out["due_delivered"] = delays.size();
  out["due_to_attempt_p50_s"] = percentile(delays, 0.5);
  out["due_to_attempt_p99_s"] = percentile(delays, 0.99);
  return out;
}

// Both modes on `backend` after filling it with `n` waiting messages.
nlohmann::json compare(const Backend& backend, size_t n, size_t due_count) {
  nlohmann::json row;
  auto filling = bench::Clock::now();
  fill(backend, n);
  row["fill_seconds"] = bench::seconds_since(filling);
  row["full_schedule"] = measure(backend, true, due_count);
  row["due_index"] = measure(backend, false, due_count);
  return row;
}

int run(int argc, char** argv) {
  // moto's SQS scans every message it holds at each request: filling 10,000 took over 12
  // minutes (the Redis sizes take seconds), so the S3 default is 1,000.
  std::vector<size_t> sizes{10000, 100000, 1000000}, cluster_sizes{100000}, cloud_sizes{1000};
  size_t due_count = 200, cloud_queues = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--sizes" || flag == "--cluster-sizes" || flag == "--cloud-sizes") {
      auto& list = flag == "--sizes"           ? sizes
                   : flag == "--cluster-sizes" ? cluster_sizes
                                               : cloud_sizes;
      list.clear();
      std::stringstream in(value);
      for (std::string part; std::getline(in, part, ',');) list.push_back(std::stoul(part));
    } else if (flag == "--cloud-queues") {
      cloud_queues = std::stoul(value);
    } else if (flag == "--due") {
      due_count = std::stoul(value);
    } else {
      std::cerr << "due_bench: unknown option " << flag << "\n";
      return 2;
    }
  }
  nlohmann::json out;
  out["setup"] =
      "one serve node, 16 workers; redis-server 7.0 (loopback, no persistence; the cluster: "
      "3 masters, due-slots=64), "
      "moto_server (S3 + SQS); requests: Redis commands (scripts' own included), "
      "S3 and SQS HTTP requests";
  {
    testing::RedisServer server;
    for (size_t n : sizes) {
      std::string prefix = "b" + std::to_string(n) + ":";
      Backend redis{
          "redis://127.0.0.1:" + std::to_string(server.port()) + "/0?prefix=" + prefix,
          [&] { return static_cast<double>(server.commands_processed()); },
          [&, prefix] { return std::make_unique<RedisStorage>(server.options(prefix, 0)); }};
      out["redis_waiting_" + std::to_string(n)] = compare(redis, n, due_count);
      std::cerr << "due_bench: redis " << n << " done\n";
    }
  }
  if (!cluster_sizes.empty()) {
    testing::RedisCluster cluster(3);
    std::string nodes;
    for (size_t i = 0; i < cluster.size(); ++i)
      nodes += (i ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(cluster.node(i).port());
    for (size_t n : cluster_sizes) {
      std::string prefix = "c" + std::to_string(n) + ":";
      RedisOptions o = cluster.options(prefix);
      o.due_slots = 64;
      Backend redis_cluster{"redis+cluster://" + nodes + "?due-slots=64&prefix=" + prefix,
                            [&] { return static_cast<double>(cluster.commands_processed()); },
                            [o] { return std::make_unique<RedisStorage>(o); }};
      out["redis_cluster_waiting_" + std::to_string(n)] = compare(redis_cluster, n, due_count);
      std::cerr << "due_bench: redis cluster " << n << " done\n";
    }
  }
  {
    testing::MotoServer moto;
    moto.create_bucket("due");
    for (size_t n : cloud_sizes) {
      std::string prefix = "b" + std::to_string(n) + "/";
      std::vector<std::string> queues;
      for (size_t q = 0; q < cloud_queues; ++q)
        queues.push_back(moto.create_queue("due" + std::to_string(n) + "q" + std::to_string(q)));
      std::string list;
      for (const auto& q : queues) list += (list.empty() ? "" : ",") + q;
      Backend s3{
          "s3://due/" + prefix + "?region=us-east-1&endpoint=" + moto.endpoint() + "&sqs=" + list,
          [&] { return moto_requests(moto); },
          [&, prefix, queues] {
            std::vector<SimpleQueueService> sqs;
            for (const auto& q : queues) sqs.emplace_back(q, 30, 0.1, moto.aws());
            return std::make_unique<CloudStorage>(
                SimpleStorageService("due", 30, prefix, moto.aws()), std::move(sqs));
          }};
      out["s3_sqs_waiting_" + std::to_string(n)] = compare(s3, n, due_count);
      std::cerr << "due_bench: s3+sqs " << n << " done\n";
    }
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace slimta

int main(int argc, char** argv) {
  try {
    return slimta::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "due_bench: " << e.what() << "\n";
    return 1;
  }
}
