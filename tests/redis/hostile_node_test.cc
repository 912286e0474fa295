// A hostile or broken Redis Cluster node (testing::FakeRedis): a slot map of the wrong
// shape is a retryable error, never a slot written out of range; a redirection is
// followed only to a master the slot map lists, so no node can send our commands and
// password elsewhere.
#include <gtest/gtest.h>

#include <algorithm>

#include "slimta/redis_storage.h"
#include "support/fake_redis.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::FakeRedis;

// What every node answers alike: AUTH, ROLE, PING.
std::optional<std::string> common(const std::vector<std::string>& c) {
  if (c.empty()) return "-ERR empty\r\n";
  if (c[0] == "AUTH" || c[0] == "ASKING") return "+OK\r\n";
  if (c[0] == "PING") return "+PONG\r\n";
  if (c[0] == "ROLE") return FakeRedis::array({FakeRedis::bulk("master"), ":0\r\n", "*0\r\n"});
  return std::nullopt;
}

std::string node(const std::string& host, long long port) {
  return FakeRedis::array({FakeRedis::bulk(host), FakeRedis::integer(port)});
}

std::string range(long long start, long long end, const std::string& master) {
  return FakeRedis::array({FakeRedis::integer(start), FakeRedis::integer(end), master});
}

RedisOptions cluster_at(int port) {
  RedisOptions o;
  o.cluster_nodes = {{"127.0.0.1", port}};
  o.password = "s3cret-of-ours";
  o.socket_timeout = 5;
  o.prefix = "hostile:";
  return o;
}

bool contains(const std::vector<std::string>& commands, const std::string& prefix) {
  return std::any_of(commands.begin(), commands.end(),
                     [&](const std::string& c) { return c.starts_with(prefix); });
}

TEST(HostileNodeTest, ASlotMapOfTheWrongShapeIsARetryableErrorNeverAWriteOutOfRange) {
  int self = 0;  // the fake's own port, once known
  std::string slots;
  FakeRedis fake([&](const std::vector<std::string>& c) -> std::string {
    if (auto r = common(c)) return *r;
    if (c.size() == 2 && c[0] == "CLUSTER" && c[1] == "SLOTS") return slots;
    return "-ERR not here\r\n";
  });
  self = fake.port();
  const std::string me = node("127.0.0.1", self);
  struct Case {
    const char* what;
    std::string reply;
  };
  std::vector<Case> cases = {
      {"a negative start", FakeRedis::array({range(-5, 100, me)})},
      {"an end past the last slot", FakeRedis::array({range(0, 16384, me)})},
      {"an end before the start", FakeRedis::array({range(100, 50, me)})},
      {"a huge negative range", FakeRedis::array({range(-9223372036854775807LL, 0, me)})},
      {"a start that is a string",
       FakeRedis::array({FakeRedis::array({FakeRedis::bulk("0"), FakeRedis::integer(5), me})})},
      {"a port out of range", FakeRedis::array({range(0, 16383, node("127.0.0.1", 70000))})},
      {"a port that is a string",
       FakeRedis::array({range(
           0, 16383, FakeRedis::array({FakeRedis::bulk("127.0.0.1"), FakeRedis::bulk("1")}))})},
      {"a host with a line break", FakeRedis::array({range(0, 16383, node("a\r\nb", self))})},
      {"a master that is not an array", FakeRedis::array({range(0, 16383, FakeRedis::integer(1))})},
      {"a range that is short", FakeRedis::array({FakeRedis::array({FakeRedis::integer(0)})})},
      {"no array at all", "+OK\r\n"},
      {"a range that is a string", FakeRedis::array({FakeRedis::bulk("0-16383")})},
  };
  for (const Case& c : cases) {
    slots = c.reply;
    try {
      RedisStorage storage(cluster_at(self));
      storage.write(testing::sample_envelope(1, 64), 0);
      ADD_FAILURE() << c.what << ": accepted";
    } catch (const QueueError& e) {
      EXPECT_TRUE(e.retryable()) << c.what;
      EXPECT_NE(std::string(e.what()).find("CLUSTER SLOTS"), std::string::npos)
          << c.what << ": " << e.what();
    }
  }
}

