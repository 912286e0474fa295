// Queue engine benchmark (memory storage, a relay that delivers at once). Prints one
// JSON object.
//
// * engine throughput: --messages messages through enqueue -> claim -> get -> relay
//   -> remove, (a) enqueued first then run_pending() on one thread, (b) start() with
//   2 workers while the main thread enqueues; each with logging off and with every
//   event line formatted (into a null sink).
// * reference, same run: the same storage calls made bare, without the engine (write,
//   claim, get, remove in a loop), so the engine's overhead shows as a ratio.
// * start-up: --load-messages messages stored, then Queue::load() (load() + schedule).
// * shaping: the same runs with the relay naming 20 destinations (the recipients'
//   domains) under the default limits, which do not bind, against shaping off; rounds
//   alternated, the median ratio reported.
//
// usage: queue_bench [--messages N] [--load-messages N] [--rounds N]
//                    [--only run_pending|threaded|load|shaping]
// (--only: one measurement, for profiling)
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "slimta/memory_storage.h"
#include "slimta/queue.h"

namespace {

using namespace slimta;
using Steady = slimta::bench::Clock;
using slimta::bench::seconds_since;

class NoopRelay : public Relay {
 public:
  std::vector<RecipientResult> attempt(const Envelope& env, uint32_t) override {
    return std::vector<RecipientResult>(env.recipients.size(), RecipientResult::delivered());
  }
};

// The same, naming each recipient's domain as its destination.
class DomainRelay : public NoopRelay {
 public:
  std::string destination(const std::string& recipient) const override {
    return recipient.substr(recipient.rfind('@') + 1);
  }
};

Envelope small_message(int i) {
  Envelope env;
  env.sender = "sender@example.com";
  env.recipients = {"rcpt" + std::to_string(i % 100) + "@d" + std::to_string(i % 20) +
                    ".example.org"};
  env.headers.add("From", "sender@example.com");
  env.headers.add("Subject", "message " + std::to_string(i));
  env.body = std::string(512, 'x');
  return env;
}

// Bare storage calls of one delivered message's life, without the engine.
double bare_storage_rate(const std::vector<Envelope>& envs) {
  MemoryStorage storage;
  auto start = Steady::now();
  for (const auto& env : envs) {
    std::string id = storage.write(env, 0);
    ClaimResult c = storage.claim(id, std::chrono::minutes(5));
    QueuedMessage m = storage.get(id);
    storage.remove(id, Fence{c.lease.token});
  }
  return envs.size() / seconds_since(start);
}

double run_pending_rate(const std::vector<Envelope>& envs, bool shaping = false) {
  MemoryStorage storage;
  DomainRelay relay;
  QueuePolicy policy;
  policy.shaping.enabled = shaping;
  Queue queue(storage, relay, policy);
  auto start = Steady::now();
  for (const auto& env : envs) queue.enqueue(env);
  queue.run_pending();
  double rate = envs.size() / seconds_since(start);
  if (!storage.load_all().empty()) throw std::runtime_error("messages left after run_pending");
  return rate;
}

double threaded_rate(const std::vector<Envelope>& envs, size_t workers, bool shaping = false) {
  MemoryStorage storage;
  DomainRelay relay;
  QueuePolicy policy;
  policy.workers = workers;
  policy.shaping.enabled = shaping;
  Queue queue(storage, relay, policy);
  queue.start();
  auto start = Steady::now();
  for (const auto& env : envs) queue.enqueue(env);
  while (queue.scheduled() != 0 || !storage.load_all().empty())
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  double rate = envs.size() / seconds_since(start);
  queue.stop();
  return rate;
}

// Shaping on against off, `rounds` times alternated: the median ratio of each run.
nlohmann::json shaping_ratios(const std::vector<Envelope>& envs, int rounds) {
  std::vector<double> pending, threaded;
  nlohmann::json out;
  for (int r = 0; r < rounds; ++r) {
    double off = run_pending_rate(envs, false), on = run_pending_rate(envs, true);
    pending.push_back(on / off);
    double toff = threaded_rate(envs, 2, false), ton = threaded_rate(envs, 2, true);
    threaded.push_back(ton / toff);
    out["rounds"].push_back({{"run_pending_off_per_s", off},
                             {"run_pending_on_per_s", on},
                             {"start_2_workers_off_per_s", toff},
                             {"start_2_workers_on_per_s", ton}});
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  out["run_pending_on_vs_off_ratio"] = median(pending);
  out["start_2_workers_on_vs_off_ratio"] = median(threaded);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  size_t messages = 100000, load_messages = 1000000;
  int rounds = 5;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--messages") messages = std::stoul(argv[i + 1]);
    if (a == "--load-messages") load_messages = std::stoul(argv[i + 1]);
    if (a == "--only") only = argv[i + 1];
    if (a == "--rounds") rounds = std::stoi(argv[i + 1]);
  }
  std::vector<Envelope> envs;
  for (size_t i = 0; i < messages; ++i) envs.push_back(small_message(static_cast<int>(i)));
  spdlog::set_level(spdlog::level::warn);
  if (only == "run_pending") {
    std::cout << nlohmann::json{{"run_pending_1_thread_per_s", run_pending_rate(envs)}} << "\n";
    return 0;
  }
  if (only == "threaded") {
    std::cout << nlohmann::json{{"start_2_workers_per_s", threaded_rate(envs, 2)}} << "\n";
    return 0;
  }
  if (only == "shaping") {
    std::cout << shaping_ratios(envs, rounds).dump(2) << "\n";
    return 0;
  }
  if (only == "load") messages = 0;

  nlohmann::json out;
  out["messages"] = messages;
  if (only != "load") {
    double bare = bare_storage_rate(envs);
    out["reference_bare_storage_calls_per_s"] = bare;
    out["run_pending_1_thread_per_s"] = run_pending_rate(envs);
    out["start_2_workers_per_s"] = threaded_rate(envs, 2);
    // Every event line formatted, into a sink that drops it: the cost of logging.
    auto previous = spdlog::default_logger();
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>()));
    spdlog::set_level(spdlog::level::info);
    out["run_pending_1_thread_logging_per_s"] = run_pending_rate(envs);
    out["start_2_workers_logging_per_s"] = threaded_rate(envs, 2);
    spdlog::set_default_logger(previous);
    spdlog::set_level(spdlog::level::warn);
    out["engine_vs_bare_ratio"] = out["run_pending_1_thread_per_s"].get<double>() / bare;
    out["shaping"] = shaping_ratios(envs, rounds);
  }

  {
    MemoryStorage storage;
    NoopRelay relay;
    Envelope env = small_message(0);
    for (size_t i = 0; i < load_messages; ++i) storage.write(env, static_cast<double>(i % 86400));
    Queue queue(storage, relay);
    auto start = Steady::now();
    size_t n = queue.load();
    out["load_messages"] = n;
    out["load_and_schedule_s"] = seconds_since(start);
    if (n != load_messages || queue.scheduled() != load_messages)
      throw std::runtime_error("load() scheduled the wrong number of messages");
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}
