// RedisStorage on a Redis Cluster (3 masters made by redis-cli --cluster create, real
// redis-server processes started by the tests): messages spread over the masters, and
// slots resharded while messages are written and worked on.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "redis/cluster.h"
#include "slimta/redis_storage.h"
#include "support/log_capture.h"
#include "support/redis_server.h"
#include "support/test_util.h"
#include "support/writer.h"

namespace slimta {
namespace {

using testing::RedisCluster;
using testing::RedisServer;
using testing::sample_envelope;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (RedisServer::skipped())
      GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  }
  std::string prefix_ = "ct" + random_hex(4) + ":";
};

TEST(ClusterSlotTest, KeySlotsAreTheSpecificationsAndFollowHashTags) {
  // The cluster specification's examples, and what CLUSTER KEYSLOT answers.
  EXPECT_EQ(redis::key_slot("123456789"), 12739);  // CRC16 XMODEM 0x31C3 % 16384
  EXPECT_EQ(redis::key_slot("foo"), 12182);
  EXPECT_EQ(redis::key_slot("{user1000}.following"), redis::key_slot("user1000"));
  EXPECT_EQ(redis::key_slot("foo{}{bar}"), redis::key_slot("foo{}{bar}"));  // empty tag: whole
  EXPECT_NE(redis::key_slot("foo{}{bar}"), redis::key_slot("bar"));
  EXPECT_EQ(redis::key_slot("foo{{bar}}zap"), redis::key_slot("{bar"));
}

TEST_F(ClusterTest, AWriteToPausedMastersIsRefusedAndNeverStored) {
  RedisCluster cluster(3);
  std::vector<testing::RedisServer*> all;
  for (size_t i = 0; i < cluster.size(); ++i) all.push_back(&cluster.node(i));
  testing::expect_a_write_to_paused_servers_refused_for_good(cluster.options(prefix_), all);
}

TEST_F(ClusterTest, SlotsAgreeWithTheServer) {
  RedisCluster& cluster = testing::shared_redis_cluster();
  for (std::string key : {"a", "slimta:0123456789abcdef0123456789abcdef", "x{tag}y", "{dest}"}) {
    auto r = testing::run_command(
        {"redis-cli", "-p", std::to_string(cluster.node(0).port()), "CLUSTER", "KEYSLOT", key});
    EXPECT_EQ(std::stoi(r.out), redis::key_slot(key)) << key;
  }
}

TEST_F(ClusterTest, MessagesAndTheirNoticesSpreadOverEveryMaster) {
  RedisCluster cluster(3);
  RedisStorage storage(cluster.options(prefix_)), other(cluster.options(prefix_));
  other.load();  // from now on, other.wait() reports what `storage` writes
  std::set<std::string> ids;
  for (int i = 0; i < 300; ++i) ids.insert(storage.write(sample_envelope(1, 256), 1000 + i));
  for (size_t n = 0; n < cluster.size(); ++n)
    EXPECT_GT(cluster.keys(n), 60) << "node " << n << " holds too few of 300 messages";
  std::set<std::string> loaded;
  RedisStorage reader(cluster.options(prefix_));
  auto stream = reader.load();
  while (auto e = stream->next()) loaded.insert(e->id);
  EXPECT_EQ(loaded, ids);
  std::set<std::string> noticed;
  ASSERT_TRUE(testing::eventually([&] {
    for (const auto& e : other.wait(std::chrono::milliseconds(300))) noticed.insert(e.id);
    return noticed.size() == ids.size();
  }));
  EXPECT_EQ(noticed, ids);
}

