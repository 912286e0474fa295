// Behaviour specific to RedisStorage, against a real redis-server started by the test.
#include "slimta/redis_storage.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include <hiredis/hiredis.h>
#include <sstream>

#include "redis/connection.h"
#include "support/certificate.h"
#include "support/redis_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::RedisServer;
using testing::sample_envelope;

class RedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (RedisServer::skipped())
      GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  }
  // A raw connection, to look at what the storage left in Redis.
  static redis::Reply raw(RedisServer& server, const std::vector<std::string_view>& args,
                          int db = 0) {
    redis::Connection c(server.options("", db));
    return c.command(args);
  }
  std::string prefix_ = "rt" + random_hex(4) + ":";
};

TEST_F(RedisTest, SeedConstructorDefaults) {
  RedisStorage storage;
  const RedisOptions& o = storage.options();
  EXPECT_EQ(o.host, "localhost");
  EXPECT_EQ(o.port, 6379);
  EXPECT_EQ(o.db, 0);
  EXPECT_FALSE(o.password);
  EXPECT_FALSE(o.socket_timeout);
  EXPECT_EQ(o.prefix, "slimta:");
  RedisStorage custom("10.0.0.1", 6380, 2, "pw", 1.5, "q:");
  EXPECT_EQ(custom.options().host, "10.0.0.1");
  EXPECT_EQ(custom.options().port, 6380);
  EXPECT_EQ(custom.options().db, 2);
  EXPECT_EQ(custom.options().password, "pw");
  EXPECT_EQ(custom.options().socket_timeout, 1.5);
  EXPECT_EQ(custom.options().prefix, "q:");
}

TEST_F(RedisTest, BadOptionsNameTheField) {
  auto message = [](RedisOptions o) {
    try {
      RedisStorage s(o);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  RedisOptions o;
  o.port = 0;
  EXPECT_NE(message(o).find("port"), std::string::npos);
  o = {};
  o.db = -1;
  EXPECT_NE(message(o).find("db"), std::string::npos);
  o = {};
  o.socket_timeout = 0;
  EXPECT_NE(message(o).find("socket_timeout"), std::string::npos);
}

// Seen: capabilities().durable was true for any Redis, though one without an
// append-only file fsynced at every write loses what it acknowledged in a crash.
TEST_F(RedisTest, IsDurableOnlyWithAnAppendOnlyFileFsyncedAtEveryWrite) {
  EXPECT_FALSE(RedisStorage(testing::shared_redis().options(prefix_)).capabilities().durable);
  RedisServer aof(RedisServer::Config{.password = "", .appendonly = true});
  EXPECT_TRUE(RedisStorage(aof.options(prefix_)).capabilities().durable);
  redisContext* c = redisConnect("127.0.0.1", aof.port());
  ASSERT_TRUE(c && !c->err);
  freeReplyObject(redisCommand(c, "CONFIG SET appendfsync everysec"));
  redisFree(c);
  EXPECT_FALSE(RedisStorage(aof.options(prefix_)).capabilities().durable);
}

TEST_F(RedisTest, WorksOverAUnixSocket) {
  RedisServer& server = testing::shared_redis();
  RedisOptions o = server.options(prefix_);
  o.unix_socket = server.socket_path();
  o.host = "";
  RedisStorage storage(o);
  std::string id = storage.write(sample_envelope(), 7);
  EXPECT_EQ(RedisStorage(server.options(prefix_)).get(id).timestamp, 7);  // same data over TCP
}

// Found by probing: a lease token that is not a number (written by hand, or by another
// tool) made every claim fail, and the message was attempted again and again; "nan"
// read as a number that no comparison holds, and a message was delivered 4 times in 2
// minutes. A lease that does not read is a lease held by someone unknown: until its
// expiry, or one lease from now when that does not read either.
TEST_F(RedisTest, AGarbledLeaseIsALeaseUntilItExpires) {
  RedisServer& server = testing::shared_redis();
  RedisStorage s(server.options(prefix_));
  for (const char* garbled : {"garbage", "nan", "inf", "-1", "1.5"}) {
    std::string id = s.write(sample_envelope(), 1);
    raw(server, {"HSET", prefix_ + id, "lease_token", garbled, "lease_expires", garbled});
    const auto lease = std::chrono::milliseconds(300);
    ClaimResult first = s.claim(id, lease);
    EXPECT_EQ(first.status, ClaimResult::Status::busy) << garbled;
    EXPECT_EQ(s.claim(id, lease).status, ClaimResult::Status::busy) << garbled;
    ClaimResult c;
    ASSERT_TRUE(testing::eventually([&] {
      c = s.claim(id, std::chrono::seconds(30));
      return c.status == ClaimResult::Status::claimed;
    })) << garbled;
    EXPECT_GE(c.lease.token, 1u);
    // The claim holds: a second one is refused, and the holder's fenced updates work.
    EXPECT_EQ(s.claim(id, std::chrono::seconds(30)).status, ClaimResult::Status::busy);
    Fence f{c.lease.token};
    EXPECT_EQ(s.increment_attempts(id, f), 1u);
    s.release(id, f);
    EXPECT_EQ(s.claim(id, std::chrono::seconds(30)).status, ClaimResult::Status::claimed);
  }
}

TEST_F(RedisTest, MalformedNotificationsAreSkippedAndWaitCarriesOn) {
  RedisServer& server = testing::shared_redis();
  RedisStorage waiter(server.options(prefix_));
  waiter.wait(std::chrono::milliseconds(1));  // starts reading from here
  raw(server, {"XADD", prefix_ + ".notify", "*", "id", "../../etc", "timestamp", "1"});
  raw(server, {"XADD", prefix_ + ".notify", "*", "id", "0123456789abcdef0123456789abcdef",
               "timestamp", "soon"});
  raw(server, {"XADD", prefix_ + ".notify", "*", "nothing", "useful"});
  RedisStorage writer(server.options(prefix_));
  std::string id = writer.write(sample_envelope(), 7);
  std::vector<QueueEntry> seen;
  ASSERT_NO_THROW(seen = waiter.wait(std::chrono::milliseconds(2000)));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].id, id);
}

