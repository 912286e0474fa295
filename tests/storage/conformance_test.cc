// One conformance suite for every QueueStorage backend: each row of the contract in
// include/slimta/storage.h (and DESIGN.md) is a test here. A backend joins by adding a
// Backend entry to kBackends.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <latch>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "slimta/cloud_storage.h"
#include "slimta/disk_storage.h"
#include "slimta/memory_storage.h"
#include "slimta/redis_storage.h"
#include "support/moto_server.h"
#include "support/redis_server.h"
#include "support/stall_proxy.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::sample_envelope;
using testing::TempDir;
using namespace std::chrono_literals;

// One test's storage location. open() may be called several times: every object it
// returns uses the same location (for backends where capabilities().shared).
// Leases read the time from clock() where the backend takes a Clock (a ManualClock
// that the lease tests move instead of sleeping); Redis leases run on the server's
// clock, so there the tests sleep.
class Location {
 public:
  virtual ~Location() = default;
  virtual std::unique_ptr<QueueStorage> open() = 0;
  virtual ManualClock* clock() { return nullptr; }
  // For the rows on answers lost or late: a StallProxy in front of the location's server,
  // and a storage on the location reached through it, waiting `timeout` s for an answer
  // and resolving an unanswered write for up to `resolve` s. nullptr where the storage
  // has no network (a local write's outcome is always known) or where the server's
  // address comes from the servers themselves (sentinel, cluster: tests/redis pause those).
  virtual std::unique_ptr<testing::StallProxy> proxy() { return nullptr; }
  virtual std::unique_ptr<QueueStorage> open_through(const testing::StallProxy&, double timeout,
                                                     double resolve) {
    (void)timeout, (void)resolve;
    return nullptr;
  }
};

class MemoryLocation : public Location {
 public:
  std::unique_ptr<QueueStorage> open() override { return std::make_unique<MemoryStorage>(clock_); }
  ManualClock* clock() override { return &clock_; }

 private:
  ManualClock clock_{system_clock().now()};
};

class DiskLocation : public Location {
 public:
  std::unique_ptr<QueueStorage> open() override {
    DiskOptions options;
    options.clock = &clock_;
    return std::make_unique<DiskStorage>(dir_.sub("spool"), options);
  }
  ManualClock* clock() override { return &clock_; }

 private:
  TempDir dir_;
  ManualClock clock_{system_clock().now()};
};

// A RedisStorage on these options (each location with a fresh key prefix, on servers
// the tests start).
class RedisLocation : public Location {
 public:
  explicit RedisLocation(RedisOptions options) : options_(std::move(options)) {}
  std::unique_ptr<QueueStorage> open() override { return std::make_unique<RedisStorage>(options_); }
  std::unique_ptr<testing::StallProxy> proxy() override {
    if (!options_.sentinels.empty() || !options_.cluster_nodes.empty()) return nullptr;
    return std::make_unique<testing::StallProxy>(options_.host, options_.port);
  }
  std::unique_ptr<QueueStorage> open_through(const testing::StallProxy& proxy, double timeout,
                                             double resolve) override {
    RedisOptions o = options_;
    if (o.tls && o.tls_server_name.empty()) o.tls_server_name = o.host;
    o.host = "127.0.0.1";
    o.port = proxy.port();
    o.socket_timeout = timeout;
    o.resolve_timeout = resolve;
    return std::make_unique<RedisStorage>(o);
  }

 private:
  RedisOptions options_;
};

std::string fresh_prefix(const std::string& kind) { return kind + random_hex(4) + ":"; }

// The shared TLS redis-server, over rediss:// (certificate verified against its CA, host
// name checked).
RedisOptions rediss_options() {
  RedisOptions o = testing::shared_redis_tls().options(fresh_prefix("tls"), 0);
  o.port = testing::shared_redis_tls().tls_port();
  o.tls = true;
  o.tls_ca_file = testing::shared_redis_tls_cert();
  return o;
}

// The shared master + replica, found through its sentinel, every change acknowledged by
// the replica (min-replicas-ack=1).
RedisOptions sentinel_options() {
  RedisOptions o = testing::shared_redis_sentinel().options(fresh_prefix("sen"));
  o.min_replicas_ack = 1;
  return o;
}

// A fresh prefix in a bucket, and a fresh SQS queue, on a shared moto_server.
class CloudLocation : public Location {
 public:
  CloudLocation() : server_(testing::shared_moto()), prefix_("conf" + random_hex(4) + "/") {
    static bool bucket_made = false;
    if (!bucket_made) server_.create_bucket("conformance");
    bucket_made = true;
    queue_url_ = server_.create_queue("q" + random_hex(6));
  }
  std::unique_ptr<QueueStorage> open() override {
    return std::make_unique<CloudStorage>(
        SimpleStorageService("conformance", 30, prefix_, server_.aws()),
        SimpleQueueService(queue_url_, 30, 0.1, server_.aws()), clock_);
  }
  std::unique_ptr<testing::StallProxy> proxy() override {
    std::string endpoint = server_.aws().endpoint;  // http://127.0.0.1:PORT
    return std::make_unique<testing::StallProxy>(
        "127.0.0.1", std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
  }
  // S3 through the proxy, SQS straight.
  std::unique_ptr<QueueStorage> open_through(const testing::StallProxy& proxy, double timeout,
                                             double resolve) override {
    AwsOptions through = server_.aws();
    through.endpoint = "http://127.0.0.1:" + std::to_string(proxy.port());
    return std::make_unique<CloudStorage>(
        SimpleStorageService("conformance", timeout, prefix_, through),
        SimpleQueueService(queue_url_, 30, 0.1, server_.aws()), clock_, 7200, resolve);
  }
  ManualClock* clock() override { return &clock_; }

 private:
  ManualClock clock_{system_clock().now()};
  testing::MotoServer& server_;
  std::string prefix_;
  std::string queue_url_;
};

struct Backend {
  const char* name;
  std::unique_ptr<Location> (*make)();
  bool needs_redis = false;
  bool needs_moto = false;
  // Whether destinations() of two objects on one location share their state.
  bool shared_destinations = false;
  // Whether its due index follows the real clock only (SQS delays and visibility), so
  // that the rows below, which ask it at made-up times, do not apply: tests/cloud/
  // due_index_test.cc checks the same promises in real time.
  bool real_time_index = false;
  // Whether stats() answers (else it must say nullopt).
  bool keeps_stats = false;
};

const Backend kBackends[] = {
    {"memory", [] { return std::unique_ptr<Location>(new MemoryLocation); }, false, false, false,
     false, true},
    {"disk", [] { return std::unique_ptr<Location>(new DiskLocation); }, false, false, true},
    {"redis",
     [] {
       return std::unique_ptr<Location>(
           new RedisLocation(testing::shared_redis().options(fresh_prefix("conf"), 0)));
     },
     true, false, true, false, true},
    {"redis_password_db5",
     [] {
       return std::unique_ptr<Location>(new RedisLocation(
           testing::shared_redis_with_password().options(fresh_prefix("conf"), 5)));
     },
     true, false, true, false, true},
    {"redis_acl_user",
     [] {
       return std::unique_ptr<Location>(new RedisLocation(testing::as_acl_user(
           testing::shared_redis(), testing::shared_redis().options(fresh_prefix("acl"), 0))));
     },
     true, false, true, false, true},
    {"rediss_tls", [] { return std::unique_ptr<Location>(new RedisLocation(rediss_options())); },
     true, false, true, false, true},
    {"redis_sentinel",
     [] { return std::unique_ptr<Location>(new RedisLocation(sentinel_options())); }, true, false,
     true, false, true},
    {"redis_cluster",
     [] {
       return std::unique_ptr<Location>(
           new RedisLocation(testing::shared_redis_cluster().options(fresh_prefix("clu"))));
     },
     true, false, true},
    {"redis_cluster_due_slots",
     [] {
       RedisOptions o = testing::shared_redis_cluster().options(fresh_prefix("cdi"));
       o.due_slots = 16;
       return std::unique_ptr<Location>(new RedisLocation(o));
     },
     true, false, true, false, true},
    {"cloud", [] { return std::unique_ptr<Location>(new CloudLocation); }, false, true, false, true,
     true},
};

class ConformanceTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam().needs_redis && testing::RedisServer::skipped()) {
      GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
    }
    if (GetParam().needs_moto && testing::MotoServer::skipped()) {
      GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
    }
    location_ = GetParam().make();
    storage_ = location_->open();
  }

  // A second object on the same storage where capabilities().shared, else storage_.
  QueueStorage& peer() {
    if (!storage_->capabilities().shared) return *storage_;
    if (!peer_) peer_ = location_->open();
    return *peer_;
  }

  // Lets `d` go by on the leases' clock: moved where it is a ManualClock, else slept.
  void pass(std::chrono::milliseconds d) {
    if (ManualClock* clock = location_->clock()) {
      clock->advance(std::chrono::duration<double>(d).count());
    } else {
      std::this_thread::sleep_for(d);
    }
  }
  // The destinations of a second object where the backend shares them, else storage_'s.
  Destinations& peer_destinations() {
    return GetParam().shared_destinations ? *peer().destinations() : *storage_->destinations();
  }

  // A storage on the location through `proxy` (Location::open_through), its connection
  // made before the test's fault.
  std::unique_ptr<QueueStorage> through(const testing::StallProxy& proxy, double timeout,
                                        double resolve) {
    auto s = location_->open_through(proxy, timeout, resolve);
    EXPECT_TRUE(testing::eventually(
        [&] {  // a short timeout may run out on a loaded machine
          try {
            s->get("warm-up");
          } catch (const KeyError&) {
            return true;
          } catch (const QueueError&) {
          }
          return false;
        },
        60s));
    return s;
  }

  Timestamp now() { return location_->clock() ? location_->clock()->now() : system_clock().now(); }

  std::unique_ptr<Location> location_;
  std::unique_ptr<QueueStorage> storage_;
  std::unique_ptr<QueueStorage> peer_;
};