TEST(HostileNodeTest, ARedirectionIsFollowedOnlyToAMasterTheSlotMapLists) {
  FakeRedis thief([](const std::vector<std::string>& c) -> std::string {
    if (auto r = common(c)) return *r;
    return "-ERR thanks\r\n";
  });
  int thief_port = thief.port();
  // Two masters of the map: each sends every keyed command to `to` (with `verb`), or,
  // once `answer` is set, the listed one answers it.
  std::string verb = "MOVED", to, answer;
  int self = 0, listed_port = 0;
  auto slot_map = [&] {
    return FakeRedis::array({range(0, 8191, node("127.0.0.1", self)),
                             range(8192, 16383, node("127.0.0.1", listed_port))});
  };
  FakeRedis listed([&](const std::vector<std::string>& c) -> std::string {
    if (auto r = common(c)) return *r;
    if (c.size() == 2 && c[0] == "CLUSTER" && c[1] == "SLOTS") return slot_map();
    if (!answer.empty()) return answer;
    return "-" + verb + " 1 " + to + "\r\n";
  });
  listed_port = listed.port();
  FakeRedis hostile([&](const std::vector<std::string>& c) -> std::string {
    if (auto r = common(c)) return *r;
    if (c.size() == 2 && c[0] == "CLUSTER" && c[1] == "SLOTS") return slot_map();
    return "-" + verb + " 1 " + to + "\r\n";
  });
  self = hostile.port();

  to = "127.0.0.1:" + std::to_string(thief_port);
  for (std::string how : {"MOVED", "ASK"}) {
    verb = how;
    RedisStorage storage(cluster_at(self));
    try {
      storage.write(testing::sample_envelope(1, 64), 0);
      ADD_FAILURE() << "the write went through";
    } catch (const QueueError& e) {
      EXPECT_TRUE(e.retryable());
      EXPECT_NE(std::string(e.what()).find("does not list: not followed"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(thief.connections(), 0u) << "the thief got: " << thief.commands().size() << " commands";

  // A master the map lists is followed, as a resharding needs.
  verb = "MOVED";
  to = "127.0.0.1:" + std::to_string(listed_port);
  answer = "-ERR listed node reached\r\n";
  RedisStorage storage(cluster_at(self));
  try {
    storage.write(testing::sample_envelope(1, 64), 0);
    ADD_FAILURE() << "the write went through";
  } catch (const QueueError& e) {
    EXPECT_NE(std::string(e.what()).find("listed node reached"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(contains(listed.commands(), "AUTH s3cret-of-ours"));
  EXPECT_TRUE(contains(listed.commands(), "HSET hostile:"));
}

// Finding 11: a reply of the wrong type is a storage fault (retryable), never "no such
// message", which the engine takes for a removal by an operator and forgets.
TEST(HostileNodeTest, AReplyOfTheWrongTypeIsARetryableFaultNotAMissingMessage) {
  std::string reply;
  FakeRedis fake([&](const std::vector<std::string>& c) -> std::string {
    if (auto r = common(c)) return *r;
    return reply;
  });
  RedisOptions o;
  o.port = fake.port();
  o.host = "127.0.0.1";
  o.socket_timeout = 5;
  o.prefix = "hostile:";
  RedisStorage storage(o);
  const std::string id = "0123456789abcdef0123456789abcdef";
  for (std::string wrong :
       {std::string(":5\r\n"), std::string("+OK\r\n"), FakeRedis::bulk("record"),
        FakeRedis::array({FakeRedis::integer(1), FakeRedis::integer(2)})}) {
    reply = wrong;
    try {
      storage.get(id);
      ADD_FAILURE() << "a message from " << wrong;
    } catch (const KeyError& e) {
      ADD_FAILURE() << "taken for a missing message: " << wrong << ": " << e.what();
    } catch (const QueueError& e) {
      EXPECT_TRUE(e.retryable()) << wrong << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace slimta