TEST_F(RedisTest, UpdatesOfAMissingIdCreateNothing) {
  RedisServer& server = testing::shared_redis();
  RedisStorage storage(server.options(prefix_));
  const size_t idx[] = {0};
  EXPECT_THROW(storage.set_timestamp("missing1", 5), KeyError);
  EXPECT_THROW(storage.increment_attempts("missing1"), KeyError);
  EXPECT_THROW(storage.set_recipients_delivered("missing1", idx), KeyError);
  EXPECT_EQ(raw(server, {"EXISTS", prefix_ + "missing1"})->integer, 0);
}

TEST_F(RedisTest, AMessageIsOneHashInTheSharedFormat) {
  RedisServer& server = testing::shared_redis();
  RedisStorage storage(server.options(prefix_));
  std::string id = storage.write(sample_envelope(3), 1234.5);
  storage.increment_attempts(id);
  const size_t idx[] = {2, 0};
  storage.set_recipients_delivered(id, idx);
  auto r = raw(server, {"HMGET", prefix_ + id, "timestamp", "attempts", "delivered", "recipients"});
  EXPECT_EQ(std::string(r->element[0]->str), "1234.5");
  EXPECT_EQ(std::string(r->element[1]->str), "1");
  EXPECT_EQ(std::string(r->element[2]->str), "0,2");
  EXPECT_EQ(std::string(r->element[3]->str), "3");
  auto rec = raw(server, {"HGET", prefix_ + id, "record"});
  EXPECT_EQ(std::string(rec->str, 6), "SLMTAQ");
  EXPECT_EQ(raw(server, {"XLEN", prefix_ + ".notify"})->integer, 1);
}

