// What a message costs in storage requests, counted through the real queue engine, for
// the cost model of doc/costs.md. For each backend, N messages are written, attempted
// once and deferred, left waiting (what keeping the schedule costs: one rescan, or the
// due index's polls and one repair pass), then attempted again and delivered. Counted
// per phase: the storage calls the engine makes (TimedStorage's counts), and what the
// service saw: Redis commands (INFO commandstats, scripts' own calls included) or S3 and
// SQS HTTP requests by kind. Prints JSON.
//
//   cost_bench [--messages 10000] [--cloud-messages 1000]
#include <spdlog/spdlog.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "redis/connection.h"
#include "slimta/cloud_storage.h"
#include "slimta/metrics.h"
#include "slimta/queue.h"
#include "slimta/redis_storage.h"
#include "slimta/timed_storage.h"
#include "support/moto_server.h"
#include "support/redis_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using Counts = std::map<std::string, double>;

// Defers every recipient while `defer`, delivers them otherwise.
class SwitchRelay : public Relay {
 public:
  bool defer = true;
  std::vector<RecipientResult> attempt(const Envelope& env, uint32_t) override {
    return std::vector<RecipientResult>(
        env.recipients.size(),
        defer ? RecipientResult::transient("451 4.3.0 later") : RecipientResult::delivered());
  }
};

// What one backend's service counted so far.
using ServiceCounts = std::function<Counts()>;

Counts redis_counts(testing::RedisServer& server) {
  redis::Connection c(server.options("", 0));
  redis::Reply r = c.command({"INFO", "commandstats"});
  std::string info(r->str, r->len);
  Counts out;
  std::istringstream in(info);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("cmdstat_")) continue;
    std::string name = line.substr(8, line.find(':') - 8);
    size_t at = line.find("calls=");
    out[name] = std::stod(line.substr(at + 6));
  }
  return out;
}

// What `storage` asked of S3 and SQS so far, by kind.
ServiceCounts cloud_counts(const CloudStorage& storage) {
  return [&storage] {
    Counts out;
    for (const auto& [k, v] : storage.request_counts()) out[k] = static_cast<double>(v);
    return out;
  };
}

Counts minus(Counts after, const Counts& before) {
  for (const auto& [k, v] : before) after[k] -= v;
  std::erase_if(after, [](const auto& kv) { return kv.second == 0; });
  return after;
}

double total(const Counts& c) {
  double n = 0;
  for (const auto& [k, v] : c) n += v;
  return n;
}

// The phases of N messages' lives on `storage`, counted. `real_time`: on the real clock,
// with a 180 s backoff slept through (SQS's delays follow the real clock), else on a
// ManualClock moved past the default backoff.
nlohmann::json count_lifecycle(QueueStorage& inner, size_t n, bool use_index,
                               const ServiceCounts& service, bool real_time = false) {
  metrics::Registry registry;
  TimedStorage storage(inner, registry);
  auto calls = [&] {
    Counts out;
    for (const auto& [op, n] : storage.call_counts()) out[op] = static_cast<double>(n);
    return out;
  };
  ManualClock manual(system_clock().now());
  const Clock& clock = real_time ? system_clock() : manual;
  SwitchRelay relay;
  QueuePolicy policy;
  policy.use_due_index = use_index;
  // Longer than a phase takes on moto (~300 requests a second), so that no message comes
  // due again within the phase that deferred it.
  if (real_time) policy.initial_backoff = 180;
  policy.reporting_mta = "bench.example";
  Queue queue(storage, relay, policy, clock);
  nlohmann::json out;
  auto phase = [&](const std::string& name, const std::function<void()>& fn) {
    Counts c0 = calls(), s0 = service();
    fn();
    Counts c = minus(calls(), c0), s = minus(service(), s0);
    out[name] = {{"storage_calls", c},
                 {"storage_calls_per_message", total(c) / static_cast<double>(n)},
                 {"service_requests", s},
                 {"service_requests_per_message", total(s) / static_cast<double>(n)}};
  };
  Envelope env = testing::sample_envelope(1, 1024, 1);
  env.timestamp = clock.now();
  phase("accept", [&] {
    for (size_t i = 0; i < n; ++i) storage.write(env, clock.now());
  });
  phase("first_attempt_deferred", [&] {
    if (!use_index) queue.load();
    queue.run_pending();
  });
  // Waiting: what keeping the schedule costs, per rescan (full schedule) or per poll
  // and per repair pass (due index).
  if (use_index) {
    phase("waiting_one_poll", [&] { queue.run_pending(); });
    phase("waiting_one_repair_pass", [&] {
      std::string cursor;
      do storage.repair_due(cursor);
      while (!cursor.empty());
    });
  } else {
    phase("waiting_one_rescan", [&] { queue.load(); });
  }
  if (real_time) {
    std::this_thread::sleep_for(std::chrono::duration<double>(policy.backoff(1) + 0.5));
  } else {
    manual.advance(policy.backoff(1));
  }
  relay.defer = false;
  phase("second_attempt_delivered", [&] {
    if (!use_index) queue.load();
    queue.run_pending();
  });
  out["messages"] = n;
  return out;
}

int run(int argc, char** argv) {
  size_t n = 10000, cloud_n = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--messages") {
      n = std::stoul(argv[i + 1]);
    } else if (flag == "--cloud-messages") {
      cloud_n = std::stoul(argv[i + 1]);
    } else {
      std::cerr << "cost_bench: unknown option " << flag << "\n";
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  nlohmann::json out;
  {
    testing::RedisServer server;
    ServiceCounts service = [&] { return redis_counts(server); };
    for (bool index : {true, false}) {
      std::string prefix = index ? "idx:" : "full:";
      RedisStorage storage(server.options(prefix, 0));
      out[index ? "redis_due_index" : "redis_full_schedule"] =
          count_lifecycle(storage, n, index, service);
    }
    // What the index costs in Redis memory, per message.
    RedisStorage storage(server.options("mem:", 0));
    Envelope env = testing::sample_envelope(1, 1024, 1);
    for (size_t i = 0; i < n; ++i) storage.write(env, system_clock().now() + 3600);
    redis::Connection c(server.options("", 0));
    redis::Reply index = c.command({"MEMORY", "USAGE", "mem:.due", "SAMPLES", "0"});
    out["redis_index_bytes_per_message"] = static_cast<double>(index->integer) / n;
  }
  {
    testing::MotoServer server;
    server.create_bucket("cost");
    std::string queue = server.create_queue("cost");
    CloudStorage storage(SimpleStorageService("cost", 30, "c/", server.aws()),
                         SimpleQueueService(queue, 30, 0.1, server.aws()));
    out["s3_sqs_full_schedule"] = count_lifecycle(storage, cloud_n, false, cloud_counts(storage));
    std::string indexed_queue = server.create_queue("costidx");
    CloudStorage indexed(SimpleStorageService("cost", 30, "i/", server.aws()),
                         SimpleQueueService(indexed_queue, 30, 0.1, server.aws()));
    out["s3_sqs_due_index"] =
        count_lifecycle(indexed, cloud_n, true, cloud_counts(indexed), /*real_time=*/true);
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
    std::cerr << "cost_bench: " << e.what() << "\n";
    return 1;
  }
}