void expect_same_envelope(const Envelope& want, const Envelope& got) {
  EXPECT_EQ(want.sender, got.sender);
  EXPECT_EQ(want.recipients, got.recipients);
  EXPECT_EQ(want.client, got.client);
  EXPECT_EQ(want.receiver, got.receiver);
  EXPECT_EQ(want.timestamp, got.timestamp);
  EXPECT_EQ(want.flatten(), got.flatten());
}

TEST_P(ConformanceTest, WriteThenGetReturnsTheEnvelopeWithZeroAttempts) {
  Envelope env = sample_envelope(3, 4096);
  std::string id = storage_->write(env, 1234.5);
  EXPECT_TRUE(is_valid_id(id)) << id;
  QueuedMessage got = storage_->get(id);
  expect_same_envelope(env, got.envelope);
  EXPECT_EQ(got.attempts, 0u);
  EXPECT_EQ(got.timestamp, 1234.5);
  EXPECT_TRUE(got.delivered.empty());
  EXPECT_EQ(got.original_recipients, 3u);
}

// stats() counts what is stored, held, and the oldest receipt, as every change leaves
// them (write, hold, release, an unfenced and a fenced remove), seen from another object
// too; a backend that keeps nothing for it says so (nullopt).
TEST_P(ConformanceTest, StatsCountWhatIsStoredHeldAndTheOldest) {
  if (!GetParam().keeps_stats) {
    EXPECT_FALSE(storage_->stats().has_value());
    return;
  }
  ASSERT_EQ(storage_->stats(), QueueStats{});
  std::vector<std::string> ids;
  for (int i = 1; i <= 4; ++i) {
    Envelope env = sample_envelope(1, 64, i);
    env.timestamp = 1000.0 * i;
    ids.push_back(storage_->write(env, now() + 3600));
  }
  EXPECT_EQ(storage_->stats(), (QueueStats{4, 0, 1000}));
  storage_->hold(ids[1], "looked at", now());
  storage_->hold(ids[1], "looked at again", now());  // held once
  storage_->hold(ids[2], "looked at", now());
  EXPECT_EQ(peer().stats(), (QueueStats{4, 2, 1000}));
  storage_->remove(ids[0]);
  EXPECT_EQ(storage_->stats(), (QueueStats{3, 2, 2000}));
  storage_->release_hold(ids[2]);
  ClaimResult claim = storage_->claim(ids[2], std::chrono::seconds(60));
  ASSERT_EQ(claim.status, ClaimResult::Status::claimed);
  storage_->remove(ids[2], Fence{claim.lease.token});
  EXPECT_EQ(storage_->stats(), (QueueStats{2, 1, 2000}));
  storage_->remove(ids[1]);
  storage_->remove(ids[3]);
  EXPECT_EQ(peer().stats(), QueueStats{});
}

TEST_P(ConformanceTest, WriteReturnsADistinctIdEachTime) {
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) ids.insert(storage_->write(sample_envelope(1, 10, i), i));
  EXPECT_EQ(ids.size(), 50u);
}

TEST_P(ConformanceTest, EightBitAndBinaryBodiesSurviveByteForByte) {
  Envelope env;
  env.sender = "";  // the null sender
  env.recipients = {"r@example.org"};
  std::string raw = "Subject: caf\xc3\xa9\r\nX-Bin: \x01\x7f\r\n\r\n";
  for (int i = 0; i < 256; ++i) raw.push_back(static_cast<char>(i));
  raw += "\n.\r\n..\r\n\r\n";
  env.parse(raw);
  QueuedMessage got = storage_->get(storage_->write(env, 0));
  EXPECT_EQ(got.envelope.flatten(), raw);
  EXPECT_EQ(got.envelope.sender, "");
}

TEST_P(ConformanceTest, SetTimestampIsWhatLoadReports) {
  std::string id = storage_->write(sample_envelope(), 100);
  storage_->set_timestamp(id, 250.75);
  EXPECT_EQ(storage_->get(id).timestamp, 250.75);
  auto entries = storage_->load_all();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0], (QueueEntry{250.75, id}));
}

TEST_P(ConformanceTest, SetTimestampOnUnknownIdIsKeyErrorAndCreatesNothing) {
  EXPECT_THROW(storage_->set_timestamp("0123456789abcdef", 5), KeyError);
  EXPECT_TRUE(storage_->load_all().empty());
  EXPECT_THROW(storage_->get("0123456789abcdef"), KeyError);
}

TEST_P(ConformanceTest, IncrementAttemptsCountsUp) {
  std::string id = storage_->write(sample_envelope(), 0);
  EXPECT_EQ(storage_->increment_attempts(id), 1u);
  EXPECT_EQ(storage_->increment_attempts(id), 2u);
  EXPECT_EQ(storage_->increment_attempts(id), 3u);
  EXPECT_EQ(storage_->get(id).attempts, 3u);
}