// Messages stored by a version without the index (or whose member was lost) are put back
// by a repair pass over SCAN pages; members that name no message are dropped by the first
// script that finds them so.
TEST_F(RedisTest, TheDueIndexIsRepairedBySweepingAndCleanedOfWhatNamesNoMessage) {
  RedisServer& server = testing::shared_redis();
  RedisStorage storage(server.options(prefix_));
  std::string index = prefix_ + ".due";
  std::set<std::string> written;
  for (int i = 0; i < 2500; ++i) written.insert(storage.write(sample_envelope(1, 10, i), 10 + i));
  std::string held = storage.write(sample_envelope(), 5);
  storage.hold(held, "x", 1);
  EXPECT_EQ(raw(server, {"ZCARD", index})->integer, 2500);
  EXPECT_EQ(raw(server, {"ZSCORE", index, prefix_ + *written.begin()})->type, REDIS_REPLY_STRING);
  raw(server, {"DEL", index});  // as an older version left it
  std::string gone = "0123456789abcdef0123456789abcdef";
  raw(server, {"ZADD", index, "1", prefix_ + gone});
  raw(server, {"ZADD", index, "2", prefix_ + "../not-an-id"});
  std::string cursor;
  size_t repaired = 0, steps = 0;
  do {
    repaired += storage.repair_due(cursor);
    ++steps;
  } while (!cursor.empty());
  EXPECT_EQ(repaired, 2500u);  // not the held one
  EXPECT_GT(steps, 1u);
  auto first = storage.due(1e9, 2, std::chrono::seconds(60));
  ASSERT_EQ(first.size(), 1u);  // the garbage member dropped, with a warning
  EXPECT_EQ(first[0].id, gone);
  EXPECT_EQ(raw(server, {"ZSCORE", index, prefix_ + "../not-an-id"})->type, REDIS_REPLY_NIL);
  EXPECT_THROW(storage.claim(gone, std::chrono::seconds(30)), KeyError);
  EXPECT_EQ(raw(server, {"ZSCORE", index, prefix_ + gone})->type, REDIS_REPLY_NIL);
  std::set<std::string> due;
  for (const auto& e : storage.due(1e9, 5000, std::chrono::seconds(60))) due.insert(e.id);
  EXPECT_EQ(due, written);
}

TEST_F(RedisTest, LoadIgnoresOtherPrefixesAndKeysThatAreNotMessages) {
  RedisServer& server = testing::shared_redis();
  RedisStorage storage(server.options(prefix_));
  RedisStorage other(server.options("other" + prefix_));
  std::string mine = storage.write(sample_envelope(), 1);
  other.write(sample_envelope(), 2);
  raw(server, {"SET", prefix_ + "astring", "x"});
  raw(server, {"HSET", prefix_ + "ahash", "field", "value"});
  raw(server, {"HSET", prefix_ + "bad-ts", "record", "x", "recipients", "1", "timestamp", "soon"});
  auto stream = storage.load();
  std::vector<QueueEntry> got;
  while (auto e = stream->next()) got.push_back(*e);
  EXPECT_EQ(got, (std::vector<QueueEntry>{{1, mine}}));
  EXPECT_EQ(stream->corrupt(), 1u);  // the message-like hash with an unreadable timestamp
}

TEST_F(RedisTest, LoadStreamsThousandsOfMessagesAcrossScanPages) {
  RedisServer& server = testing::shared_redis();
  RedisStorage storage(server.options(prefix_));
  std::set<std::string> written;
  for (int i = 0; i < 3000; ++i) written.insert(storage.write(sample_envelope(1, 10, i), i));
  std::set<std::string> loaded;
  auto stream = storage.load();
  while (auto e = stream->next()) EXPECT_TRUE(loaded.insert(e->id).second) << e->id;
  EXPECT_EQ(loaded, written);
}

TEST_F(RedisTest, NotificationStreamStaysBounded) {
  RedisServer& server = testing::shared_redis();
  RedisOptions o = server.options(prefix_);
  o.notify_max_len = 100;
  RedisStorage storage(o);
  for (int i = 0; i < 2000; ++i) storage.write(sample_envelope(1, 10, i), i);
  EXPECT_LT(raw(server, {"XLEN", prefix_ + ".notify"})->integer, 400);
}

TEST_F(RedisTest, WaitReportsEverythingWhenUnreadNotificationsWereTrimmed) {
  RedisServer& server = testing::shared_redis();
  RedisOptions o = server.options(prefix_);
  o.notify_max_len = 10;
  RedisStorage waiter(o);
  RedisStorage writer(o);
  EXPECT_TRUE(waiter.load_all().empty());
  std::set<std::string> written;
  for (int i = 0; i < 500; ++i) written.insert(writer.write(sample_envelope(1, 10, i), i));
  std::set<std::string> seen;
  for (const auto& e : waiter.wait(std::chrono::milliseconds(2000))) seen.insert(e.id);
  EXPECT_EQ(seen, written);
}

TEST_F(RedisTest, WaitDoesNotReportTheObjectsOwnWrites) {
  RedisServer& server = testing::shared_redis();
  RedisStorage a(server.options(prefix_));
  RedisStorage b(server.options(prefix_));
  EXPECT_TRUE(a.wait(std::chrono::milliseconds(10)).empty());
  a.write(sample_envelope(), 1);
  std::string theirs = b.write(sample_envelope(), 2);
  EXPECT_EQ(a.wait(std::chrono::milliseconds(2000)), (std::vector<QueueEntry>{{2, theirs}}));
}

