// DiskStorage benchmark. Prints one JSON object.
//
// Durable write throughput with 1 and 8 concurrent writers is reported next to this
// machine's raw fsync rate, measured in the same run (a 4 KiB write + fdatasync loop
// on one file, before and after the write runs, averaged), as a ratio: these machines
// are shared and noisy, so only ratios taken in one run mean anything. Then the
// group-commit log (src/disk/group_log.h) the same way, with records of the message's
// size against a raw loop of that size, and its syncs per append. Then get() and
// load() throughput over a spool of --messages stored messages (warm page cache).
//
// usage: disk_bench [--dir PATH] [--seconds S] [--messages N] [--size BYTES]
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "disk/group_log.h"
#include "disk/log_store.h"
#include "slimta/disk_storage.h"
#include "support/test_util.h"

namespace {

using slimta::DiskStorage;
using slimta::Envelope;
using slimta::bench::Clock;
using slimta::bench::seconds_since;

// `bytes` (4 KiB unless told) appended and fdatasync'ed in a loop: what one durable
// stream can do here.
double raw_fsync_rate(const std::string& dir, double seconds, size_t bytes = 4096) {
  std::string path = dir + "/raw-fsync";
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  std::string block(bytes, 'x');
  size_t n = 0;
  auto start = Clock::now();
  while (seconds_since(start) < seconds) {
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size()) ||
        ::fdatasync(fd) != 0) {
      throw std::runtime_error("raw fsync loop failed");
    }
    ++n;
  }
  double rate = n / seconds_since(start);
  ::close(fd);
  ::unlink(path.c_str());
  return rate;
}

// This process's resident memory now (/proc/self/statm).
double resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  double pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

