// RedisStorage benchmark against a redis-server it starts itself (loopback, no
// persistence, the same server for every figure). Prints one JSON object.
//
// References, measured in the same run: a raw hiredis HSET loop of a value as large as
// the stored record, with 1 connection and with 32 connections (one per thread).
// Then RedisStorage write/get/increment_attempts/remove with 1 and 32 threads, and
// load() of --load-messages stored messages with the growth of resident memory.
//
// --only tls: instead, the same server's plain and TLS ports (rediss://, certificate
// verified), write/get/increment_attempts at 1 thread, alternated per round, and the
// median ratio TLS / plain of each.
//
// --only ack: a master and its replica; write and increment_attempts without and with
// min-replicas-ack=1 (a WAIT after each), at 1 and 16 threads, alternated per round, and
// the median ratio with / without.
//
// --only cluster: one redis-server against a cluster of 3 masters (redis-cli --cluster
// create), write and get at 1 and 32 threads, alternated per round; the ratio cluster /
// single and how the writes spread over the masters (keys and commands per node).
//
// --only cluster-index: on a cluster of 3 masters, without the due-time index and with
// due-slots=64, write and get at 1 and 32 threads, alternated per round; the ratio.
//
// usage: redis_bench [--seconds S] [--rounds R] [--load-messages N] [--size BYTES]
//                    [--only tls|ack|cluster|cluster-index]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "core/record.h"
#include "redis/connection.h"
#include "slimta/redis_storage.h"
#include "support/certificate.h"
#include "support/redis_server.h"

