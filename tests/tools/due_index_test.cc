// `slimta-queue serve` nodes on one Redis with its due-time index: a node's memory does
// not grow with the messages waiting, Redis hears little from idle nodes, and what comes
// due is attempted once, by one node, within 2 s of its time.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <thread>

#include "slimta/cloud_storage.h"
#include "slimta/redis_storage.h"
#include "support/moto_server.h"
#include "support/redis_server.h"
#include "support/sink.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;

// `rescan`: serve's --rescan, which only the whole schedule uses.
std::unique_ptr<ChildProcess> start_node(const std::string& name, const std::string& url,
                                         int sink_port, bool full_schedule = false,
                                         int rescan = 300) {
  testing::Environment env{{"AWS_ACCESS_KEY_ID", "test"}, {"AWS_SECRET_ACCESS_KEY", "test"}};
  std::vector<std::string> argv{
      SLIMTA_QUEUE_BIN, "serve", "--listen",    "127.0.0.1:0",
      "--storage",      url,     "--smarthost", "127.0.0.1:" + std::to_string(sink_port),
      "--hostname",     name,    "--workers",   "8"};
  if (full_schedule) argv.push_back("--full-schedule");
  argv.insert(argv.end(), {"--rescan", std::to_string(rescan)});
  return std::make_unique<ChildProcess>(argv, "listening on", env);
}

// A message with X-Test-Seq: `seq` (what the sink records), due at `due`.
Envelope numbered(int seq) {
  Envelope env = testing::sample_envelope(1, 64, static_cast<unsigned>(seq));
  env.headers.add("X-Test-Seq", std::to_string(seq));
  env.timestamp = system_clock().now();
  return env;
}

// `n` messages deferred by an hour (spread over 10 minutes), written by four threads,
// each on its own storage object.
void fill_waiting(const std::function<std::unique_ptr<QueueStorage>()>& open, int n) {
  Timestamp later = system_clock().now() + 3600;
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      auto storage = open();
      Envelope env = testing::sample_envelope(1, 64, static_cast<unsigned>(t));
      for (int i = t; i < n; i += 4) storage->write(env, later + i % 600);
    });
  }
  for (auto& w : writers) w.join();
}

// What the sink received of `count` messages written through `storage`, due 3 s from
// now and over `spread` seconds: deliveries by message and by node, and the worst delay
// from a message's time to its delivery.
struct DueDeliveries {
  std::map<std::string, int> seen, by_node;
  double worst = 0;
};
DueDeliveries deliver_due(QueueStorage& storage, testing::SmtpSink& sink, int count, double spread,
                          std::chrono::seconds limit = 30s) {
  std::map<std::string, Timestamp> due_at;
  Timestamp start = system_clock().now() + 3;
  for (int i = 0; i < count; ++i) {
    Timestamp t = start + spread * i / count;
    storage.write(numbered(i), t);
    due_at[std::to_string(i)] = t;
  }
  testing::eventually([&] { return sink.received().size() >= static_cast<size_t>(count); }, limit);
  std::this_thread::sleep_for(1s);  // any duplicate would arrive by now
  DueDeliveries out;
  for (const auto& m : sink.received()) {
    std::string seq = m["seq"].get<std::string>();
    ++out.seen[seq];
    ++out.by_node[m["helo"].get<std::string>()];
    out.worst = std::max(out.worst, m["t"].get<double>() - due_at[seq]);
  }
  return out;
}

// Each of `count` delivered once, within `bound` seconds of its time.
void expect_each_once_in_time(const DueDeliveries& d, int count, double bound) {
  EXPECT_EQ(d.seen.size(), static_cast<size_t>(count));
  for (const auto& [seq, n] : d.seen) EXPECT_EQ(n, 1) << "message " << seq << " delivered " << n;
  EXPECT_LE(d.worst, bound) << "a message was attempted more than " << bound << " s after its time";
}

