// RedisStorage benchmark against a redis-server it starts itself (loopback, no
// persistence, the same server for every figure). Prints one JSON object.
//
// References, measured in the same run: a raw hiredis HSET loop of a value as large as
// the stored record, with 1 connection and with 32 connections (one per thread).
// Then RedisStorage write/get/increment_attempts/remove with 1 and 32 threads, and
// load() of --load-messages stored messages with the growth of resident memory.
//
// usage: redis_bench [--seconds S] [--load-messages N] [--size BYTES]
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/record.h"
#include "redis/connection.h"
#include "redis/redis_server.h"
#include "slimta/redis_storage.h"

namespace {

using Clock = std::chrono::steady_clock;
using slimta::Envelope;
using slimta::RedisOptions;
using slimta::RedisStorage;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// Calls op(thread, i) from `threads` threads for `seconds`; returns calls per second.
template <typename Op>
double rate(int threads, double seconds, Op op) {
  std::atomic<size_t> n{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      size_t i = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        if (!op(t, i++)) break;
        n.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  while (seconds_since(start) < seconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    bool all_done = true;
    for (auto& w : workers) all_done = all_done && !w.joinable();
    if (all_done) break;
  }
  stop = true;
  for (auto& w : workers) w.join();
  return n / seconds_since(start);
}

Envelope make_envelope(size_t size) {
  Envelope env;
  env.sender = "sender@example.com";
  env.recipients = {"rcpt@example.org"};
  env.headers.add("From", "sender@example.com");
  env.headers.add("Subject", "benchmark");
  env.body.assign(size, 'b');
  return env;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  size_t load_messages = 1000000;
  size_t size = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    if (arg == "--seconds")
      seconds = std::stod(argv[i + 1]);
    else if (arg == "--load-messages")
      load_messages = std::stoul(argv[i + 1]);
    else if (arg == "--size")
      size = std::stoul(argv[i + 1]);
    else {
      std::cerr << "unknown option " << arg << "\n";
      return 2;
    }
  }
  nlohmann::json out;
  try {
    slimta::testing::RedisServer server;
    Envelope env = make_envelope(size);
    std::string value = slimta::record::encode(slimta::record::initial_metadata(env, 0), &env);
    out["record_bytes"] = value.size();

    for (int threads : {1, 32}) {
      std::vector<std::unique_ptr<slimta::redis::Connection>> conns;
      for (int t = 0; t < threads; ++t) {
        conns.push_back(std::make_unique<slimta::redis::Connection>(server.options("")));
      }
      double r = rate(threads, seconds, [&](int t, size_t i) {
        std::string key = "raw:" + std::to_string(t) + ":" + std::to_string(i);
        conns[t]->command({"HSET", key, "record", value});
        return true;
      });
      out["raw_hset_per_s"][std::to_string(threads) + "_connections"] = r;
    }
    slimta::redis::Connection(server.options("")).command({"FLUSHALL"});

    for (int threads : {1, 32}) {
      RedisStorage storage(server.options("bench:"));
      std::vector<std::vector<std::string>> ids(threads);
      std::string key = std::to_string(threads) + "_threads";
      out["write_per_s"][key] = rate(threads, seconds, [&](int t, size_t) {
        ids[t].push_back(storage.write(env, 1));
        return true;
      });
      out["get_per_s"][key] = rate(threads, seconds, [&](int t, size_t i) {
        storage.get(ids[t][i % ids[t].size()]);
        return true;
      });
      out["increment_attempts_per_s"][key] = rate(threads, seconds, [&](int t, size_t i) {
        storage.increment_attempts(ids[t][i % ids[t].size()]);
        return true;
      });
      out["remove_per_s"][key] = rate(threads, seconds, [&](int t, size_t i) {
        if (i >= ids[t].size()) return false;
        storage.remove(ids[t][i]);
        return true;
      });
    }
    auto& raw = out["raw_hset_per_s"];
    for (const char* op : {"write", "get", "increment_attempts", "remove"}) {
      out["ratio_vs_raw_hset"][std::string(op) + "_1_thread"] =
          out[std::string(op) + "_per_s"]["1_threads"].get<double>() /
          raw["1_connections"].get<double>();
      out["ratio_vs_raw_hset"][std::string(op) + "_32_threads"] =
          out[std::string(op) + "_per_s"]["32_threads"].get<double>() /
          raw["32_connections"].get<double>();
    }

    // load(): fill the server with message hashes through a pipeline, then stream them.
    slimta::redis::Connection(server.options("")).command({"FLUSHALL"});
    Envelope small = make_envelope(100);
    std::string small_record =
        slimta::record::encode(slimta::record::initial_metadata(small, 0), &small);
    slimta::redis::Connection filler(server.options(""));
    auto fill_start = Clock::now();
    for (size_t done = 0; done < load_messages;) {
      size_t batch = std::min<size_t>(1000, load_messages - done);
      for (size_t i = 0; i < batch; ++i) {
        std::string k = "load:" + slimta::new_message_id();
        filler.append({"HSET", k, "record", small_record, "timestamp", std::to_string(done + i),
                       "attempts", "0", "delivered", "", "recipients", "1"});
      }
      for (size_t i = 0; i < batch; ++i) filler.read_reply();
      done += batch;
    }
    out["load_fill_seconds"] = seconds_since(fill_start);
    RedisStorage storage(server.options("load:"));
    long rss_before = rss_kib(), rss_peak = rss_before;
    auto load_start = Clock::now();
    auto stream = storage.load();
    size_t n = 0;
    while (stream->next()) {
      if (++n % 10000 == 0) rss_peak = std::max(rss_peak, rss_kib());
    }
    out["load_seconds"] = seconds_since(load_start);
    out["load_messages"] = n;
    out["load_rss_growth_kib"] = rss_peak - rss_before;
    if (n != load_messages) throw std::runtime_error("load returned " + std::to_string(n));
  } catch (const std::exception& e) {
    std::cerr << "redis_bench: " << e.what() << "\n";
    return 1;
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}