TEST_P(ConformanceTest, IncrementAttemptsOnUnknownIdIsKeyErrorAndCreatesNothing) {
  EXPECT_THROW(storage_->increment_attempts("nosuchid"), KeyError);
  EXPECT_TRUE(storage_->load_all().empty());
}

TEST_P(ConformanceTest, IncrementAttemptsIsAtomicAcrossThreads) {
  std::string id = storage_->write(sample_envelope(), 0);
  std::vector<uint32_t> seen[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) seen[t].push_back(storage_->increment_attempts(id));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(storage_->get(id).attempts, 2000u);
  std::set<uint32_t> all(seen[0].begin(), seen[0].end());
  all.insert(seen[1].begin(), seen[1].end());
  EXPECT_EQ(all.size(), 2000u) << "two callers got the same count";
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), 2000u);
}

TEST_P(ConformanceTest, DeliveredRecipientsAreLeftOutOfGet) {
  std::string id = storage_->write(sample_envelope(4), 0);
  const size_t first[] = {1, 3};
  storage_->set_recipients_delivered(id, first);
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.envelope.recipients,
            (std::vector<std::string>{"rcpt0@example.org", "rcpt2@example.org"}));
  EXPECT_EQ(got.delivered, (std::vector<size_t>{1, 3}));
  EXPECT_EQ(got.delivered_recipients,
            (std::vector<std::string>{"rcpt1@example.org", "rcpt3@example.org"}));
  EXPECT_EQ(got.remaining_indexes(), (std::vector<size_t>{0, 2}));
}

TEST_P(ConformanceTest, DeliveredIndexesReferToTheOriginalListAndAccumulate) {
  std::string id = storage_->write(sample_envelope(3), 0);
  const size_t first[] = {1};
  storage_->set_recipients_delivered(id, first);
  // Index 2 is the ORIGINAL third recipient, even though get() now lists only two.
  const size_t second[] = {2, 1};
  storage_->set_recipients_delivered(id, second);
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.envelope.recipients, (std::vector<std::string>{"rcpt0@example.org"}));
  EXPECT_EQ(got.delivered, (std::vector<size_t>{1, 2}));
}

// Issue 34, finding 6: a recipient done with is delivered, or failed for good with the
// reply that failed it (bounced or not); a later failure of an index replaces the
// earlier, and a reply is kept byte for byte (8-bit, CR LF and NUL included).
TEST_P(ConformanceTest, FailedRecipientsKeepTheirReplyBesideTheDelivered) {
  std::string id = storage_->write(sample_envelope(4), 0);
  const size_t first[] = {0, 1};
  const RecipientFailure refused[] = {{1, "550 5.1.1 no such user", true}};
  storage_->set_recipients_delivered(id, first, refused);
  const size_t second[] = {3, 1};
  const std::string odd("554 5.7.1 d\xe9j\xe0\r\n\0 vu", 21);
  const RecipientFailure again[] = {{3, "550 5.7.1 go away", false}, {1, odd, true}};
  storage_->set_recipients_delivered(id, second, again);
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.delivered, (std::vector<size_t>{0, 1, 3}));
  EXPECT_EQ(got.failed,
            (std::vector<RecipientFailure>{{1, odd, true}, {3, "550 5.7.1 go away", false}}));
  EXPECT_EQ(got.envelope.recipients, (std::vector<std::string>{"rcpt2@example.org"}));
  // A failure must be one of the recipients marked: refused, nothing changed.
  const size_t two[] = {2};
  const RecipientFailure stray[] = {{0, "550 x", true}};
  EXPECT_THROW(storage_->set_recipients_delivered(id, two, stray), InvalidArgument);
  EXPECT_EQ(storage_->get(id).delivered, (std::vector<size_t>{0, 1, 3}));
  // Fenced, as the queue stores them.
  if (storage_->capabilities().can_lease) {
    Fence fence{storage_->claim(id, std::chrono::seconds(30)).lease.token};
    const RecipientFailure last[] = {{2, "552 5.2.2 mailbox full", true}};
    storage_->set_recipients_delivered(id, two, fence, last);
    storage_->release(id, fence);
    ASSERT_EQ(storage_->get(id).failed.size(), 3u);
    EXPECT_EQ(storage_->get(id).failed[1],  // ascending by index
              (RecipientFailure{2, "552 5.2.2 mailbox full", true}));
  }
}

// Issue 34, finding 6: a pending recipient keeps the reply of its own last attempt
// (each recipient of a message can be deferred for a different reason). The replies a
// set_timestamp gives replace those stored; none given, they stay; a recipient since
// delivered has none; an index out of range is refused with nothing changed.
TEST_P(ConformanceTest, PendingRecipientsKeepTheirOwnLastReply) {
  std::string id = storage_->write(sample_envelope(4), 0);
  ASSERT_TRUE(storage_->capabilities().can_lease);  // the fenced form carries replies
  auto set = [&](Timestamp t, std::string_view last, std::span<const RecipientReply> replies) {
    Fence fence{storage_->claim(id, std::chrono::seconds(30)).lease.token};
    storage_->set_timestamp(id, t, fence, last, replies);
    storage_->release(id, fence);
  };
  const std::string odd("451 4.3.0 d\xe9j\xe0\r\n\0 vu", 21);
  const RecipientReply first[] = {{3, "452 4.2.2 mailbox full"}, {0, odd}, {2, "421 busy"}};
  set(100, "421 busy", first);
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.deferred, (std::vector<RecipientReply>{
                              {0, odd}, {2, "421 busy"}, {3, "452 4.2.2 mailbox full"}}));
  EXPECT_EQ(got.last_reply, "421 busy");
  // None given: they stay.
  set(200, "", {});
  EXPECT_EQ(storage_->get(id).deferred.size(), 3u);
  EXPECT_EQ(storage_->get(id).timestamp, 200);
  // A recipient delivered has none; the next deferral's replies replace the rest.
  const size_t done[] = {2};
  storage_->set_recipients_delivered(id, done);
  EXPECT_EQ(storage_->get(id).deferred,
            (std::vector<RecipientReply>{{0, odd}, {3, "452 4.2.2 mailbox full"}}));
  const RecipientReply second[] = {{0, "450 4.7.1 greylisted"}};
  set(300, "450 4.7.1 greylisted", second);
  EXPECT_EQ(storage_->get(id).deferred, (std::vector<RecipientReply>{{0, "450 4.7.1 greylisted"}}));
  // Out of range: refused, and the time, the last reply and the replies are as they were.
  Fence fence{storage_->claim(id, std::chrono::seconds(30)).lease.token};
  const RecipientReply stray[] = {{1, "451 x"}, {4, "451 y"}};
  EXPECT_THROW(storage_->set_timestamp(id, 400, fence, "451 y", stray), InvalidArgument);
  storage_->release(id, fence);
  got = storage_->get(id);
  EXPECT_EQ(got.timestamp, 300);
  EXPECT_EQ(got.last_reply, "450 4.7.1 greylisted");
  EXPECT_EQ(got.deferred, (std::vector<RecipientReply>{{0, "450 4.7.1 greylisted"}}));
}

TEST_P(ConformanceTest, DeliveredIndexOutOfRangeIsRejectedAndChangesNothing) {
  std::string id = storage_->write(sample_envelope(2), 0);
  const size_t bad[] = {0, 2};
  EXPECT_THROW(storage_->set_recipients_delivered(id, bad), InvalidArgument);
  EXPECT_TRUE(storage_->get(id).delivered.empty());
}