// With due_slots, the indexes move with their messages' slots: everything left is
// still handed out by due() afterwards.
void reshard_while_writing_and_working(const std::string& prefix, size_t due_slots) {
  RedisCluster cluster(3);
  RedisOptions o = cluster.options(prefix);
  o.due_slots = due_slots;
  RedisStorage writer(o), worker(o);
  std::mutex mu;
  std::vector<std::string> written;
  std::set<std::string> removed;
  std::atomic<bool> stop{false};
  std::string failure;
  auto fail = [&](const std::exception& e) {
    std::lock_guard lock(mu);
    failure = e.what();
    stop = true;
  };
  std::thread writing([&] {
    try {
      while (!stop) {
        std::string id = writer.write(sample_envelope(1, 2048), 1000);
        std::lock_guard lock(mu);
        written.push_back(id);
      }
    } catch (const std::exception& e) {
      fail(e);
    }
  });
  std::thread working([&] {  // claims, attempts and removes one in three
    try {
      for (size_t n = 0; !stop;) {
        std::string id;
        {
          std::lock_guard lock(mu);
          if (n * 3 >= written.size()) continue;
          id = written[n++ * 3];
        }
        ClaimResult c = worker.claim(id, std::chrono::seconds(30));
        ASSERT_EQ(c.status, ClaimResult::Status::claimed);
        worker.increment_attempts(id, Fence{c.lease.token});
        worker.remove(id, Fence{c.lease.token});
        std::lock_guard lock(mu);
        removed.insert(id);
      }
    } catch (const std::exception& e) {
      fail(e);
    }
  });
  ASSERT_TRUE(testing::eventually([&] {
    std::lock_guard lock(mu);
    return written.size() > 500;
  }));
  auto id_of = [&](size_t n) {
    return testing::run_command(
               {"redis-cli", "-p", std::to_string(cluster.node(n).port()), "CLUSTER", "MYID"})
        .out.substr(0, 40);
  };
  long long before = cluster.keys(1);
  auto moved = testing::run_command({"redis-cli", "--cluster", "reshard",
                                     "127.0.0.1:" + std::to_string(cluster.node(0).port()),
                                     "--cluster-from", id_of(0), "--cluster-to", id_of(1),
                                     "--cluster-slots", "3000", "--cluster-yes"});
  ASSERT_EQ(moved.exit_code, 0) << moved.out << moved.err;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // on the new map a while
  stop = true;
  writing.join();
  working.join();
  ASSERT_EQ(failure, "") << "a call failed during the resharding";
  EXPECT_GT(cluster.keys(1), before) << "node 1 got no keys: nothing was resharded";

  RedisStorage fresh(o);
  std::set<std::string> expected, loaded;
  for (const auto& id : written)
    if (!removed.count(id)) expected.insert(id);
  auto stream = fresh.load();
  while (auto e = stream->next()) loaded.insert(e->id);
  EXPECT_EQ(loaded.size(), expected.size());
  EXPECT_EQ(loaded, expected);
  for (const auto& id : removed) EXPECT_THROW(fresh.get(id), KeyError) << id;
  if (due_slots) {
    std::set<std::string> due;
    for (const auto& e : fresh.due(2000, 1000000, std::chrono::seconds(60))) due.insert(e.id);
    EXPECT_EQ(due, expected) << "the index and the messages disagree after the resharding";
  }
  std::cout << written.size() << " written, " << removed.size()
            << " worked and removed during a resharding of 3000 slots; none lost"
            << (due_slots ? ", the index agrees" : "") << "\n";
}

TEST_F(ClusterTest, ReshardingWhileWritingAndWorkingLosesNothing) {
  reshard_while_writing_and_working(prefix_, 0);
}

TEST_F(ClusterTest, ReshardingWithTheDueIndexLosesNothingAndTheIndexAgrees) {
  reshard_while_writing_and_working(prefix_, 64);
}

// The ids of what `storage` hands out as due by `now` (in a few calls of 100).
std::vector<std::string> all_due(RedisStorage& storage, Timestamp now) {
  std::vector<std::string> ids;
  for (auto batch = storage.due(now, 100, std::chrono::seconds(600)); !batch.empty();
       batch = storage.due(now, 100, std::chrono::seconds(600))) {
    for (const auto& e : batch) ids.push_back(e.id);
  }
  return ids;
}

// Deletes every key matching `pattern` on every node.
void delete_keys(RedisCluster& cluster, const std::string& pattern) {
  for (size_t n = 0; n < cluster.size(); ++n) {
    std::string port = std::to_string(cluster.node(n).port());
    auto keys = testing::run_command({"redis-cli", "-p", port, "--scan", "--pattern", pattern});
    std::istringstream lines(keys.out);
    for (std::string key; std::getline(lines, key);)
      if (!key.empty()) testing::run_command({"redis-cli", "-p", port, "DEL", key});
  }
}

