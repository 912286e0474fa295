#include "factory/url.h"

#include <gtest/gtest.h>

#include "slimta/disk_storage.h"
#include "slimta/open_storage.h"
#include "slimta/redis_storage.h"
#include "support/test_util.h"

namespace slimta {
namespace {

// parse_redis(url) throws InvalidArgument saying `want`.
void expect_refused(const std::string& url, const std::string& want) {
  try {
    url::parse_redis(url);
    ADD_FAILURE() << url << " was taken";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
}

TEST(UrlTest, RedisUrls) {
  RedisOptions o = url::parse_redis("redis://localhost");
  EXPECT_EQ(o.host, "localhost");
  EXPECT_EQ(o.port, 6379);
  EXPECT_EQ(o.db, 0);
  EXPECT_FALSE(o.password);
  EXPECT_EQ(o.prefix, "slimta:");

  o = url::parse_redis("redis://:p%40ss@10.1.2.3:6380/4?prefix=q%3A&timeout=2.5");
  EXPECT_EQ(o.host, "10.1.2.3");
  EXPECT_EQ(o.port, 6380);
  EXPECT_EQ(o.db, 4);
  EXPECT_EQ(o.password, "p@ss");
  EXPECT_EQ(o.prefix, "q:");
  EXPECT_EQ(o.socket_timeout, 2.5);

  o = url::parse_redis("redis://[::1]:7000");
  EXPECT_EQ(o.host, "::1");
  EXPECT_EQ(o.port, 7000);

  o = url::parse_redis("redis+unix:///run/redis/redis.sock?db=2&password=x");
  EXPECT_EQ(o.unix_socket, "/run/redis/redis.sock");
  EXPECT_EQ(o.db, 2);
  EXPECT_EQ(o.password, "x");
}

TEST(UrlTest, BadRedisUrlsNameTheProblem) {
  auto error = [](const char* u) {
    try {
      url::parse_redis(u);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error("redis://host:notaport").find("host 'host:notaport' is not HOST[:PORT]"),
            std::string::npos);
  EXPECT_NE(error("redis://host/x").find("db 'x'"), std::string::npos);
  EXPECT_NE(error("redis://host?colour=red").find("unknown parameter 'colour'"), std::string::npos);
  EXPECT_NE(error("redis://").find("no host"), std::string::npos);
  EXPECT_NE(error("redis+unix://relative.sock").find("absolute"), std::string::npos);
  EXPECT_NE(error("redis://h?timeout=%zz").find("percent"), std::string::npos);
  EXPECT_NE(error("redis://h?prefix=a&prefix=b").find("twice"), std::string::npos);
}

TEST(UrlTest, AnAclUserComesWithItsPassword) {
  RedisOptions o = url::parse_redis("redis://alice:p%40ss@h:6380/1");
  EXPECT_EQ(o.username, "alice");
  EXPECT_EQ(o.password, "p@ss");
  o = url::parse_redis("redis+unix:///run/r.sock?username=alice&password=x");
  EXPECT_EQ(o.username, "alice");
  EXPECT_EQ(o.password, "x");
  o = url::parse_redis("redis://:pw@h");
  EXPECT_FALSE(o.username);
  for (const char* bad :
       {"redis://h?username=alice", "redis://alice:pw@h?username=bob", "redis://h?username="}) {
    expect_refused(bad, "user");
  }
  EXPECT_EQ(url::redact("redis://alice:pw@h:1/0"), "redis://alice:***@h:1/0");
}

TEST(UrlTest, RedissIsTlsWithItsFiles) {
  RedisOptions o = url::parse_redis(
      "rediss://u:pw@cache.example.net:6380/2?ca=/etc/ca.pem&cert=/c.pem&key=/k.pem"
      "&sni=redis.example.net");
  EXPECT_TRUE(o.tls);
  EXPECT_EQ(o.host, "cache.example.net");
  EXPECT_EQ(o.port, 6380);
  EXPECT_EQ(o.tls_ca_file, "/etc/ca.pem");
  EXPECT_EQ(o.tls_cert_file, "/c.pem");
  EXPECT_EQ(o.tls_key_file, "/k.pem");
  EXPECT_EQ(o.tls_server_name, "redis.example.net");
  EXPECT_FALSE(url::parse_redis("redis://h").tls);
  for (const auto& [bad, want] : std::vector<std::pair<const char*, const char*>>{
           {"redis://h?ca=/etc/ca.pem", "ca= is for TLS: the URL is rediss://"},
           {"rediss://h?cert=/c.pem", "needs both cert= and key="},
           {"rediss://h?ca=", "ca= is empty"}}) {
    expect_refused(bad, want);
  }
}

TEST(UrlTest, SentinelUrlsNameTheSentinelsAndTheMaster) {
  RedisOptions o = url::parse_redis(
      "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380,[::1]:26381/mymaster/3"
      "?sentinel-password=spw&min-replicas-ack=1&ack-timeout=0.5&prefix=q:");
  ASSERT_EQ(o.sentinels.size(), 3u);
  EXPECT_EQ(o.sentinels[0].host, "10.0.0.1");
  EXPECT_EQ(o.sentinels[0].port, 26379);
  EXPECT_EQ(o.sentinels[1].host, "10.0.0.2");
  EXPECT_EQ(o.sentinels[1].port, 26380);
  EXPECT_EQ(o.sentinels[2].host, "::1");
  EXPECT_EQ(o.sentinels[2].port, 26381);
  EXPECT_EQ(o.sentinel_master, "mymaster");
  EXPECT_EQ(o.db, 3);
  EXPECT_EQ(o.password, "pw");
  EXPECT_EQ(o.sentinel_password, "spw");
  EXPECT_EQ(o.min_replicas_ack, 1);
  EXPECT_EQ(o.ack_timeout, 0.5);
  EXPECT_EQ(o.prefix, "q:");
  o = url::parse_redis("redis+sentinel://s1/m");
  EXPECT_EQ(o.db, 0);
  EXPECT_FALSE(o.sentinel_password);
  EXPECT_EQ(url::parse_redis("redis://h?min-replicas-ack=2").min_replicas_ack, 2);
  EXPECT_EQ(url::parse_redis("redis://h").min_replicas_ack, 0);
  EXPECT_EQ(url::parse_redis("redis://h?resolve-timeout=2.5").resolve_timeout, 2.5);
  EXPECT_FALSE(url::parse_redis("redis://h").resolve_timeout);  // the socket timeout
  for (const auto& [bad, want] : std::vector<std::pair<const char*, const char*>>{
           {"redis+sentinel://s1", "no master name"},
           {"redis+sentinel://s1/", "no master name"},
           {"redis+sentinel://s1,/m", "no host"},
           {"redis+sentinel://s1:x/m", "host 's1:x' is not HOST[:PORT]"},
           {"redis+sentinel://s1/m/x", "db 'x' is not a number"},
           {"redis://h?sentinel-password=x", "sentinel-password= is for redis+sentinel://"},
           {"redis://h?min-replicas-ack=one", "min-replicas-ack 'one' is not a number"},
           {"redis://h?ack-timeout=0", "ack-timeout must be more than 0"},
           {"redis://h?resolve-timeout=-1", "resolve-timeout must be 0 seconds or more"}}) {
    expect_refused(bad, want);
  }
  try {
    RedisOptions negative;
    negative.min_replicas_ack = -1;
    RedisStorage storage(negative);
    ADD_FAILURE() << "min_replicas_ack -1 was taken";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("min_replicas_ack -1 is negative"), std::string::npos);
  }
}

TEST(UrlTest, ClusterUrlsNameItsNodes) {
  RedisOptions o =
      url::parse_redis("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2?notify-shards=8&prefix=q:");
  ASSERT_EQ(o.cluster_nodes.size(), 2u);
  EXPECT_EQ(o.cluster_nodes[0].host, "10.0.0.1");
  EXPECT_EQ(o.cluster_nodes[0].port, 7000);
  EXPECT_EQ(o.cluster_nodes[1].host, "10.0.0.2");
  EXPECT_EQ(o.cluster_nodes[1].port, 6379);
  EXPECT_EQ(o.notify_shards, 8u);
  EXPECT_EQ(o.password, "pw");
  EXPECT_EQ(o.prefix, "q:");
  EXPECT_EQ(url::parse_redis("redis+cluster://h/0").db, 0);
  EXPECT_EQ(o.due_slots, 0u);  // no index unless asked for
  EXPECT_EQ(url::parse_redis("redis+cluster://h?due-slots=64").due_slots, 64u);
  EXPECT_EQ(url::parse_redis("redis+cluster://h?due-slots=16384").due_slots, 16384u);
  for (const auto& [bad, want] : std::vector<std::pair<const char*, const char*>>{
           {"redis+cluster://h/1", "a cluster has only db 0"},
           {"redis+cluster://h,/", "no host"},
           {"redis://h?notify-shards=4", "notify-shards= is for redis+cluster://"},
           {"redis+cluster://h?notify-shards=x", "notify-shards 'x' is not a number"},
           {"redis://h?due-slots=64", "due-slots= is for redis+cluster://"},
           {"redis+cluster://h?due-slots=48", "due-slots 48 is not a power of two"},
           {"redis+cluster://h?due-slots=0", "due-slots 0 is not a power of two"},
           {"redis+cluster://h?due-slots=32768", "due-slots 32768 is not a power of two"}}) {
    expect_refused(bad, want);
  }
}

TEST(UrlTest, ErrorsNeverShowThePassword) {
  auto error = [](const std::string& u) {
    try {
      open_storage(u);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  for (const std::string u :
       {"redis://:s3cret@host:notaport", "redis://s3cret@host/x", "redis://h?password=s3cret&db=x",
        "redis+unix:///r.sock?password=s3cret&colour=red", "redis://:s3cret@h?password=s3cret"}) {
    std::string e = error(u);
    EXPECT_EQ(e.find("s3cret"), std::string::npos) << e;
    EXPECT_NE(e.find("***"), std::string::npos) << e;
  }
  EXPECT_EQ(url::redact("redis://:pw@h:1/0?prefix=p&password=pw2&timeout=1"),
            "redis://:***@h:1/0?prefix=p&password=***&timeout=1");
  EXPECT_EQ(url::redact("redis://h:1/0?prefix=password=x"), "redis://h:1/0?prefix=password=x");
  EXPECT_EQ(url::redact("redis+sentinel://:pw@s1,s2:1/m?sentinel-password=spw&db=1"),
            "redis+sentinel://:***@s1,s2:1/m?sentinel-password=***&db=1");
  EXPECT_EQ(url::redact("disk:/var/spool/a@b"), "disk:/var/spool/a@b");
}

TEST(UrlTest, APasswordFileKeepsThePasswordOutOfTheUrl) {
  testing::TempDir dir;
  testing::write_file(dir.sub("pw"), "from file\n");
  RedisOptions o = url::parse_redis("redis://h/0?password-file=" + dir.sub("pw"));
  EXPECT_EQ(o.password, "from file");
  EXPECT_THROW(url::parse_redis("redis://h/0?password-file=" + dir.sub("missing")),
               InvalidArgument);
  EXPECT_THROW(url::parse_redis("redis://h/0?password=x&password-file=" + dir.sub("pw")),
               InvalidArgument);
}

TEST(UrlTest, ADefaultTimeoutAppliesWhenTheUrlGivesNone) {
  EXPECT_EQ(url::parse_redis("redis://h", 10.0).socket_timeout, 10.0);
  EXPECT_EQ(url::parse_redis("redis://h?timeout=2", 10.0).socket_timeout, 2.0);
  EXPECT_FALSE(url::parse_redis("redis://h").socket_timeout);
}

TEST(UrlTest, OpenStorageBuildsARedisStorage) {
  auto s = open_storage("redis://127.0.0.1:1/3?prefix=x:");
  auto* r = dynamic_cast<RedisStorage*>(s.get());
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->options().db, 3);
  EXPECT_EQ(r->options().prefix, "x:");
  EXPECT_THROW(open_storage("redis://127.0.0.1:0"), InvalidArgument);
}

}  // namespace
// The free-space guard belongs to the disk storage: its URL's min-free= (or the
// caller's default) makes write() refuse with StorageFull and has_room() say so.
TEST(UrlTest, ADiskUrlTakesItsFreeSpaceGuard) {
  testing::TempDir dir;
  Envelope env;
  env.sender = "a@example.com";
  env.recipients = {"b@example.org"};
  env.parse("Subject: s\r\n\r\nx\r\n");
  auto plain = open_storage("disk:" + dir.sub("a"));
  EXPECT_EQ(plain->kind(), "disk");
  EXPECT_TRUE(plain->has_room(1000));
  EXPECT_FALSE(plain->write(env, 0).empty());

  auto full = open_storage("disk:" + dir.sub("b") + "?min-free=100%");
  EXPECT_FALSE(full->has_room(0));
  EXPECT_THROW(full->write(env, 0), StorageFull);
  EXPECT_TRUE(full->load_all().empty());
  // The URL's guard wins over the caller's default; the default applies without one.
  OpenOptions o;
  o.min_free = "100%";
  EXPECT_TRUE(open_storage("disk:" + dir.sub("c") + "?min-free=none", o)->has_room(0));
  EXPECT_FALSE(open_storage("disk:" + dir.sub("d"), o)->has_room(0));
  o.min_free = "1K";
  EXPECT_TRUE(open_storage("disk:" + dir.sub("e"), o)->has_room(0));

  for (std::string bad : {"?min-free=lots", "?min-free=101%", "?min-free=-1", "?size=3"}) {
    try {
      open_storage("disk:" + dir.sub("f") + bad);
      ADD_FAILURE() << bad << " was taken";
    } catch (const InvalidArgument& e) {
      std::string what = e.what();
      EXPECT_TRUE(what.find("min-free") != std::string::npos ||
                  what.find("unknown parameter 'size'") != std::string::npos)
          << what;
    }
  }
  EXPECT_EQ(MinFree::parse("2M").of(1e12), 2.0 * 1024 * 1024);
  EXPECT_EQ(MinFree::parse("10%").of(1000), 100);
  EXPECT_EQ(MinFree::parse("").of(1000), 50);                    // 5% ...
  EXPECT_EQ(MinFree::parse("").of(1e12), 1024.0 * 1024 * 1024);  // ... or 1 GiB
  EXPECT_EQ(MinFree::parse("none").of(1e12), 0);
}

TEST(UrlTest, AnS3UrlsStaleAfterAndQueuesAreChecked) {
  auto error = [](const char* u) {
    try {
      open_storage(u);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    } catch (const QueueError&) {  // no credentials here: the URL itself was fine
    }
    return std::string("no error");
  };
  EXPECT_NE(error("s3://bucket?stale-after=0").find("stale-after must be more than 0"),
            std::string::npos);
  EXPECT_NE(error("s3://bucket?stale-after=soon").find("stale-after"), std::string::npos);
  // A good one is taken (it fails later, for want of credentials, not of stale-after).
  EXPECT_EQ(error("s3://bucket?stale-after=600"), "no error");
  EXPECT_EQ(error("s3://bucket?resolve-timeout=5"), "no error");
  EXPECT_NE(error("s3://bucket?resolve-timeout=-1").find("resolve-timeout must be 0 seconds"),
            std::string::npos);
  // sqs=: one queue or several, each once.
  EXPECT_NE(error("s3://bucket?sqs=a,,b").find("an empty queue in sqs="), std::string::npos);
  EXPECT_NE(error("s3://bucket?sqs=a,").find("an empty queue in sqs="), std::string::npos);
  EXPECT_NE(error("s3://bucket?sqs=a,b,a").find("queue 'a' is named twice"), std::string::npos);
  EXPECT_EQ(error("s3://bucket?sqs=a,b"), "no error");
}

}  // namespace slimta