TEST_P(ConformanceTest, SetRecipientsDeliveredOnUnknownIdIsKeyError) {
  const size_t idx[] = {0};
  EXPECT_THROW(storage_->set_recipients_delivered("nosuchid", idx), KeyError);
  EXPECT_TRUE(storage_->load_all().empty());
}

TEST_P(ConformanceTest, ConcurrentDeliveredMarksAreAllKept) {
  std::string id = storage_->write(sample_envelope(40), 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < 40; i += 4) {
        const size_t one[] = {i};
        storage_->set_recipients_delivered(id, one);
      }
    });
  }
  for (auto& t : threads) t.join();
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.delivered.size(), 40u);
  EXPECT_TRUE(got.envelope.recipients.empty());
}

TEST_P(ConformanceTest, LoadReturnsEveryStoredMessageOnce) {
  std::map<std::string, Timestamp> written;
  for (int i = 0; i < 300; ++i)
    written[storage_->write(sample_envelope(1, 100, i), 1000 + i)] = 1000 + i;
  std::map<std::string, Timestamp> loaded;
  auto stream = storage_->load();
  while (auto e = stream->next()) {
    EXPECT_TRUE(loaded.emplace(e->id, e->timestamp).second) << "duplicate " << e->id;
  }
  EXPECT_EQ(loaded, written);
  EXPECT_EQ(stream->corrupt(), 0u);
}

TEST_P(ConformanceTest, LoadOfAnEmptyStorageIsEmpty) { EXPECT_TRUE(storage_->load_all().empty()); }

TEST_P(ConformanceTest, GetUnknownIdIsKeyError) {
  try {
    storage_->get("abc123");
    FAIL() << "no exception";
  } catch (const KeyError& e) {
    EXPECT_EQ(e.id(), "abc123");
    EXPECT_FALSE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("abc123"), std::string::npos);
  }
}

TEST_P(ConformanceTest, RemoveDeletesTheMessage) {
  std::string keep = storage_->write(sample_envelope(), 1);
  std::string id = storage_->write(sample_envelope(), 2);
  storage_->increment_attempts(id);
  storage_->remove(id);
  EXPECT_THROW(storage_->get(id), KeyError);
  EXPECT_THROW(storage_->increment_attempts(id), KeyError);
  EXPECT_THROW(storage_->set_timestamp(id, 3), KeyError);
  auto entries = storage_->load_all();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].id, keep);
}

TEST_P(ConformanceTest, RemoveOfUnknownIdIsNotAnError) {
  EXPECT_NO_THROW(storage_->remove("nosuchid"));
  std::string id = storage_->write(sample_envelope(), 0);
  storage_->remove(id);
  EXPECT_NO_THROW(storage_->remove(id));
}

TEST_P(ConformanceTest, MalformedIdsAreRejectedByEveryMethod) {
  const size_t idx[] = {0};
  for (std::string bad :
       std::vector<std::string>{"../../etc/passwd", "", "a/b", "..", "has space", "x\ny",
                                std::string(65, 'a'), std::string("a\0b", 3)}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(storage_->get(bad), InvalidArgument);
    EXPECT_THROW(storage_->set_timestamp(bad, 1), InvalidArgument);
    EXPECT_THROW(storage_->increment_attempts(bad), InvalidArgument);
    EXPECT_THROW(storage_->set_recipients_delivered(bad, idx), InvalidArgument);
    EXPECT_THROW(storage_->remove(bad), InvalidArgument);
  }
  try {
    storage_->get("../../etc/passwd");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("../../etc/passwd"), std::string::npos) << e.what();
  }
}

TEST_P(ConformanceTest, TwentyMebibyteMessageRoundTrips) {
  Envelope env = sample_envelope(2, 20 << 20, 7);
  std::string id = storage_->write(env, 42);
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.envelope.body.size(), size_t{20} << 20);
  EXPECT_TRUE(got.envelope.body == env.body);
  EXPECT_EQ(got.envelope.flatten().size(), env.flatten().size());
}

TEST_P(ConformanceTest, SharedStorageSeesAnotherObjectsWritesAndUpdates) {
  if (!storage_->capabilities().shared) {
    // Not shared: a second object is a separate, empty storage.
    auto other = location_->open();
    storage_->write(sample_envelope(), 0);
    EXPECT_TRUE(other->load_all().empty());
    return;
  }
  std::string id = storage_->write(sample_envelope(3), 10);
  storage_->increment_attempts(id);
  const size_t idx[] = {0};
  storage_->set_recipients_delivered(id, idx);
  storage_->set_timestamp(id, 20);
  auto other = location_->open();
  QueuedMessage got = other->get(id);
  EXPECT_EQ(got.attempts, 1u);
  EXPECT_EQ(got.timestamp, 20);
  EXPECT_EQ(got.delivered, (std::vector<size_t>{0}));
  EXPECT_EQ(other->increment_attempts(id), 2u);
  EXPECT_EQ(storage_->get(id).attempts, 2u);
  other->remove(id);
  EXPECT_THROW(storage_->get(id), KeyError);
}

TEST_P(ConformanceTest, WaitReportsWritesOfAnotherObject) {
  if (!storage_->capabilities().can_wait) {
    EXPECT_THROW(storage_->wait(std::chrono::milliseconds(10)), NotSupported);
    return;
  }
  auto writer = location_->open();
  EXPECT_TRUE(storage_->wait(std::chrono::milliseconds(50)).empty());
  std::set<std::string> written;
  for (int i = 0; i < 20; ++i) written.insert(writer->write(sample_envelope(1, 100, i), 500 + i));
  std::set<std::string> seen;
  for (int tries = 0; tries < 50 && seen.size() < written.size(); ++tries) {
    for (const auto& e : storage_->wait(std::chrono::milliseconds(200))) {
      EXPECT_TRUE(seen.insert(e.id).second) << "reported twice: " << e.id;
      EXPECT_GE(e.timestamp, 500);
    }
  }
  EXPECT_EQ(seen, written);
}

TEST_P(ConformanceTest, AnnounceReachesTheWaitOfAnotherObject) {
  if (!storage_->capabilities().can_wait) {
    storage_->announce(storage_->write(sample_envelope(1), 1), 1);  // nothing to tell
    return;
  }
  // A message this object wrote (a serve that took it over SMTP), made due by another
  // (an operator's retry): this object's wait() hears of it.
  std::string id = storage_->write(sample_envelope(1), 5000);
  storage_->wait(std::chrono::milliseconds(100));  // whatever the write itself announced
  auto op = location_->open();
  op->set_timestamp(id, 100);
  op->announce(id, 100);
  bool seen = false;
  for (int tries = 0; tries < 25 && !seen; ++tries) {
    for (const auto& e : storage_->wait(std::chrono::milliseconds(200))) {
      if (e.id == id && e.timestamp == 100) seen = true;
    }
  }
  EXPECT_TRUE(seen);
}

TEST_P(ConformanceTest, WaitTimesOutWithNothing) {
  if (!storage_->capabilities().can_wait) {
    EXPECT_THROW(storage_->wait(std::chrono::milliseconds(100)), NotSupported);
    return;
  }
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(storage_->wait(std::chrono::milliseconds(100)).empty());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(90));
}

// --- Leases, holds and counters -------------------------------------------------------