TEST(DueIndexServeTest, ThreeNodesHoldNothingOfAHundredThousandWaitingAndAttemptDueWorkOnce) {
  if (testing::RedisServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  testing::RedisServer server;  // its own: other tests' commands would be counted
  std::string prefix = "due" + random_hex(4) + ":";
  std::string url = "redis://127.0.0.1:" + std::to_string(server.port()) + "/0?prefix=" + prefix;
  std::string empty_url = "redis://127.0.0.1:" + std::to_string(server.port()) + "/0?prefix=empty" +
                          random_hex(4) + ":";
  testing::SmtpSink sink;

  // 100,000 messages deferred by an hour, written by four threads.
  const int kWaiting = 100000;
  fill_waiting([&] { return std::make_unique<RedisStorage>(server.options(prefix, 0)); }, kWaiting);

  // The RSS of a node on an empty queue, of one holding the whole schedule, and of the
  // three nodes on the index, each after it has been up for 3 s.
  auto settled_rss = [](ChildProcess& node) {
    std::this_thread::sleep_for(3s);
    return testing::peak_rss(node.pid());
  };
  size_t empty_rss, full_rss;
  {
    auto empty = start_node("empty", empty_url, sink.port());
    empty_rss = settled_rss(*empty);
    auto full = start_node("full", url, sink.port(), /*full_schedule=*/true);
    full_rss = settled_rss(*full);
  }
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (int n = 0; n < 3; ++n)
    nodes.push_back(start_node("node" + std::to_string(n), url, sink.port()));
  std::this_thread::sleep_for(3s);
  std::vector<size_t> rss;
  for (auto& node : nodes) rss.push_back(testing::peak_rss(node->pid()));

  // Idle: what the three nodes ask of Redis in 10 s.
  long long before = server.commands_processed();
  std::this_thread::sleep_for(10s);
  double per_second = static_cast<double>(server.commands_processed() - before - 1) / 10;

  // 150 messages due 3 to 6 s from now, written by a fourth process.
  const int kDue = 150;
  RedisStorage writer(server.options(prefix, 0));
  DueDeliveries d = deliver_due(writer, sink, kDue, 3.0);
  for (auto& node : nodes) node->stop(SIGTERM);

  std::printf(
      "[ report ] %d messages waiting: node RSS on the index %.1f / %.1f / %.1f MiB, on an "
      "empty queue %.1f MiB, holding the whole schedule %.1f MiB; idle Redis commands/s of 3 "
      "nodes %.1f; %d due messages: delivered %zu, by node %d/%d/%d, worst delay %.2f s\n",
      kWaiting, rss[0] / 1048576.0, rss[1] / 1048576.0, rss[2] / 1048576.0, empty_rss / 1048576.0,
      full_rss / 1048576.0, per_second, kDue, d.seen.size(), d.by_node["node0"], d.by_node["node1"],
      d.by_node["node2"], d.worst);
  for (size_t r : rss) EXPECT_LT(r, empty_rss + 4 * 1048576) << "a node grew with the queue";
  EXPECT_GT(full_rss, empty_rss + 4 * 1048576) << "the whole schedule should cost memory";
  EXPECT_LE(per_second, 10) << "idle nodes should ask Redis little";
  expect_each_once_in_time(d, kDue, 2.0);
}

// The same on a 3-master Redis Cluster with due-slots=64: 20,000 waiting, two nodes.
TEST(DueIndexServeTest, OnARedisClusterTwoNodesHoldNothingOfWhatWaitsAndAttemptDueWorkOnce) {
  if (testing::RedisServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  testing::RedisCluster cluster(3);  // its own: other tests' commands would be counted
  std::string prefix = "due" + random_hex(4) + ":";
  std::string nodes_list;
  for (size_t n = 0; n < cluster.size(); ++n)
    nodes_list += (n ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(cluster.node(n).port());
  const size_t kDueSlots = 64;
  auto url_of = [&](const std::string& p) {
    return "redis+cluster://" + nodes_list + "?prefix=" + p +
           "&due-slots=" + std::to_string(kDueSlots);
  };
  RedisOptions o = cluster.options(prefix);
  o.due_slots = kDueSlots;
  testing::SmtpSink sink;

  const int kWaiting = 20000;
  fill_waiting([&] { return std::make_unique<RedisStorage>(o); }, kWaiting);
  size_t empty_rss;
  {
    auto empty = start_node("empty", url_of("empty" + random_hex(4) + ":"), sink.port());
    std::this_thread::sleep_for(3s);
    empty_rss = testing::peak_rss(empty->pid());
  }
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (int n = 0; n < 2; ++n)
    nodes.push_back(start_node("node" + std::to_string(n), url_of(prefix), sink.port()));
  std::this_thread::sleep_for(3s);
  std::vector<size_t> rss;
  for (auto& node : nodes) rss.push_back(testing::peak_rss(node->pid()));

  long long before = cluster.commands_processed();
  std::this_thread::sleep_for(10s);
  double per_second = static_cast<double>(cluster.commands_processed() - before - 3) / 10;

  const int kDue = 100;
  RedisStorage writer(o);
  DueDeliveries d = deliver_due(writer, sink, kDue, 2.0);
  for (auto& node : nodes) node->stop(SIGTERM);
  std::printf(
      "[ report ] redis cluster (3 masters, due-slots=%zu), %d messages waiting: node RSS %.1f "
      "/ %.1f MiB, on an empty queue %.1f MiB; idle commands/s of 2 nodes %.1f; %d due: "
      "delivered %zu, worst delay %.2f s\n",
      kDueSlots, kWaiting, rss[0] / 1048576.0, rss[1] / 1048576.0, empty_rss / 1048576.0,
      per_second, kDue, d.seen.size(), d.worst);
  for (size_t r : rss) EXPECT_LT(r, empty_rss + 4 * 1048576) << "a node grew with the queue";
  // Each poll reads every index (pipelined, one round trip per master): 64 a second a
  // node (a poll more or less in the window: 20%), and the sweep's few.
  EXPECT_LE(per_second, 2 * (kDueSlots * 1.2 + 10.0));
  expect_each_once_in_time(d, kDue, 2.0);
}

// S3 requests by kind, from a moto_server's own count, minus `before`.
std::map<std::string, uint64_t> since(const testing::MotoServer& moto,
                                      const std::map<std::string, uint64_t>& before) {
  auto now = moto.request_counts();
  for (const auto& [k, v] : before) now[k] -= v;
  return now;
}

// 1,000 messages deferred by an hour on S3+SQS, two nodes on them: while they wait, S3
// sees no GET for them (the whole schedule would read each once per 300 s rescan).
TEST(DueIndexServeTest, OnS3AndSqsWaitingMessagesCostNoGet) {
  if (testing::MotoServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
  testing::MotoServer moto;  // its own: its request counts are this test's alone
  moto.create_bucket("duewait");
  std::string queue = moto.create_queue("duewait");
  std::string url = "s3://duewait/q?region=us-east-1&endpoint=" + moto.endpoint() + "&sqs=" + queue;
  const int kWaiting = 1000;
  {
    CloudStorage storage(SimpleStorageService("duewait", 30, "q/", moto.aws()),
                         SimpleQueueService(queue, 30, 0.1, moto.aws()));
    Envelope env = numbered(0);
    for (int i = 0; i < kWaiting; ++i) storage.write(env, system_clock().now() + 3600);
  }
  testing::SmtpSink sink;
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  // --rescan 10: the whole schedule would read every message twice in the window.
  for (int n = 0; n < 2; ++n)
    nodes.push_back(start_node("node" + std::to_string(n), url, sink.port(), false, 10));
  std::this_thread::sleep_for(2s);
  auto before = moto.request_counts();
  const double kWindow = 20;
  std::this_thread::sleep_for(std::chrono::duration<double>(kWindow));
  auto seen = since(moto, before);
  for (auto& node : nodes) node->stop(SIGTERM);
  double gets = static_cast<double>(seen["s3 GET"]);
  double per_message_per_rescan = gets / kWaiting * (300 / kWindow);
  std::string all;
  for (const auto& [k, v] : seen)
    if (v) all += " " + k + "=" + std::to_string(v);
  std::printf(
      "[ report ] s3+sqs, %d messages waiting, 2 nodes, %.0f s: requests%s; S3 GET per message "
      "per 300 s: %.4f (the whole schedule: 1 per node)\n",
      kWaiting, kWindow, all.c_str(), per_message_per_rescan);
  EXPECT_LT(per_message_per_rescan, 0.1);
  EXPECT_TRUE(sink.received().empty());
}

// A message stored without its notice (the SendMessage after the PUT failed) is found by
// the sweep once not rewritten for stale-after, and delivered: within stale-after + one
// sweep pass (one LIST page per repair step, every 5 s) + the poll (doc/queue.md).
TEST(DueIndexServeTest, OnS3AnObjectWhoseNoticeWasLostIsDeliveredWithinTheBound) {
  if (testing::MotoServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
  auto& moto = testing::shared_moto();
  moto.create_bucket("dueorphan");
  std::string queue = moto.create_queue("orphan" + random_hex(4));
  std::string prefix = "o" + random_hex(4) + "/";
  Timestamp stored = system_clock().now();
  {
    CloudStorage lost(SimpleStorageService("dueorphan", 30, prefix, moto.aws()));  // no SQS
    lost.write(numbered(7), stored);
  }
  testing::SmtpSink sink;
  const double kStaleAfter = 3;
  auto node =
      start_node("node",
                 "s3://dueorphan/" + prefix + "?region=us-east-1&endpoint=" + moto.endpoint() +
                     "&sqs=" + queue + "&stale-after=3",
                 sink.port());
  // One page of objects: one repair step (5 s) covers it; the poll takes it within 1 s.
  const double kBound = kStaleAfter + 5 + 1;
  EXPECT_TRUE(testing::eventually([&] { return !sink.received().empty(); }, 30s));
  node->stop(SIGTERM);
  auto got = sink.received();
  ASSERT_EQ(got.size(), 1u);
  double after = got[0]["t"].get<double>() - stored;
  std::printf("[ report ] s3+sqs orphan delivered %.1f s after it was stored (bound %.0f s)\n",
              after, kBound + 2);
  EXPECT_EQ(got[0]["seq"], "7");
  EXPECT_LE(after, kBound + 2);  // 2 s for a busy machine
}

// One storage over two SQS queues (sqs=Q1,Q2): two nodes deliver every message written
// through either queue once, within 10 s of its time: a notice missed and found only by
// its visibility timeout (30 s here) would be late by three times that. (It was 3 s, then
// 5 s; under ASan beside two whole test runs, a delivery took 5.18 s.)
TEST(DueIndexServeTest, OnS3OverTwoQueuesEachDueMessageIsDeliveredOnce) {
  if (testing::MotoServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
  auto& moto = testing::shared_moto();
  moto.create_bucket("duetwo");
  std::vector<std::string> queues{moto.create_queue("two" + random_hex(4)),
                                  moto.create_queue("two" + random_hex(4))};
  std::string prefix = "t" + random_hex(4) + "/";
  std::string url = "s3://duetwo/" + prefix + "?region=us-east-1&endpoint=" + moto.endpoint() +
                    "&sqs=" + queues[0] + "," + queues[1];
  testing::SmtpSink sink;
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (int n = 0; n < 2; ++n)
    nodes.push_back(start_node("node" + std::to_string(n), url, sink.port()));
  const int kDue = 40;
  std::vector<SimpleQueueService> list;
  for (const auto& q : queues) list.emplace_back(q, 30, 0.1, moto.aws());
  CloudStorage writer(SimpleStorageService("duetwo", 30, prefix, moto.aws()), std::move(list));
  DueDeliveries d = deliver_due(writer, sink, kDue, 2.0, 60s);
  for (auto& node : nodes) node->stop(SIGTERM);
  std::printf("[ report ] s3+sqs over 2 queues, 2 nodes: %zu of %d delivered, worst delay %.2f s\n",
              d.seen.size(), kDue, d.worst);
  expect_each_once_in_time(d, kDue, 10.0);
}

}  // namespace
}  // namespace slimta