int main(int argc, char** argv) {
  std::string base = std::filesystem::temp_directory_path();
  double seconds = 5;
  size_t messages = 100000;
  size_t size = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    if (arg == "--dir")
      base = argv[i + 1];
    else if (arg == "--seconds")
      seconds = std::stod(argv[i + 1]);
    else if (arg == "--messages")
      messages = std::stoul(argv[i + 1]);
    else if (arg == "--size")
      size = std::stoul(argv[i + 1]);
    else {
      std::cerr << "unknown option " << arg << "\n";
      return 2;
    }
  }
  std::string dir = base + "/slimta-disk-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  nlohmann::json out;
  out["message_bytes"] = slimta::testing::sample_envelope(1, size).message_size();
  try {
    Envelope env = slimta::testing::sample_envelope(1, size);
    {
      DiskStorage storage(dir + "/write-spool");
      double raw1 = raw_fsync_rate(dir, seconds);
      double w1 = slimta::bench::rate(1, seconds,
                                      [&](int, size_t) { return !storage.write(env, 0).empty(); });
      double w8 = slimta::bench::rate(8, seconds,
                                      [&](int, size_t) { return !storage.write(env, 0).empty(); });
      double raw2 = raw_fsync_rate(dir, seconds);
      double raw = (raw1 + raw2) / 2;
      out["raw_fsync_per_s"] = {{"before", raw1}, {"after", raw2}, {"mean", raw}};
      out["write_1_writer_per_s"] = w1;
      out["write_8_writers_per_s"] = w8;
      out["write_1_writer_vs_raw_fsync"] = w1 / raw;
      out["write_8_writers_vs_raw_fsync"] = w8 / raw;
    }
    std::filesystem::remove_all(dir + "/write-spool");

    {
      const std::string record = slimta::testing::sample_envelope(1, size).flatten();
      auto& fs = slimta::disk::posix_file_system();
      slimta::posix::Fd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      double raw1 = raw_fsync_rate(dir, seconds, record.size() + 8);
      auto appends = [&](int writers) {
        slimta::disk::GroupLog log(fs, dirfd.get(), "group-log", dir + "/group-log");
        double r = slimta::bench::rate(writers, seconds, [&](int, size_t) {
          log.append(record);
          return true;
        });
        auto stats = log.stats();
        std::filesystem::remove(dir + "/group-log");
        return std::pair{r, static_cast<double>(stats.syncs) / static_cast<double>(stats.appends)};
      };
      auto [g1, s1] = appends(1);
      auto [g16, s16] = appends(16);
      double raw2 = raw_fsync_rate(dir, seconds, record.size() + 8);
      double raw = (raw1 + raw2) / 2;
      out["group_log"] = {{"record_bytes", record.size()},
                          {"raw_fsync_per_s", {{"before", raw1}, {"after", raw2}, {"mean", raw}}},
                          {"append_1_writer_per_s", g1},
                          {"append_16_writers_per_s", g16},
                          {"append_1_writer_vs_raw_fsync", g1 / raw},
                          {"append_16_writers_vs_raw_fsync", g16 / raw},
                          {"syncs_per_append_1_writer", s1},
                          {"syncs_per_append_16_writers", s16}};
    }

    {
      // The log store (src/disk/log_store.h): puts of message records, then whole
      // lifecycles (put, two metadata changes, removal) with a compaction running beside
      // them, then a start that rebuilds the index of `messages` messages.
      Envelope sample = slimta::testing::sample_envelope(1, size);
      const std::string record =
          slimta::record::encode(slimta::record::initial_metadata(sample, 0), &sample);
      auto& fs = slimta::disk::posix_file_system();
      const std::string log_dir = dir + "/log-store";
      auto fresh = [&] {
        std::filesystem::remove_all(log_dir);
        std::filesystem::create_directories(log_dir);
        return slimta::posix::Fd(::open(log_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      };
      auto open = [&](const slimta::posix::Fd& fd) {
        return std::make_unique<slimta::disk::LogStore>(fs, fd.get(), log_dir,
                                                        slimta::disk::LogStore::Options{});
      };
      std::atomic<uint64_t> seq{0};
      auto next_id = [&] { return "b" + std::to_string(seq++); };
      double raw1 = raw_fsync_rate(dir, seconds, record.size() + 8);
      auto puts = [&](int writers) {
        auto fd = fresh();
        auto store = open(fd);
        double r = slimta::bench::rate(writers, seconds, [&](int, size_t) {
          store->put(next_id(), record);
          return true;
        });
        auto stats = store->stats();
        return std::pair{r, static_cast<double>(stats.syncs) / static_cast<double>(stats.messages)};
      };
      auto [p1, s1] = puts(1);
      auto [p16, s16] = puts(16);
      double raw2 = raw_fsync_rate(dir, seconds, record.size() + 8);
      double raw = (raw1 + raw2) / 2;
      // Lifecycles at 16 writers, a compactor beside them.
      auto fd = fresh();
      auto store = open(fd);
      std::atomic<bool> done{false};
      std::atomic<size_t> compacted{0};
      std::thread compactor([&] {
        while (!done) {
          compacted += store->compact(0.5);
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      });
      const uint64_t first = seq.load();
      double lifecycles = slimta::bench::rate(16, seconds, [&](int, size_t) {
        std::string id = next_id();
        store->put(id, record);
        for (uint32_t attempt = 1; attempt <= 2; ++attempt) {
          store->update(id, [&](slimta::record::Metadata& m) {
            m.attempts = attempt;
            return true;
          });
        }
        store->remove(id);
        return true;
      });
      done = true;
      compactor.join();
      auto lifecycle_stats = store->stats();
      store.reset();
      // A start over `messages` messages stored.
      fd = fresh();
      store = open(fd);
      std::vector<std::thread> fillers;
      std::atomic<size_t> filled{0};
      for (int t = 0; t < 16; ++t) {
        fillers.emplace_back([&] {
          for (size_t i; (i = filled++) < messages;) store->put(next_id(), record);
        });
      }
      for (auto& f : fillers) f.join();
      const uint64_t stored = store->stats().messages;
      store.reset();
      auto start = Clock::now();
      store = open(fd);
      double start_s = seconds_since(start);
      if (store->stats().messages != stored) throw std::runtime_error("the start lost messages");
      store->checkpoint();
      store.reset();
      ::malloc_trim(0);
      const double rss_before = resident_bytes();
      start = Clock::now();
      store = open(fd);
      double checkpoint_start_s = seconds_since(start);
      const double index_bytes = resident_bytes() - rss_before;
      if (store->stats().messages != stored || !store->stats().from_checkpoint)
        throw std::runtime_error("the start from the checkpoint lost messages");
      out["log_store"] = {
          {"record_bytes", record.size()},
          {"raw_fsync_per_s", {{"before", raw1}, {"after", raw2}, {"mean", raw}}},
          {"put_1_writer_per_s", p1},
          {"put_16_writers_per_s", p16},
          {"put_1_writer_vs_raw_fsync", p1 / raw},
          {"put_16_writers_vs_raw_fsync", p16 / raw},
          {"syncs_per_put_1_writer", s1},
          {"syncs_per_put_16_writers", s16},
          {"lifecycles_16_writers_per_s", lifecycles},
          {"syncs_per_lifecycle_16_writers",
           static_cast<double>(lifecycle_stats.syncs) / static_cast<double>(seq.load() - first)},
          {"segments_compacted_meanwhile", compacted.load()},
          {"segments_left_after", lifecycle_stats.segments},
          {"start_messages", stored},
          {"start_whole_log_seconds", start_s},
          {"start_whole_log_us_per_message", 1e6 * start_s / static_cast<double>(stored)},
          {"start_from_checkpoint_seconds", checkpoint_start_s},
          {"start_from_checkpoint_us_per_message",
           1e6 * checkpoint_start_s / static_cast<double>(stored)},
          {"index_resident_bytes_per_message", index_bytes / static_cast<double>(stored)}};
      store.reset();
      std::filesystem::remove_all(log_dir);
    }

    // A spool of `messages` messages for get() and load().
    DiskStorage storage(dir + "/read-spool");
    std::vector<std::string> ids(messages);
    std::atomic<size_t> next{0};
    auto fill_start = Clock::now();
    std::vector<std::thread> fillers;
    for (int t = 0; t < 16; ++t) {
      fillers.emplace_back([&] {
        for (size_t i; (i = next++) < messages;)
          ids[i] = storage.write(env, static_cast<double>(i));
      });
    }
    for (auto& f : fillers) f.join();
    out["fill_16_writers_per_s"] = messages / seconds_since(fill_start);

    std::mt19937 rng(42);
    std::shuffle(ids.begin(), ids.end(), rng);
    auto get_start = Clock::now();
    size_t bytes = 0;
    for (const auto& id : ids) bytes += storage.get(id).envelope.body.size();
    double get_s = seconds_since(get_start);
    out["get_per_s"] = messages / get_s;
    if (bytes != messages * size) throw std::runtime_error("get returned wrong bodies");

    for (int round = 0; round < 2; ++round) {
      auto load_start = Clock::now();
      auto stream = storage.load();
      size_t n = 0;
      while (stream->next()) ++n;
      double load_s = seconds_since(load_start);
      if (n != messages) throw std::runtime_error("load returned " + std::to_string(n));
      out["load_seconds"].push_back(load_s);
      out["load_per_s"].push_back(messages / load_s);
    }
    out["messages"] = messages;
  } catch (const std::exception& e) {
    std::cerr << "disk_bench: " << e.what() << "\n";
    std::filesystem::remove_all(dir);
    return 1;
  }
  std::filesystem::remove_all(dir);
  std::cout << out.dump(2) << "\n";
  return 0;
}