using Status = ClaimResult::Status;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST_P(ConformanceTest, ClaimGrantsIncreasingTokensAndIsBusyWhileHeld) {
  ASSERT_TRUE(storage_->capabilities().can_lease);
  std::string id = storage_->write(sample_envelope(), 1);
  EXPECT_EQ(storage_->get(id).lease.token, 0u);
  ClaimResult first = storage_->claim(id, seconds(30));
  ASSERT_EQ(first.status, Status::claimed);
  EXPECT_EQ(first.lease.token, 1u);
  EXPECT_GT(first.lease.expires, now() + 20);
  ClaimResult busy = peer().claim(id, seconds(30));
  EXPECT_EQ(busy.status, Status::busy);
  EXPECT_EQ(busy.lease.token, 1u);
  EXPECT_EQ(storage_->get(id).lease.token, 1u);
  storage_->release(id, Fence{1});
  EXPECT_EQ(storage_->get(id).lease.expires, 0);
  ClaimResult again = storage_->claim(id, seconds(30));
  ASSERT_EQ(again.status, Status::claimed);
  EXPECT_EQ(again.lease.token, 2u);
  EXPECT_THROW(storage_->release(id, Fence{1}), LeaseLost);
  EXPECT_THROW(storage_->claim("nosuchid", seconds(1)), KeyError);
  EXPECT_THROW(storage_->claim(id, milliseconds(0)), InvalidArgument);
  EXPECT_THROW(storage_->set_timestamp(id, 5, Fence{0}), InvalidArgument);
}

TEST_P(ConformanceTest, FencedMutationsOfTheHolderWork) {
  std::string id = storage_->write(sample_envelope(3), 1);
  Fence fence{storage_->claim(id, seconds(30)).lease.token};
  storage_->set_timestamp(id, 77, fence);
  EXPECT_EQ(storage_->increment_attempts(id, fence), 1u);
  const size_t idx[] = {1};
  storage_->set_recipients_delivered(id, idx, fence);
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.timestamp, 77);
  EXPECT_EQ(got.attempts, 1u);
  EXPECT_EQ(got.delivered, (std::vector<size_t>{1}));
  storage_->remove(id, fence);
  EXPECT_THROW(storage_->get(id), KeyError);
  EXPECT_NO_THROW(storage_->remove(id, fence));  // already gone: not an error
  EXPECT_THROW(storage_->set_timestamp(id, 1, fence), KeyError);
}

TEST_P(ConformanceTest, ADeferralRecordsTheLastReply) {
  std::string id = storage_->write(sample_envelope(1), 1);
  EXPECT_EQ(storage_->get(id).last_reply, "");
  Fence fence{storage_->claim(id, seconds(30)).lease.token};
  storage_->set_timestamp(id, 600, fence, "451 4.2.1 mailbox busy \"now\"");
  QueuedMessage got = storage_->get(id);
  EXPECT_EQ(got.timestamp, 600);
  EXPECT_EQ(got.last_reply, "451 4.2.1 mailbox busy \"now\"");
  storage_->set_timestamp(id, 700, fence);  // without a reply: the last one stays
  EXPECT_EQ(storage_->get(id).last_reply, "451 4.2.1 mailbox busy \"now\"");
  storage_->release(id, fence);
  Fence again{storage_->claim(id, seconds(30)).lease.token};
  EXPECT_THROW(storage_->set_timestamp(id, 800, fence, "stale"), LeaseLost);
  storage_->set_timestamp(id, 800, again, "452 4.2.2 full");
  EXPECT_EQ(storage_->get(id).last_reply, "452 4.2.2 full");
}

TEST_P(ConformanceTest, AnExpiredLeaseIsTakenOverAndItsHolderIsFenced) {
  std::string id = storage_->write(sample_envelope(2), 1);
  QueueStorage* slow = &peer();  // the first holder, on its own object if shared
  ClaimResult a = slow->claim(id, milliseconds(200));
  ASSERT_EQ(a.status, Status::claimed);
  slow->increment_attempts(id, Fence{a.lease.token});  // progress while it holds
  pass(milliseconds(400));
  ClaimResult b = storage_->claim(id, seconds(30));
  ASSERT_EQ(b.status, Status::claimed) << "the lease should have expired";
  EXPECT_EQ(b.lease.token, a.lease.token + 1);
  Fence stale{a.lease.token};
  const size_t idx[] = {0};
  EXPECT_THROW(slow->set_timestamp(id, 999, stale), LeaseLost);
  EXPECT_THROW(slow->increment_attempts(id, stale), LeaseLost);
  EXPECT_THROW(slow->set_recipients_delivered(id, idx, stale), LeaseLost);
  EXPECT_THROW(slow->remove(id, stale), LeaseLost);
  EXPECT_THROW(slow->release(id, stale), LeaseLost);
  try {
    slow->set_timestamp(id, 999, stale);
  } catch (const LeaseLost& e) {
    EXPECT_NE(std::string(e.what()).find(id), std::string::npos) << e.what();
    EXPECT_FALSE(e.retryable());
  }
  QueuedMessage got = storage_->get(id);  // nothing the stale holder tried stuck
  EXPECT_EQ(got.timestamp, 1);
  EXPECT_EQ(got.attempts, 1u);
  EXPECT_TRUE(got.delivered.empty());
  storage_->set_timestamp(id, 50, Fence{b.lease.token});  // the new holder's work stands
  EXPECT_EQ(slow->get(id).timestamp, 50);
}

TEST_P(ConformanceTest, ARenewedLeaseOutlivesItsFirstTermAndOnlyItsHolderRenews) {
  std::string id = storage_->write(sample_envelope(), 1);
  ClaimResult a = peer().claim(id, milliseconds(300));
  ASSERT_EQ(a.status, Status::claimed);
  Fence fence{a.lease.token};
  pass(milliseconds(150));
  Lease renewed = peer().renew(id, fence, seconds(30));
  EXPECT_EQ(renewed.token, a.lease.token);
  EXPECT_GT(renewed.expires, now() + 20);
  pass(milliseconds(400));  // past the first term
  ClaimResult busy = storage_->claim(id, seconds(30));
  EXPECT_EQ(busy.status, Status::busy) << "the renewed lease should still hold";
  EXPECT_EQ(busy.lease.token, a.lease.token);
  EXPECT_EQ(storage_->get(id).lease.token, a.lease.token);

  // Released: not renewed; run out and claimed again: the old holder is fenced.
  peer().release(id, fence);
  EXPECT_THROW(peer().renew(id, fence, seconds(30)), LeaseLost);
  ClaimResult b = storage_->claim(id, milliseconds(200));
  ASSERT_EQ(b.status, Status::claimed);
  pass(milliseconds(400));
  // Run out but not claimed again: its holder may still renew it.
  EXPECT_EQ(storage_->renew(id, Fence{b.lease.token}, seconds(30)).token, b.lease.token);
  EXPECT_EQ(peer().claim(id, seconds(30)).status, Status::busy);
  EXPECT_THROW(peer().renew(id, fence, seconds(30)), LeaseLost);
  EXPECT_THROW(storage_->renew("nosuchid", Fence{1}, seconds(1)), KeyError);
  EXPECT_THROW(storage_->renew(id, Fence{0}, seconds(1)), InvalidArgument);
  EXPECT_THROW(storage_->renew(id, Fence{b.lease.token}, milliseconds(0)), InvalidArgument);
}

TEST_P(ConformanceTest, UnfencedCallsIgnoreLeases) {
  std::string id = storage_->write(sample_envelope(), 1);
  ASSERT_EQ(storage_->claim(id, seconds(30)).status, Status::claimed);
  storage_->set_timestamp(id, 9);
  EXPECT_EQ(storage_->increment_attempts(id), 1u);
  storage_->remove(id);
  EXPECT_THROW(storage_->get(id), KeyError);
}