TEST_F(ClusterTest, WithDueSlotsMessagesAreIndexedInTheirOwnSlotsOnEveryMaster) {
  RedisCluster cluster(3);
  RedisOptions o = cluster.options(prefix_);
  EXPECT_FALSE(RedisStorage(o).capabilities().due_index);  // not unless asked for
  EXPECT_THROW(RedisStorage(o).due(1000, 10, std::chrono::seconds(60)), NotSupported);
  o.due_slots = 64;
  RedisStorage storage(o);
  EXPECT_TRUE(storage.capabilities().due_index);
  std::vector<std::string> written;
  for (int i = 0; i < 300; ++i) written.push_back(storage.write(sample_envelope(1, 256), 1000 + i));
  // Ids keep their form; their keys are in every 256th slot, spread over the masters.
  for (const auto& id : written) {
    EXPECT_TRUE(is_valid_id(id));
    EXPECT_EQ(redis::key_slot(prefix_ + id) % 256, 0) << id;
  }
  for (size_t n = 0; n < cluster.size(); ++n)
    EXPECT_GT(cluster.keys(n), 60) << "node " << n << " holds too few of 300 messages";
  // Handed out oldest first across the indexes of all masters, each once.
  auto first = storage.due(1099.5, 50, std::chrono::seconds(600));
  ASSERT_EQ(first.size(), 50u);
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_EQ(first[i], (QueueEntry{1000.0 + i, written[i]}));
  RedisStorage other(o);
  auto rest = all_due(other, 1500);  // the first 50 are handed out until 1699.5
  EXPECT_EQ(rest, std::vector<std::string>(written.begin() + 50, written.end()));
  EXPECT_TRUE(storage.due(1500, 100, std::chrono::seconds(600)).empty());

  // A storage opened with more slots still indexes every one these went to.
  o.due_slots = 256;
  RedisStorage more(o);
  EXPECT_EQ(all_due(more, 9999).size(), 300u);

  // The indexes lost: the sweep walks every master and puts every message back.
  delete_keys(cluster, prefix_ + "{*}.due");
  EXPECT_TRUE(storage.due(99999, 100, std::chrono::seconds(600)).empty());
  std::string cursor;
  size_t repaired = 0, steps = 0;
  do {
    repaired += storage.repair_due(cursor);
  } while (++steps < 1000 && !cursor.empty());
  EXPECT_GE(steps, cluster.size()) << "one pass scans every master";
  EXPECT_EQ(repaired, 300u);
  auto back = all_due(storage, 5000);
  EXPECT_EQ(back, written);  // at their own times again
  EXPECT_THROW(
      [&] {
        std::string bad = "x/0";
        storage.repair_due(bad);
      }(),
      InvalidArgument);
}

TEST_F(ClusterTest, WithAHashTaggedPrefixThereIsOneIndexInItsSlot) {
  RedisCluster& cluster = testing::shared_redis_cluster();
  RedisOptions o = cluster.options("{q" + random_hex(4) + "}:");
  o.due_slots = 64;
  RedisStorage storage(o);
  std::vector<std::string> written;
  for (int i = 0; i < 20; ++i) written.push_back(storage.write(sample_envelope(), 100 + i));
  for (const auto& id : written)
    EXPECT_EQ(redis::key_slot(o.prefix + id), redis::key_slot(o.prefix));
  EXPECT_EQ(all_due(storage, 1000), written);
}