TEST_F(RedisTest, WaitOutlastsTheSocketTimeout) {
  RedisServer& server = testing::shared_redis();
  RedisOptions o = server.options(prefix_);
  o.socket_timeout = 0.2;  // shorter than the wait: the wait must not fail because of it
  RedisStorage waiter(o);
  EXPECT_TRUE(waiter.wait(std::chrono::milliseconds(700)).empty());
  RedisStorage(o).write(sample_envelope(), 3);
  EXPECT_EQ(waiter.wait(std::chrono::milliseconds(700)).size(), 1u);
}

TEST_F(RedisTest, ScriptsSurviveAScriptFlush) {
  RedisServer& server = testing::shared_redis();
  RedisStorage storage(server.options(prefix_));
  std::string id = storage.write(sample_envelope(), 1);
  raw(server, {"SCRIPT", "FLUSH"});
  EXPECT_EQ(storage.increment_attempts(id), 1u);  // NOSCRIPT -> EVAL
}

// A caller that stops reading at an error reply leaves the replies after it on the
// connection: reused, it would hand them to the next caller as answers to its commands.
TEST_F(RedisTest, AConnectionWithRepliesLeftUnreadIsNotReused) {
  redis::Connection c(testing::shared_redis().options(prefix_));
  c.append({"PING"});
  c.append({"ECHO", "second"});
  c.read_reply();
  EXPECT_TRUE(c.broken()) << "one reply unread";
  EXPECT_EQ(redis::reply_string(c.read_reply().get(), "ECHO"), "second");
  EXPECT_FALSE(c.broken());
  redis::Pool pool(testing::shared_redis().options(prefix_));
  EXPECT_THROW(pool.run(true,
                        [](redis::Connection& conn) {
                          conn.append({"INCR", "not-a-number-key", "extra"});  // an error
                          conn.append({"ECHO", "late"});
                          return conn.read_reply();
                        }),
               QueueError);
  // The next call gets its own answer, not "late".
  redis::Reply r = pool.run(true, [](redis::Connection& conn) {
    return conn.command({"ECHO", "mine"});
  });
  EXPECT_EQ(redis::reply_string(r.get(), "ECHO"), "mine");
}

TEST_F(RedisTest, ConnectionRefusedIsRetryableAndNamesTheServer) {
  int port;
  {
    RedisServer server;
    port = server.port();
  }
  RedisOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.socket_timeout = 2;
  RedisStorage storage(o);
  try {
    storage.write(sample_envelope(), 1);
    FAIL() << "wrote to a stopped server";
  } catch (const QueueError& e) {
    EXPECT_TRUE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)), std::string::npos)
        << e.what();
  }
}

TEST_F(RedisTest, BadCredentialsAndBadDbAreClearAndNotRetryable) {
  RedisServer& server = testing::shared_redis_with_password();
  auto error_of = [](RedisOptions o) -> std::pair<std::string, bool> {
    try {
      RedisStorage(o).get("abc");
    } catch (const KeyError&) {
      return {"KeyError", false};
    } catch (const QueueError& e) {
      return {e.what(), e.retryable()};
    }
    return {"no error", false};
  };
  RedisOptions wrong = server.options(prefix_);
  wrong.password = "hunter2-not-it";
  auto [msg1, retry1] = error_of(wrong);
  EXPECT_NE(msg1.find("authentication failed"), std::string::npos) << msg1;
  EXPECT_FALSE(retry1);
  EXPECT_EQ(msg1.find("hunter2"), std::string::npos) << "the password must not be shown: " << msg1;

  RedisOptions none = server.options(prefix_);
  none.password.reset();
  auto [msg2, retry2] = error_of(none);
  EXPECT_NE(msg2.find("authentication"), std::string::npos) << msg2;
  EXPECT_FALSE(retry2);

  RedisOptions bad_db = server.options(prefix_, 99);
  auto [msg3, retry3] = error_of(bad_db);
  EXPECT_NE(msg3.find("db"), std::string::npos) << msg3;
  EXPECT_FALSE(retry3);

  EXPECT_EQ(error_of(server.options(prefix_)).first, "KeyError");
}