TEST_P(ConformanceTest, OnlyOneOfManyConcurrentClaimsWins) {
  std::string id = storage_->write(sample_envelope(), 1);
  std::vector<std::unique_ptr<QueueStorage>> objects;
  for (int i = 0; i < 4; ++i)
    objects.push_back(storage_->capabilities().shared ? location_->open()
                                                      : std::unique_ptr<QueueStorage>());
  std::atomic<int> claimed{0}, busy{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      QueueStorage& s = objects[t % 4] ? *objects[t % 4] : *storage_;
      auto r = s.claim(id, seconds(30));
      (r.status == Status::claimed ? claimed : busy)++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(claimed.load(), 1);
  EXPECT_EQ(busy.load(), 7);
  EXPECT_EQ(storage_->get(id).lease.token, 1u);
}

TEST_P(ConformanceTest, AHeldMessageIsNotClaimedUntilReleased) {
  std::string id = storage_->write(sample_envelope(), 1);
  storage_->hold(id, "suspected spam, ticket 42", 1795000000.5);
  QueuedMessage got = peer().get(id);
  ASSERT_TRUE(got.hold.has_value());
  EXPECT_EQ(*got.hold, (Hold{1795000000.5, "suspected spam, ticket 42"}));
  EXPECT_EQ(storage_->claim(id, seconds(30)).status, Status::held);
  EXPECT_EQ(storage_->get(id).lease.token, 0u);
  storage_->release_hold(id);
  EXPECT_FALSE(storage_->get(id).hold.has_value());
  EXPECT_NO_THROW(storage_->release_hold(id));  // not held: fine
  EXPECT_EQ(storage_->claim(id, seconds(30)).status, Status::claimed);
  EXPECT_THROW(storage_->hold("nosuchid", "x", 1), KeyError);
  EXPECT_THROW(storage_->release_hold("nosuchid"), KeyError);
  EXPECT_EQ(storage_->load_all().size(), 1u);  // held messages are still listed
}

TEST_P(ConformanceTest, CountersAddUpAcrossObjectsAndAreNotMessages) {
  EXPECT_TRUE(storage_->counters().empty());
  storage_->add_counters({{"delivered", 3}, {"enqueued", 5}});
  QueueStorage& second = peer();
  second.add_counters({{"delivered", 1}, {"bounced", 2}});
  Counters want{{"bounced", 2}, {"delivered", 4}, {"enqueued", 5}};
  EXPECT_EQ(storage_->counters(), want);
  EXPECT_EQ(second.counters(), want);
  EXPECT_TRUE(storage_->load_all().empty());
}

// --- Destinations (shaping.h): every backend keeps them; disk and Redis share them
// between objects (processes).

TEST_P(ConformanceTest, DestinationSlotsAreLimitedAndSharedAndComeBackWhenReleased) {
  DestinationLimits two;
  two.max_connections = 2;
  Destinations& a = *storage_->destinations();
  Destinations& b = peer_destinations();
  SlotGrant first = a.acquire("mx.example", two, 10s);
  SlotGrant second = b.acquire("mx.example", two, 10s);
  ASSERT_TRUE(first.granted());
  ASSERT_TRUE(second.granted());
  EXPECT_NE(first.slot, second.slot);
  SlotGrant third = a.acquire("mx.example", two, 10s);
  EXPECT_EQ(third.status, SlotGrant::Status::busy);
  EXPECT_GT(third.retry_after, 0);
  EXPECT_EQ(third.reason, "all 2 connections in use");
  EXPECT_TRUE(a.acquire("other.example", two, 10s).granted());  // per destination
  auto status = b.status();
  ASSERT_EQ(status.size(), 2u);
  EXPECT_EQ(status[0].name, "mx.example");
  EXPECT_EQ(status[0].in_use, 2u);
  b.release("mx.example", second.slot, true, "250 2.0.0 Ok", DownPolicy{});
  EXPECT_TRUE(a.acquire("mx.example", two, 10s).granted());
  EXPECT_EQ(a.status()[0].last_reply, "250 2.0.0 Ok");
}

TEST_P(ConformanceTest, ASlotNotRenewedRunsOutAndOneRenewedStays) {
  DestinationLimits one;
  one.max_connections = 1;
  Destinations& a = *storage_->destinations();
  SlotGrant g = a.acquire("mx.example", one, 1500ms);
  ASSERT_TRUE(g.granted());
  pass(1000ms);
  a.renew("mx.example", g.slot, 1500ms);
  pass(1000ms);
  EXPECT_EQ(peer_destinations().acquire("mx.example", one, 1500ms).status, SlotGrant::Status::busy);
  pass(700ms);  // its holder died: no renewal
  EXPECT_TRUE(peer_destinations().acquire("mx.example", one, 1500ms).granted());
}

TEST_P(ConformanceTest, DestinationRateSpacesGrantsEvenly) {
  DestinationLimits slow;
  slow.max_rate = 0.5;  // one every 2 s
  Destinations& a = *storage_->destinations();
  const auto began = std::chrono::steady_clock::now();
  ASSERT_TRUE(a.acquire("mx.example", slow, 10s).granted());
  SlotGrant next = peer_destinations().acquire("mx.example", slow, 10s);
  // The 2 s less what passed between the two calls (on a backend on the real clock, a
  // loaded machine can take half a second), and a hundredth for the clocks' grain.
  const double between =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  EXPECT_EQ(next.status, SlotGrant::Status::rate);
  EXPECT_GT(next.retry_after, 2.0 - between - 0.01);
  EXPECT_LE(next.retry_after, 2.0);
  pass(2100ms);
  EXPECT_TRUE(a.acquire("mx.example", slow, 10s).granted());
  // The default destination (a relay that does not name one) is "".
  EXPECT_TRUE(a.acquire("", slow, 10s).granted());
  EXPECT_EQ(peer_destinations().acquire("", slow, 10s).status, SlotGrant::Status::rate);
}

TEST_P(ConformanceTest, UnreachableInARowMarksADestinationDownThenOneProbeTestsIt) {
  DestinationLimits limits;
  DownPolicy down;
  down.after = 2;
  down.initial = 1;
  down.max = 10;
  Destinations& a = *storage_->destinations();
  Destinations& b = peer_destinations();
  for (int i = 0; i < 2; ++i) {
    SlotGrant g = a.acquire("dead.example", limits, 10s);
    ASSERT_TRUE(g.granted());
    EXPECT_FALSE(g.probe);
    a.release("dead.example", g.slot, false, "421 4.4.2 closing", down);
  }
  SlotGrant refused = b.acquire("dead.example", limits, 10s);
  EXPECT_EQ(refused.status, SlotGrant::Status::down);
  EXPECT_GT(refused.retry_after, 0.5);
  EXPECT_LE(refused.retry_after, 1.0);
  EXPECT_EQ(refused.reason, "destination not reachable (2 attempts in a row): 421 4.4.2 closing");
  auto status = b.status();
  ASSERT_EQ(status.size(), 1u);
  EXPECT_EQ(status[0].failures, 2u);
  EXPECT_GT(status[0].down_until, now());
  pass(1100ms);
  SlotGrant probe = b.acquire("dead.example", limits, 10s);
  ASSERT_TRUE(probe.granted());
  EXPECT_TRUE(probe.probe);
  EXPECT_EQ(a.acquire("dead.example", limits, 10s).status, SlotGrant::Status::down)
      << "one probe at a time";
  b.release("dead.example", probe.slot, false, "421 4.4.2 still closing", down);
  refused = a.acquire("dead.example", limits, 10s);
  EXPECT_EQ(refused.status, SlotGrant::Status::down);
  EXPECT_GT(refused.retry_after, 1.5);  // twice as long
  pass(2100ms);
  probe = a.acquire("dead.example", limits, 10s);
  ASSERT_TRUE(probe.probe);
  a.release("dead.example", probe.slot, true, "250 2.0.0 Ok", down);
  SlotGrant back = b.acquire("dead.example", limits, 10s);
  EXPECT_TRUE(back.granted());
  EXPECT_FALSE(back.probe);
  EXPECT_EQ(b.status()[0].failures, 0u);
  a.release("dead.example", back.slot, true, "250 2.0.0 Ok", down);
}

// Issue 34, finding 4: an operator's retry or resume made nothing of a down destination,
// whose mail kept being deferred without a connection. Either forgets the failures.
TEST_P(ConformanceTest, ForgettingFailuresOrResumingEndsADownTimeAtOnce) {
  DestinationLimits limits;
  DownPolicy down;
  down.after = 1;
  down.initial = 600;
  Destinations& a = *storage_->destinations();
  Destinations& b = peer_destinations();  // the operator's tool
  for (const std::string& name : {std::string("flushed.example"), std::string("resumed.example")}) {
    SlotGrant g = a.acquire(name, limits, 10s);
    ASSERT_TRUE(g.granted());
    a.release(name, g.slot, false, "421 4.4.2 closing", down);
    ASSERT_EQ(a.acquire(name, limits, 10s).status, SlotGrant::Status::down) << name;
  }
  b.forget_failures("flushed.example");
  b.resume("resumed.example");
  b.forget_failures("never-seen.example");  // nothing to forget: no state made
  for (const std::string& name : {std::string("flushed.example"), std::string("resumed.example")}) {
    SlotGrant g = a.acquire(name, limits, 10s);
    EXPECT_TRUE(g.granted()) << name << ": " << g.reason;
    EXPECT_FALSE(g.probe) << name;
    a.release(name, g.slot, true, "250 2.0.0 Ok", down);
  }
  for (const auto& s : b.status()) {
    EXPECT_NE(s.name, "never-seen.example");
    EXPECT_EQ(s.failures, 0u) << s.name;
    EXPECT_EQ(s.down_until, 0) << s.name;
  }
}

TEST_P(ConformanceTest, SuspendedDestinationsAreRefusedUntilResumedOrTheirTime) {
  DestinationLimits limits;
  Destinations& a = *storage_->destinations();
  Destinations& b = peer_destinations();  // the operator's tool
  b.suspend("slow.example", DestinationStatus::kForever, "asked to wait");
  b.suspend("../odd name", now() + 1, "");
  SlotGrant g = a.acquire("slow.example", limits, 10s);
  EXPECT_EQ(g.status, SlotGrant::Status::suspended);
  EXPECT_EQ(g.reason, "suspended by an operator: asked to wait");
  EXPECT_LE(g.retry_after, 1.0);
  EXPECT_EQ(a.acquire("../odd name", limits, 10s).status, SlotGrant::Status::suspended);
  auto status = a.status();
  ASSERT_EQ(status.size(), 2u);
  EXPECT_EQ(status[0].name, "../odd name");
  EXPECT_EQ(status[1].suspended_until, DestinationStatus::kForever);
  EXPECT_EQ(status[1].suspend_reason, "asked to wait");
  pass(1100ms);
  EXPECT_TRUE(a.acquire("../odd name", limits, 10s).granted());  // its time is up
  b.resume("slow.example");
  EXPECT_TRUE(a.acquire("slow.example", limits, 10s).granted());
}

// --- The due-time index ------------------------------------------------------------

// The ids of `entries`, in order.
std::vector<std::string> ids_of(const std::vector<QueueEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.id);
  return out;
}