// Messages stored before the index was asked for are in slots without one: not handed
// out, and the sweep counts them (its warning tells the operator what to do).
TEST_F(ClusterTest, MessagesStoredBeforeDueSlotsAreNotIndexedAndNeverLost) {
  testing::LogCapture log;  // before any storage's threads
  RedisCluster& cluster = testing::shared_redis_cluster();
  RedisOptions o = cluster.options(prefix_);
  std::vector<std::string> before;
  {
    RedisStorage old(o);
    for (int i = 0; i < 40; ++i) before.push_back(old.write(sample_envelope(), 100));
  }
  o.due_slots = 4;
  RedisStorage storage(o);
  std::string indexed = storage.write(sample_envelope(), 100);
  std::string cursor;
  size_t repaired = 0, steps = 0;
  do {
    repaired += storage.repair_due(cursor);
  } while (!cursor.empty() && ++steps < 1000);
  std::string text = log.text();
  // A random id lands in one of the 4 indexed slots once in ~100 such tests: that one is
  // indexed by the sweep.
  size_t by_chance = 0;
  for (const auto& id : before) by_chance += redis::key_slot(o.prefix + id) % 4096 == 0;
  EXPECT_EQ(repaired, by_chance);
  // The pass says how many and what to do, once.
  EXPECT_NE(text.find(std::to_string(40 - by_chance) +
                      " messages are in slots without the due-time index"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("--full-schedule"), std::string::npos);
  std::vector<std::string> due = all_due(storage, 1000);
  EXPECT_EQ(due.size(), 1 + by_chance);
  EXPECT_NE(std::find(due.begin(), due.end(), indexed), due.end());
  for (const auto& id : before) EXPECT_EQ(storage.get(id).timestamp, 100) << id;
}

// A master of the cluster dies; its replica takes its slots. The storage finds the new
// master by itself (the map asked again), and with min-replicas-ack=1 nothing it
// acknowledged is lost.
// With due_slots, every acknowledged message is in the index after the failover too:
// message and index entry are one transaction in one slot, replicated together.
void kill_a_master_under_writes(const std::string& prefix, size_t due_slots) {
  RedisCluster cluster(3, false, /*replicas=*/1);
  RedisOptions o = cluster.options(prefix);
  o.min_replicas_ack = 1;
  // The promoted replica has no replica of its own: each write to its slots is refused
  // after ack_timeout. Short here, so that the writes to the other masters count up.
  o.ack_timeout = 0.2;
  o.due_slots = due_slots;
  RedisStorage storage(o);
  testing::Writer writer(storage, 512);
  ASSERT_TRUE(testing::eventually([&] { return writer.count() >= 300; }));
  size_t victim = cluster.size();
  for (size_t n = 0; n < cluster.size() && victim == cluster.size(); ++n) {
    auto role =
        testing::run_command({"redis-cli", "-p", std::to_string(cluster.node(n).port()), "ROLE"});
    if (role.out.starts_with("master")) victim = n;
  }
  ASSERT_LT(victim, cluster.size());
  cluster.node(victim).kill();
  size_t at_kill = writer.count();
  size_t survivor = (victim + 1) % cluster.size();
  auto survivor_says = [&](std::vector<std::string> command) {
    command.insert(command.begin(),
                   {"redis-cli", "-p", std::to_string(cluster.node(survivor).port())});
    return testing::run_command(command).out;
  };
  ASSERT_TRUE(testing::eventually(
      [&] {  // the slots of the dead node served by its replica (failed nodes are not listed)
        return survivor_says({"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos &&
               survivor_says({"CLUSTER", "SLOTS"})
                       .find("\n" + std::to_string(cluster.node(victim).port()) + "\n") ==
                   std::string::npos;
      },
      std::chrono::seconds(30)))
      << "no failover in 30 s";
  // Writes to the other masters go on; those to the promoted one wait for a replica.
  // A wide bound: under ASan with the whole suite running beside it, 200 writes through
  // a cluster that is still settling took longer than 20 s (it is a condition, not a
  // time, that the test waits for).
  ASSERT_TRUE(testing::eventually([&] { return writer.count() >= at_kill + 200; },
                                  std::chrono::seconds(90)))
      << writer.count() - at_kill << " acknowledged since the kill, " << writer.refused()
      << " refused";
  writer.stop();
  ASSERT_EQ(writer.failure(), "");
  // Each node turns its own cluster_state back to ok, some after the survivor asked
  // above; until then it answers CLUSTERDOWN (a retryable error). The reads below are
  // about what was kept, so they wait for every live node to agree.
  ASSERT_TRUE(testing::eventually(
      [&] {
        for (size_t n = 0; n < cluster.size(); ++n) {
          if (n == victim) continue;
          auto info = testing::run_command(
              {"redis-cli", "-p", std::to_string(cluster.node(n).port()), "CLUSTER", "INFO"});
          if (info.out.find("cluster_state:ok") == std::string::npos) return false;
        }
        return true;
      },
      std::chrono::seconds(30)))
      << "a live node still says the cluster is down after 30 s";
  RedisStorage fresh(o);
  size_t lost = testing::count_missing(fresh, writer.acked());
  EXPECT_EQ(lost, 0u) << "of " << writer.acked().size() << " acknowledged writes";
  std::set<std::string> loaded;
  auto stream = fresh.load();  // scans the promoted replica, not the dead master
  while (auto e = stream->next()) loaded.insert(e->id);
  for (const auto& id : writer.acked()) EXPECT_TRUE(loaded.count(id)) << id << " not loaded";
  // A write refused after it was stored (the master died before it could be taken back)
  // may be there too: at most one per refusal.
  EXPECT_LE(loaded.size(), writer.acked().size() + static_cast<size_t>(writer.refused()));
  if (due_slots) {
    std::set<std::string> due;
    for (const auto& e : fresh.due(2000, 1000000, std::chrono::seconds(60))) due.insert(e.id);
    for (const auto& id : writer.acked()) EXPECT_TRUE(due.count(id)) << id << " not in the index";
  }
  std::cout << "a cluster master killed: " << writer.acked().size() << " acknowledged, " << lost
            << " lost, " << writer.refused() << " refused (retryable)"
            << (due_slots ? "; every acknowledged one in the index" : "") << "\n";
}

TEST_F(ClusterTest, AMasterKilledItsReplicaTakesOverAndNothingAcknowledgedIsLost) {
  kill_a_master_under_writes(prefix_, 0);
}

TEST_F(ClusterTest, AMasterKilledUnderTheDueIndexLosesNoAcknowledgedMessageNorItsEntry) {
  kill_a_master_under_writes(prefix_, 64);
}

}  // namespace
}  // namespace slimta