namespace {

using slimta::Envelope;
using slimta::RedisOptions;
using slimta::RedisStorage;
using slimta::bench::Clock;
using slimta::bench::rate;
using slimta::bench::seconds_since;

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// Calls op(thread, i) from `threads` threads for `seconds`; returns calls per second.
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

using Series = std::map<std::string, std::vector<double>>;

// The medians of rates and ratios over the rounds, and each round's ratios.
nlohmann::json summary(const Series& rates, const Series& ratios) {
  nlohmann::json out;
  for (const auto& [k, v] : rates) out["per_s_median"][k] = median(v);
  for (const auto& [k, v] : ratios) {
    out["ratio_median"][k] = median(v);
    out["ratio_rounds"][k] = v;
  }
  return out;
}

// One side of a comparison: a storage and its name in the figures.
struct Side {
  const char* name;
  RedisStorage* storage;
};

// Rounds of: at each thread count, `a` then `b`: writes for `seconds`, then each of `ops`
// ("get", "increment_attempts") on the ids written, which are removed after. Rates are
// named OP_SIDE and ratios OP_B_vs_A, with _Nt after them when there are several thread
// counts. `keep_last`: the ids of `b`'s last run are left in place (to look at).
nlohmann::json compare(Side a, Side b, const std::vector<int>& thread_counts,
                       const std::vector<std::string>& ops, double seconds, int rounds, size_t size,
                       bool keep_last = false) {
  Envelope env = slimta::testing::sample_envelope(1, size);
  std::vector<std::string> all_ops{"write"};
  all_ops.insert(all_ops.end(), ops.begin(), ops.end());
  Series rates, ratios;
  for (int round = 0; round < rounds; ++round) {
    std::map<std::string, double> r;
    for (int threads : thread_counts) {
      std::string t = thread_counts.size() == 1 ? "" : "_" + std::to_string(threads) + "t";
      for (int which = 0; which < 2; ++which) {
        Side side = which == 0 ? a : b;
        std::vector<std::vector<std::string>> ids(threads);
        r[std::string("write_") + side.name + t] = rate(threads, seconds, [&](int th, size_t) {
          ids[th].push_back(side.storage->write(env, 1));
          return true;
        });
        for (const auto& op : ops) {
          r[op + "_" + side.name + t] = rate(threads, seconds, [&](int th, size_t i) {
            const std::string& id = ids[th][i % ids[th].size()];
            if (op == "get")
              side.storage->get(id);
            else
              side.storage->increment_attempts(id);
            return true;
          });
        }
        bool last = round + 1 == rounds && threads == thread_counts.back() && which == 1;
        if (!(keep_last && last)) {
          for (const auto& v : ids)
            for (const auto& id : v) side.storage->remove(id);
        }
      }
      for (const auto& op : all_ops)
        ratios[op + "_" + b.name + "_vs_" + a.name + t].push_back(r[op + "_" + b.name + t] /
                                                                  r[op + "_" + a.name + t]);
    }
    for (const auto& [k, v] : r) rates[k].push_back(v);
  }
  return summary(rates, ratios);
}

// Plain against TLS on one server, one thread: ops per second and the ratios.
nlohmann::json tls_vs_plain(double seconds, int rounds, size_t size) {
  slimta::testing::TempDir dir;
  slimta::testing::Certificate cert = slimta::testing::make_certificate(dir, "redis");
  slimta::testing::RedisServer server(
      slimta::testing::RedisServer::Config{.tls_cert = cert.cert, .tls_key = cert.key});
  RedisOptions plain_o = server.options("plain:");
  RedisOptions tls_o = server.options("tls:");
  tls_o.port = server.tls_port();
  tls_o.tls = true;
  tls_o.tls_ca_file = cert.cert;
  RedisStorage plain(plain_o), tls(tls_o);
  return compare({"plain", &plain}, {"tls", &tls}, {1}, {"get", "increment_attempts"}, seconds,
                 rounds, size);
}

// Without and with min-replicas-ack=1 on a master with one replica.
nlohmann::json ack_vs_none(double seconds, int rounds, size_t size) {
  slimta::testing::RedisServer master;
  slimta::testing::RedisServer replica(
      slimta::testing::RedisServer::Config{.replica_of = master.port()});
  RedisOptions none_o = master.options("none:"), ack_o = master.options("ack:");
  ack_o.min_replicas_ack = 1;
  RedisStorage none(none_o), ack(ack_o);
  // The replica must be in sync before WAIT can be answered.
  for (int i = 0;; ++i) {
    try {
      ack.remove(ack.write(slimta::testing::sample_envelope(1, 10), 1));
      break;
    } catch (const slimta::QueueError&) {
      if (i == 200) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return compare({"none", &none}, {"ack1", &ack}, {1, 16}, {"increment_attempts"}, seconds, rounds,
                 size);
}

// One server against a cluster of three masters.
nlohmann::json cluster_vs_single(double seconds, int rounds, size_t size) {
  slimta::testing::RedisServer single;
  slimta::testing::RedisCluster cluster(3);
  RedisStorage one(single.options("one:")), three(cluster.options("three:"));
  nlohmann::json out = compare({"single", &one}, {"cluster3", &three}, {1, 32}, {"get"}, seconds,
                               rounds, size, /*keep_last=*/true);
  // The last round's messages are left on the cluster: how they and the calls spread.
  for (size_t n = 0; n < cluster.size(); ++n) {
    out["per_node"][std::to_string(n)] = {{"keys", cluster.keys(n)},
                                          {"commands", cluster.node(n).commands_processed()}};
  }
  return out;
}

// A cluster of three masters without the due-time index and with due-slots=64 (ids
// picked into 64 slots, the index added in the write's MULTI).
nlohmann::json cluster_index_vs_none(double seconds, int rounds, size_t size) {
  slimta::testing::RedisCluster cluster(3);
  RedisOptions indexed = cluster.options("indexed:");
  indexed.due_slots = 64;
  RedisStorage none(cluster.options("none:")), index(indexed);
  return compare({"none", &none}, {"due_slots64", &index}, {1, 32}, {"get"}, seconds, rounds, size);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.5;
  int rounds = 3;
  size_t load_messages = 1000000;
  size_t size = 4096;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    if (arg == "--seconds")
      seconds = std::stod(argv[i + 1]);
    else if (arg == "--rounds")
      rounds = std::stoi(argv[i + 1]);
    else if (arg == "--load-messages")
      load_messages = std::stoul(argv[i + 1]);
    else if (arg == "--size")
      size = std::stoul(argv[i + 1]);
    else if (arg == "--only")
      only = argv[i + 1];
    else {
      std::cerr << "unknown option " << arg << "\n";
      return 2;
    }
  }
  nlohmann::json out;
  try {
    if (only == "tls") {
      std::cout << tls_vs_plain(seconds, rounds, size).dump(2) << "\n";
      return 0;
    }
    if (only == "ack") {
      std::cout << ack_vs_none(seconds, rounds, size).dump(2) << "\n";
      return 0;
    }
    if (only == "cluster-index") {
      std::cout << cluster_index_vs_none(seconds, rounds, size).dump(2) << "\n";
      return 0;
    }
    if (only == "cluster") {
      std::cout << cluster_vs_single(seconds, rounds, size).dump(2) << "\n";
      return 0;
    }
    slimta::testing::RedisServer server;
    Envelope env = slimta::testing::sample_envelope(1, size);
    std::string value = slimta::record::encode(slimta::record::initial_metadata(env, 0), &env);
    out["record_bytes"] = value.size();

    // Rounds of: references, then each storage operation, with 1 and with 32 threads.
    // Each ratio compares an operation with the reference measured seconds before it,
    // and the median over the rounds is reported: the machine's speed drifts.
    RedisStorage storage(server.options("bench:"));
    Series rates, ratios;
    for (int round = 0; round < rounds; ++round) {
      for (int threads : {1, 32}) {
        std::string n = "_" + std::to_string(threads) + (threads == 1 ? "_thread" : "_threads");
        std::vector<std::unique_ptr<slimta::redis::Connection>> conns;
        for (int t = 0; t < threads; ++t) {
          conns.push_back(std::make_unique<slimta::redis::Connection>(server.options("")));
        }
        double raw = rate(threads, seconds, [&](int t, size_t i) {
          conns[t]->command(
              {"HSET", "raw:" + std::to_string(t) + ":" + std::to_string(i), "record", value});
          return true;
        });
        // A bare round trip, what redis-benchmark's HSET measures (a short value).
        double small = rate(threads, seconds, [&](int t, size_t i) {
          conns[t]->command({"HSET", "small:" + std::to_string(t), "f", std::to_string(i % 1000)});
          return true;
        });
        conns[0]->command({"FLUSHALL"});
        std::vector<std::vector<std::string>> ids(threads);
        std::map<std::string, double> r;
        r["write"] = rate(threads, seconds, [&](int t, size_t) {
          ids[t].push_back(storage.write(env, 1));
          return true;
        });
        r["get"] = rate(threads, seconds, [&](int t, size_t i) {
          storage.get(ids[t][i % ids[t].size()]);
          return true;
        });
        r["increment_attempts"] = rate(threads, seconds, [&](int t, size_t i) {
          storage.increment_attempts(ids[t][i % ids[t].size()]);
          return true;
        });
        r["remove"] = rate(threads, seconds * 10, [&](int t, size_t i) {
          if (i >= ids[t].size()) return false;
          storage.remove(ids[t][i]);
          return true;
        });
        rates["raw_hset" + n].push_back(raw);
        rates["raw_small_hset" + n].push_back(small);
        for (const auto& [op, v] : r) {
          rates[op + n].push_back(v);
          ratios[op + n + "_vs_raw_hset"].push_back(v / raw);
          ratios[op + n + "_vs_raw_small_hset"].push_back(v / small);
        }
      }
    }
    for (const auto& [k, v] : rates) {
      out["per_s_median"][k] = median(v);
      out["per_s_rounds"][k] = v;
    }
    for (const auto& [k, v] : ratios) out["ratio_median"][k] = median(v);

    // load(): fill the server with message hashes through a pipeline, then stream them.
    slimta::redis::Connection(server.options("")).command({"FLUSHALL"});
    Envelope small = slimta::testing::sample_envelope(1, 100);
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
    RedisStorage loader(server.options("load:"));
    long rss_before = rss_kib(), rss_peak = rss_before;
    auto load_start = Clock::now();
    auto stream = loader.load();
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