// An ACL user allowed RedisStorage::acl_rule(P) works on P (the conformance suite runs
// whole on such a user) and nowhere else, and cannot do what the rule leaves out.
TEST_F(RedisTest, AnAclUserIsHeldToItsPrefixAndTheRule) {
  RedisServer& server = testing::shared_redis();
  RedisOptions mine = testing::as_acl_user(server, server.options(prefix_));
  std::string user = *mine.username;
  RedisStorage storage(mine);
  std::string id = storage.write(testing::sample_envelope(), 1);
  EXPECT_EQ(storage.load_all().size(), 1u);
  EXPECT_FALSE(storage.capabilities().durable) << "CONFIG is not in the rule: unknown";

  RedisOptions other = mine;
  other.prefix = "elsewhere" + random_hex(4) + ":";
  try {
    RedisStorage(other).write(testing::sample_envelope(), 1);
    ADD_FAILURE() << "wrote under another prefix";
  } catch (const QueueError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("user " + user), std::string::npos) << what;
    EXPECT_NE(what.find("may not do this (NOPERM"), std::string::npos) << what;
    EXPECT_NE(what.find("acl_rule"), std::string::npos) << what;
    EXPECT_FALSE(e.retryable());
  }
  redis::Connection c(mine);
  for (std::vector<std::string_view> cmd : {std::vector<std::string_view>{"FLUSHDB"},
                                            {"CONFIG", "SET", "appendonly", "no"},
                                            {"KEYS", "*"},
                                            {"FUNCTION", "FLUSH"}}) {
    redis::Reply r = c.command(cmd, /*allow_error=*/true);
    ASSERT_EQ(r->type, REDIS_REPLY_ERROR) << cmd[0] << " was allowed";
    EXPECT_TRUE(std::string_view(r->str, r->len).starts_with("NOPERM")) << r->str;
  }

  // doc/redis.md gives the same rule, for the default prefix.
  std::string doc = testing::read_file(std::string(SLIMTA_SOURCE_DIR) + "/doc/redis.md");
  EXPECT_NE(doc.find("ACL SETUSER slimta reset on >PASSWORD " + RedisStorage::acl_rule("slimta:")),
            std::string::npos)
      << "doc/redis.md and RedisStorage::acl_rule() differ";

  RedisOptions wrong = mine;
  wrong.password = "not-it";
  try {
    RedisStorage(wrong).get(id);
    ADD_FAILURE() << "a wrong password was taken";
  } catch (const QueueError& e) {
    EXPECT_NE(std::string(e.what()).find("user " + user + ": authentication failed"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(std::string(e.what()).find("not-it"), std::string::npos) << e.what();
  }
}

// rediss:// checks who it talks to: a certificate from another CA, or for another
// name, is refused, not retried, and says why; a plain client on the TLS port and a
// TLS client on the plain port fail clearly.
TEST_F(RedisTest, TlsVerifiesTheServerAndNamesWhatIsWrong) {
  RedisServer& server = testing::shared_redis_tls();
  RedisOptions good = server.options(prefix_);
  good.port = server.tls_port();
  good.tls = true;
  good.tls_ca_file = testing::shared_redis_tls_cert();
  RedisStorage storage(good);
  std::string id = storage.write(testing::sample_envelope(), 1);
  EXPECT_EQ(storage.get(id).envelope.sender, testing::sample_envelope().sender);
  // With a client certificate as well (the server asks for one, optionally).
  RedisOptions with_cert = good;
  with_cert.tls_cert_file = testing::shared_redis_tls_cert();
  with_cert.tls_key_file =
      with_cert.tls_cert_file.substr(0, with_cert.tls_cert_file.size() - 4) + ".key";
  EXPECT_EQ(RedisStorage(with_cert).get(id).attempts, 0u);

  auto error_of = [&](RedisOptions o) -> std::pair<std::string, bool> {
    try {
      RedisStorage(o).get(id);
    } catch (const KeyError&) {
      return {"KeyError", false};
    } catch (const QueueError& e) {
      return {e.what(), e.retryable()};
    }
    return {"no error", false};
  };
  testing::TempDir dir;
  RedisOptions other_ca = good;
  other_ca.tls_ca_file = testing::make_certificate(dir, "other").cert;
  auto [msg1, retry1] = error_of(other_ca);
  EXPECT_NE(msg1.find("rediss 127.0.0.1:"), std::string::npos) << msg1;
  EXPECT_NE(msg1.find("certificate was refused"), std::string::npos) << msg1;
  EXPECT_FALSE(retry1);

  RedisOptions wrong_name = good;
  wrong_name.tls_server_name = "redis.example.net";  // not in the certificate
  auto [msg2, retry2] = error_of(wrong_name);
  EXPECT_NE(msg2.find("certificate was refused"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("mismatch"), std::string::npos) << msg2;
  EXPECT_FALSE(retry2);

  RedisOptions plain_to_tls = server.options(prefix_);
  plain_to_tls.port = server.tls_port();
  auto [msg3, retry3] = error_of(plain_to_tls);
  EXPECT_NE(msg3.find("rediss://"), std::string::npos) << msg3;

  RedisOptions tls_to_plain = good;
  tls_to_plain.port = server.port();
  auto [msg4, retry4] = error_of(tls_to_plain);
  EXPECT_NE(msg4.find("TLS"), std::string::npos) << msg4;
  EXPECT_TRUE(retry4);  // a hiccup as far as we can tell
  std::printf("[ report ] TLS errors:\n  %s\n  %s\n  %s\n  %s\n", msg1.c_str(), msg2.c_str(),
              msg3.c_str(), msg4.c_str());
}

TEST_F(RedisTest, ServerKilledMidWritesThenRestartedLosesNothingAcknowledged) {
  RedisServer server(RedisServer::Config{.password = "", .appendonly = true});
  RedisOptions o = server.options(prefix_);
  o.socket_timeout = 3;
  RedisStorage storage(o);
  std::vector<std::string> acked;
  std::atomic<bool> failed{false};
  std::string error;
  std::thread writer([&] {
    for (int i = 0; i < 100000 && !failed; ++i) {
      try {
        acked.push_back(storage.write(sample_envelope(1, 500, i), i));
      } catch (const QueueError& e) {
        error = e.what();
        EXPECT_TRUE(e.retryable()) << e.what();
        failed = true;
      }
    }
  });
  while (acked.size() < 300 && !failed) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto killed_at = std::chrono::steady_clock::now();
  server.kill();
  writer.join();
  ASSERT_TRUE(failed) << "writes kept succeeding after the server was killed";
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, std::chrono::seconds(3 + 2));
  server.start();
  // The same object works again, and every acknowledged write is there.
  for (const auto& id : acked) ASSERT_NO_THROW(storage.get(id)) << id;
  // The write in flight at the kill may have been stored without being acknowledged.
  size_t stored = storage.load_all().size();
  EXPECT_GE(stored, acked.size());
  EXPECT_LE(stored, acked.size() + 1);
  std::string after = storage.write(sample_envelope(), 1);
  EXPECT_EQ(storage.increment_attempts(after), 1u);
}

TEST_F(RedisTest, AHungServerTimesOutWithARetryableError) {
  RedisServer server;
  RedisOptions o = server.options(prefix_);
  o.socket_timeout = 0.5;
  RedisStorage storage(o);
  std::string id = storage.write(sample_envelope(), 1);
  server.pause();
  auto start = std::chrono::steady_clock::now();
  try {
    storage.get(id);  // read-only, so the hung call leaves nothing behind
    FAIL() << "no error from a hung server";
  } catch (const QueueError& e) {
    EXPECT_TRUE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  // One timeout, or two: get() is retried once on a new connection when a pooled one fails.
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(400));
  EXPECT_LT(took, std::chrono::milliseconds(3000));
  server.resume();
  EXPECT_EQ(storage.get(id).timestamp, 1);  // works again, on a new connection
}

TEST_F(RedisTest, EightThreadsShareOneStorage) {
  RedisServer& server = testing::shared_redis();
  RedisStorage storage(server.options(prefix_));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        std::string id = storage.write(sample_envelope(2, 100, t * 1000 + i), i);
        if (storage.increment_attempts(id) == 1 && storage.get(id).attempts == 1) ++ok;
        if (i % 2) storage.remove(id);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 800);
  EXPECT_EQ(storage.load_all().size(), 400u);
}

TEST_F(RedisTest, AnotherProcessWaitSeesEveryWriteExactlyOnce) {
  RedisOptions o = testing::shared_redis().options(prefix_);
  RedisStorage waiter(o);
  EXPECT_TRUE(waiter.load_all().empty());  // marks the stream position
  auto run = testing::write_in_child_and_wait(
      waiter, [&] { return std::make_unique<RedisStorage>(o); }, 10000,
      std::chrono::milliseconds(500), std::chrono::seconds(120));
  EXPECT_TRUE(run.child_ok);
  ASSERT_EQ(run.written.size(), 10000u);
  EXPECT_EQ(run.seen.size(), 10000u);
  EXPECT_EQ(run.wrong_timestamps, 0u);
  for (const auto& id : run.written) EXPECT_EQ(run.seen[id], 1) << id;
}

}  // namespace
}  // namespace slimta
