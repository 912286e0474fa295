// serve on Redis behind sentinels, under SMTP load, through a failover: a forced one
// (SENTINEL FAILOVER) and a crash of the master (SIGKILL). Every message that got its
// 250 must reach the recording sink when min-replicas-ack=1; without it the loss is
// counted and reported (doc/redis.md).
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "support/redis_server.h"
#include "support/sink.h"
#include "support/smtp_client.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::RedisServer;
using testing::SentinelGroup;

struct Case {
  const char* name;
  bool kill;  // SIGKILL of the master, else SENTINEL FAILOVER
  int min_replicas_ack;
};

class FailoverTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (testing::RedisServer::skipped())
      GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  }
};

// The end of every server's log, for a failure's message.
std::string logs(SentinelGroup& group) {
  std::string out;
  for (RedisServer* s : group.all()) {
    std::string log = testing::read_file(s->dir() + "/redis.log");
    size_t from = log.size() > 3000 ? log.find('\n', log.size() - 3000) : 0;
    out += "--- port " + std::to_string(s->port()) + "\n" + log.substr(from);
  }
  return out;
}

TEST_P(FailoverTest, EveryAcknowledgedMessageIsDelivered) {
  const Case& c = GetParam();
  SentinelGroup group(3);
  ASSERT_TRUE(testing::replicas_in_sync(group.server(0).port(), 1, 20s));
  testing::SmtpSink sink;
  std::string url = "redis+sentinel://";
  for (size_t i = 0; i < group.sentinels(); ++i)
    url += (i ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(group.sentinel(i).port());
  url += "/mm?timeout=2&prefix=fo" + random_hex(4) +
         ":&min-replicas-ack=" + std::to_string(c.min_replicas_ack);
  testing::TempDir dir;
  ChildProcess serve({SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage", url,
                      "--smarthost", "127.0.0.1:" + std::to_string(sink.port()), "--accept-domains",
                      "ours.example", "--user", "root"},
                     "listening on");
  int smtp = testing::listening_ports(serve.output())[0];

  // Two clients, each message to a recipient of its own; what got 250 is remembered.
  std::mutex mu;
  std::set<std::string> accepted;
  std::atomic<int> deferred{0}, refused{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  struct Join {  // also when an assertion ends the test early
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Join() {
      stop = true;
      for (auto& t : threads) t.join();
    }
  } join{stop, clients};
  for (int t = 0; t < 2; ++t) {
    clients.emplace_back([&, t] {
      for (int n = 0; !stop; ++n) {
        std::string rcpt = "m" + std::to_string(t) + "-" + std::to_string(n) + "@ours.example";
        int code = testing::send_message(smtp, rcpt);
        std::this_thread::sleep_for(5ms);  // ~300 a second: the sink keeps up
        if (code == 250) {
          std::lock_guard lock(mu);
          accepted.insert(rcpt);
        } else if (code >= 400 && code < 500) {
          ++deferred;
          std::this_thread::sleep_for(20ms);
        } else {
          ++refused;
        }
      }
    });
  }
  auto count = [&] {
    std::lock_guard lock(mu);
    return accepted.size();
  };
  ASSERT_TRUE(testing::eventually([&] { return count() >= 200; }));
  if (c.kill) {
    group.server(0).kill();
  } else {
    testing::run_command({"redis-cli", "-p", std::to_string(group.sentinel(0).port()), "SENTINEL",
                          "FAILOVER", SentinelGroup::kMaster});
  }
  size_t at_switch = count();
  ASSERT_TRUE(
      testing::eventually([&] { return group.master_port() == group.server(1).port(); }, 30s))
      << "no failover in 30 s\n"
      << logs(group);
  if (c.kill) group.server(0).start_as_replica_of(group.server(1).port());
  ASSERT_TRUE(testing::replicas_in_sync(group.server(1).port(), 1, 60s)) << logs(group);
  ASSERT_TRUE(testing::eventually([&] { return count() >= at_switch + 200; }, 30s))
      << "mail is not accepted again after the failover";
  stop = true;
  for (auto& t : clients) t.join();
  clients.clear();
  EXPECT_EQ(refused, 0) << "a 5xx (or no answer) for a temporary fault";

  std::set<std::string> delivered;
  auto all_delivered = [&] {
    for (const auto& m : sink.received())
      for (const auto& to : m["to"]) delivered.insert(to.get<std::string>());
    for (const auto& rcpt : accepted)
      if (!delivered.count(rcpt)) return false;
    return true;
  };
  bool complete = testing::eventually(all_delivered, c.min_replicas_ack > 0 ? 60s : 15s);
  size_t lost = 0;
  for (const auto& rcpt : accepted) {
    if (delivered.count(rcpt)) continue;
    ++lost;
    std::cout << "not delivered: " << rcpt << "\n";
  }
  std::cout << c.name << ": " << accepted.size() << " accepted (250), " << deferred
            << " deferred (4xx), " << lost << " accepted but not delivered\n";
  RecordProperty("accepted", static_cast<int>(accepted.size()));
  RecordProperty("lost", static_cast<int>(lost));
  if (c.min_replicas_ack > 0) {
    EXPECT_TRUE(complete) << lost << " acknowledged messages lost";
  }
}

INSTANTIATE_TEST_SUITE_P(Failovers, FailoverTest,
                         ::testing::Values(Case{"forced_ack1", false, 1},
                                           Case{"kill_ack1", true, 1},
                                           Case{"forced_ack0", false, 0},
                                           Case{"kill_ack0", true, 0}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace slimta