// Whether the backend has an index these rows apply to; one without says so when asked
// for it (checked).
bool has_due_index(QueueStorage& storage, const Backend& backend) {
  if (storage.capabilities().due_index) return !backend.real_time_index;
  EXPECT_THROW(storage.due(1000, 10, std::chrono::seconds(60)), NotSupported);
  std::string cursor;
  EXPECT_THROW(storage.repair_due(cursor), NotSupported);
  return false;
}

TEST_P(ConformanceTest, DueHandsOutWhatIsDueOldestFirstAndEachOncePerHandOut) {
  if (!has_due_index(*storage_, GetParam())) return;
  std::string a = storage_->write(sample_envelope(1, 100, 1), 100);
  std::string b = storage_->write(sample_envelope(1, 100, 2), 50);
  std::string later = storage_->write(sample_envelope(1, 100, 3), 5000);
  EXPECT_THROW(storage_->due(1000, 0, seconds(60)), InvalidArgument);
  EXPECT_THROW(storage_->due(1000, 10, milliseconds(0)), InvalidArgument);
  EXPECT_TRUE(storage_->due(40, 10, seconds(60)).empty());  // nothing due yet
  auto first = storage_->due(1000, 1, seconds(60));         // the limit holds
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0], (QueueEntry{50, b}));
  auto rest = storage_->due(1000, 10, seconds(60));
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0], (QueueEntry{100, a}));
  // Handed out once: not again, to this object or another, until the hand-out runs out.
  EXPECT_TRUE(storage_->due(1059, 10, seconds(60)).empty());
  EXPECT_TRUE(peer().due(1059, 10, seconds(60)).empty());
  auto again = peer().due(1061, 10, seconds(9000));  // a taker that died: back to another
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ((std::set<std::string>{again[0].id, again[1].id}), (std::set<std::string>{a, b}));
  EXPECT_EQ(again[0].timestamp, 1060);  // when it became due again
  EXPECT_EQ(storage_->due(5000, 10, seconds(60)), (std::vector<QueueEntry>{{5000, later}}));
  EXPECT_EQ(storage_->load_all().size(), 3u);  // handing out changes no message
  EXPECT_EQ(storage_->get(a).timestamp, 100);
}

TEST_P(ConformanceTest, ADeferralMovesTheMessageInTheIndexWithItsTimestamp) {
  if (!has_due_index(*storage_, GetParam())) return;
  std::string id = storage_->write(sample_envelope(), 100);
  ASSERT_EQ(ids_of(storage_->due(1000, 10, seconds(600))), std::vector<std::string>{id});
  ClaimResult c = storage_->claim(id, seconds(30));
  ASSERT_EQ(c.status, Status::claimed);
  // The attempt defers it to 5000: due then, and not before, although its hand-out
  // (until 1600) runs out first.
  storage_->set_timestamp(id, 5000, Fence{c.lease.token}, "451 4.3.0 try later");
  storage_->release(id, Fence{c.lease.token});
  EXPECT_TRUE(peer().due(4999, 10, seconds(600)).empty());
  EXPECT_EQ(peer().due(5000, 10, seconds(600)), (std::vector<QueueEntry>{{5000, id}}));
  EXPECT_EQ(storage_->get(id).timestamp, 5000);
  // An operator's "retry now" makes it due at once, whatever was handed out.
  storage_->set_timestamp(id, 200);
  EXPECT_EQ(peer().due(1000, 10, seconds(600)), (std::vector<QueueEntry>{{200, id}}));
  // A refused (fenced-out) deferral moves nothing.
  EXPECT_THROW(storage_->set_timestamp(id, 9000, Fence{c.lease.token}), LeaseLost);
  EXPECT_EQ(peer().due(1700, 10, seconds(600)), (std::vector<QueueEntry>{{1600, id}}));
}

TEST_P(ConformanceTest, HeldAndRemovedMessagesAreNeverHandedOut) {
  if (!has_due_index(*storage_, GetParam())) return;
  std::string held = storage_->write(sample_envelope(1, 100, 1), 100);
  std::string gone = storage_->write(sample_envelope(1, 100, 2), 100);
  std::string claimed_gone = storage_->write(sample_envelope(1, 100, 3), 100);
  storage_->hold(held, "ticket 7", 90);
  storage_->set_timestamp(held, 50);  // an operator's retry does not lift the hold
  storage_->remove(gone);
  ClaimResult c = storage_->claim(claimed_gone, seconds(30));
  storage_->remove(claimed_gone, Fence{c.lease.token});
  EXPECT_TRUE(peer().due(1000, 10, seconds(60)).empty());
  storage_->release_hold(held);
  EXPECT_EQ(peer().due(1000, 10, seconds(60)), (std::vector<QueueEntry>{{50, held}}));
  // Held again after it was handed out: not handed out when that runs out.
  storage_->hold(held, "ticket 8", 95);
  EXPECT_TRUE(peer().due(2000, 10, seconds(60)).empty());
}

TEST_P(ConformanceTest, ConcurrentTakersShareTheDueWorkEachMessageOnce) {
  if (!has_due_index(*storage_, GetParam())) return;
  std::set<std::string> written;
  for (int i = 0; i < 60; ++i) written.insert(storage_->write(sample_envelope(1, 50, i), 10 + i));
  std::vector<std::unique_ptr<QueueStorage>> takers;
  for (int t = 0; t < 4; ++t)
    takers.push_back(storage_->capabilities().shared ? location_->open() : nullptr);
  std::mutex mu;
  std::map<std::string, int> seen;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      QueueStorage& s = takers[t] ? *takers[t] : *storage_;
      while (true) {
        auto batch = s.due(1000, 7, seconds(300));
        if (batch.empty()) return;
        std::lock_guard lock(mu);
        for (const auto& e : batch) ++seen[e.id];
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(seen.size(), written.size());
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id << " handed out " << n << " times";
}

// Takers asking at the same moment each get a whole batch while enough is due: none is
// left with nothing because another took the same messages a moment before.
TEST_P(ConformanceTest, TakersAskingAtOnceEachGetAFullBatchWhileEnoughIsDue) {
  if (!has_due_index(*storage_, GetParam())) return;
  for (int i = 0; i < 200; ++i) storage_->write(sample_envelope(1, 50, i), 10 + i);
  std::vector<std::unique_ptr<QueueStorage>> takers;
  for (int t = 0; t < 4; ++t)
    takers.push_back(storage_->capabilities().shared ? location_->open() : nullptr);
  std::latch start(4);
  std::vector<std::vector<QueueEntry>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      QueueStorage& s = takers[t] ? *takers[t] : *storage_;
      start.arrive_and_wait();
      got[t] = s.due(1000, 25, seconds(300));
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> all;
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(got[t].size(), 25u) << "taker " << t;
    for (const auto& e : got[t]) all.insert(e.id);
  }
  EXPECT_EQ(all.size(), 100u);  // each handed out once
}

TEST_P(ConformanceTest, ARepairPassOverAHealthyIndexChangesNothing) {
  if (!has_due_index(*storage_, GetParam())) return;
  for (int i = 0; i < 5; ++i) storage_->write(sample_envelope(1, 50, i), 10 + i);
  std::string held = storage_->write(sample_envelope(), 5);
  storage_->hold(held, "x", 1);
  std::string cursor;
  size_t repaired = 0, steps = 0;
  do {
    repaired += storage_->repair_due(cursor);
  } while (!cursor.empty() && ++steps < 10000);
  EXPECT_TRUE(cursor.empty());
  EXPECT_EQ(repaired, 0u);
  EXPECT_EQ(storage_->due(1000, 10, seconds(60)).size(), 5u);  // the held one still not
}

// A write the server acted on but whose answer was lost: write() finds out that it is
// stored and says so (a 451 here would make the sender's retry a second copy).
TEST_P(ConformanceTest, AWriteWhoseAnswerIsLostIsFoundStoredAndStoredOnce) {
  auto proxy = location_->proxy();
  if (!proxy) return;  // no network between it and its store: no answer can be lost
  auto lossy = through(*proxy, 0.5, 60);  // its connection made, before the loss
  proxy->deafen();
  auto written =
      std::async(std::launch::async, [&] { return lossy->write(sample_envelope(), 100); });
  // Answered, unheard, and given up on twice (the write and its retry): no answer comes.
  EXPECT_TRUE(
      testing::eventually([&] { return proxy->dropped() > 0 && proxy->deaf_gone() >= 2; }, 60s));
  proxy->hear();
  std::string id = written.get();  // stored: no error
  EXPECT_EQ(storage_->get(id).envelope.recipients, sample_envelope().recipients);
  auto all = storage_->load_all();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].id, id);
}

// A write held on its way (the server paused) beyond write()'s patience: write() says it
// is not stored, and that stays true when the write reaches the server at last.
TEST_P(ConformanceTest, AWriteHeldBeyondItsResolutionIsRefusedAndNeverStored) {
  auto proxy = location_->proxy();
  if (!proxy) return;  // no network between it and its store: no answer can be late
  auto lossy = through(*proxy, 0.3, 1);
  proxy->hold();
  try {
    lossy->write(sample_envelope(), 100);
    ADD_FAILURE() << "a write the server never heard was said to be stored";
  } catch (const QueueError& e) {
    EXPECT_TRUE(e.retryable()) << e.what();
  }
  proxy->release();
  ASSERT_TRUE(proxy->wait_drained(60));  // the server has acted on the write
  EXPECT_TRUE(testing::eventually([&] { return storage_->load_all().empty(); }, 60s));
  lossy.reset();  // and nothing more to come from it
  EXPECT_TRUE(storage_->load_all().empty());
  // Its late copy may have left an index entry beside the tombstone: never a message.
  if (storage_->capabilities().due_index && !GetParam().real_time_index) {
    for (const auto& e : storage_->due(now() + 1000, 10, 1ms))
      EXPECT_THROW(storage_->claim(e.id, 60s), KeyError);
    EXPECT_TRUE(storage_->due(now() + 2000, 10, 60s).empty());
  }
}

// Held until write() gave up a first time, then let through while it resolves: stored
// once if it says so, never if it says not.
TEST_P(ConformanceTest, AWriteHeldThenLetThroughIsStoredOnceOrNotAtAllAsWriteSays) {
  auto proxy = location_->proxy();
  if (!proxy) return;  // no network between it and its store: no answer can be late
  auto lossy = through(*proxy, 0.3, 60);
  proxy->hold();
  auto written =
      std::async(std::launch::async, [&] { return lossy->write(sample_envelope(), 100); });
  EXPECT_TRUE(testing::eventually([&] { return proxy->gave_up() > 0; }, 60s));
  proxy->release();
  std::optional<std::string> id;
  try {
    id = written.get();
  } catch (const QueueError& e) {
    EXPECT_TRUE(e.retryable()) << e.what();
  }
  ASSERT_TRUE(proxy->wait_drained(60));
  lossy.reset();
  auto all = storage_->load_all();
  if (id) {
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].id, *id);
    EXPECT_NO_THROW(storage_->get(*id));
  } else {
    EXPECT_TRUE(all.empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceTest, ::testing::ValuesIn(kBackends),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace slimta
