// The queue's events as data: what an observer is told, in order and with its fields,
// the text the log writes of them, and the pool the parts of a message run on.
#include "slimta/queue_events.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "queue/part_pool.h"
#include "slimta/memory_storage.h"
#include "slimta/queue.h"
#include "support/event_recorder.h"

namespace slimta {
namespace {

constexpr Timestamp kStart = 1'800'000'000;

// Recipients at "fail.example" fail for good, at "later.example" are deferred, the
// rest delivered.
class ByDomainRelay : public Relay {
 public:
  std::vector<RecipientResult> attempt(const Envelope& env, uint32_t) override {
    std::vector<RecipientResult> out;
    for (const auto& r : env.recipients) {
      if (r.ends_with("@fail.example")) {
        out.push_back(RecipientResult::permanent("550 5.1.1 no such user"));
      } else if (r.ends_with("@later.example")) {
        out.push_back(RecipientResult::transient("451 4.2.1 busy\r\nqueue: forged line"));
      } else {
        out.push_back(RecipientResult::delivered("250 2.0.0 Ok"));
      }
    }
    return out;
  }
};

class Throwing : public QueueObserver {
 public:
  void on_event(const QueueEvent&) override { throw std::runtime_error("observer broke"); }
};

Envelope message(std::vector<std::string> rcpts) {
  Envelope env;
  env.sender = "alice@example.com";
  env.recipients = std::move(rcpts);
  env.headers.add("Subject", "hello");
  env.body = "hello\r\n";
  return env;
}

class EventsTest : public ::testing::Test {
 protected:
  ManualClock clock{kStart};
  MemoryStorage storage{clock};
  ByDomainRelay relay;
  std::shared_ptr<testing::EventRecorder> seen = std::make_shared<testing::EventRecorder>();

  std::unique_ptr<Queue> make(QueuePolicy p = {}) {
    p.reporting_mta = "mx.test.example";
    p.use_due_index = false;
    p.log_events = false;
    p.observers.push_back(seen);
    return std::make_unique<Queue>(storage, relay, p, clock);
  }
};

TEST_F(EventsTest, AnObserverIsToldEachStepWithItsFields) {
  auto q = make();
  std::string id =
      q->enqueue(message({"bob@ok.example", "carl@fail.example", "dan@later.example"})).id;
  ASSERT_FALSE(id.empty());
  clock.advance(2);
  q->run_pending();
  EXPECT_EQ(seen->names(), (std::vector<std::string>{"enqueued", "attempt", "delivered", "failed",
                                                     "bounced", "deferred",
                                                     // the bounce, delivered to alice
                                                     "attempt", "delivered", "removed"}));
  auto enq = seen->all<events::Enqueued>();
  ASSERT_FALSE(enq.empty());
  EXPECT_EQ(enq[0].id, id);
  EXPECT_EQ(enq[0].sender, "alice@example.com");
  EXPECT_EQ(enq[0].rcpts, 3u);
  auto delivered = seen->all<events::Delivered>();
  ASSERT_EQ(delivered.size(), 2u);
  EXPECT_EQ(delivered[1].rcpt, "alice@example.com");
  EXPECT_EQ(delivered[0].rcpt, "bob@ok.example");
  EXPECT_EQ(delivered[0].attempt, 1u);
  EXPECT_DOUBLE_EQ(delivered[0].delay, 2);
  EXPECT_EQ(delivered[0].reply, "250 2.0.0 Ok");
  auto failed = seen->all<events::Failed>();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].rcpt, "carl@fail.example");
  EXPECT_TRUE(failed[0].gave_up.empty());
  auto bounced = seen->all<events::Bounced>();
  ASSERT_EQ(bounced.size(), 1u);
  EXPECT_EQ(bounced[0].to, "alice@example.com");
  EXPECT_EQ(bounced[0].rcpts, 1u);
  auto removed = seen->all<events::Removed>();  // the bounce, once delivered
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].id, bounced[0].dsn);
  auto deferred = seen->all<events::Deferred>();
  ASSERT_EQ(deferred.size(), 1u);
  EXPECT_EQ(deferred[0].id, id);
  EXPECT_EQ(deferred[0].attempt, 1u);
  EXPECT_EQ(deferred[0].rcpts, 1u);
  EXPECT_DOUBLE_EQ(deferred[0].next, kStart + 2 + QueuePolicy{}.backoff(1));
  EXPECT_EQ(deferred[0].reply.substr(0, 14), "451 4.2.1 busy");
}

TEST_F(EventsTest, GivingUpIsAFailureThatSaysWhyAndTheMessageIsRemoved) {
  QueuePolicy p;
  p.max_attempts = 1;
  auto q = make(p);
  std::string id = q->enqueue(message({"dan@later.example"})).id;
  q->run_pending();
  auto failed = seen->all<events::Failed>();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].gave_up, "after 1 attempts");
  auto removed = seen->all<events::Removed>();
  ASSERT_FALSE(removed.empty());
  EXPECT_EQ(removed[0].id, id);
  EXPECT_TRUE(seen->all<events::Deferred>().empty());
}

TEST_F(EventsTest, AnObserverThatThrowsStopsNothing) {
  QueuePolicy p;
  p.observers.push_back(std::make_shared<Throwing>());
  auto q = make(p);
  ASSERT_TRUE(q->enqueue(message({"bob@ok.example"})).ok());
  q->run_pending();
  EXPECT_TRUE(storage.load_all().empty());  // delivered and removed all the same
  EXPECT_EQ(seen->all<events::Removed>().size(), 1u);
}

TEST_F(EventsTest, StoringWithoutAnEngineTellsItsObservers) {
  Envelope none = message({});
  EnqueueResult r = store_message(storage, none, kStart, {seen});
  EXPECT_FALSE(r.ok());
  auto refused = seen->all<events::NotEnqueued>();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].sender, "alice@example.com");
  EXPECT_FALSE(refused[0].retryable);
  EXPECT_NE(refused[0].error.find("no recipients"), std::string::npos);
}

TEST(EventTextTest, TheLogLineEscapesWhatAPeerSent) {
  events::Deferred d{"0123456789abcdef0123456789abcdef",
                     2,
                     kStart,
                     "451 \"busy\"\r\nqueue: 0123 delivered\x1b[31m",
                     3,
                     "b@x.org\r\nqueue: forged",
                     {}};
  std::string text = event_text(d);
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  EXPECT_EQ(text,
            "queue: 0123456789abcdef0123456789abcdef deferred rcpt=<b@x.org\\x0d\\x0aqueue: "
            "forged> (and 2 more) attempt=2 next=2027-01-15T08:00:00Z "
            "reply=\"451 \\\"busy\\\"\\x0d\\x0aqueue: 0123 delivered\\x1b[31m\"");
  // Issue 34, finding 9: who sent it, as Postfix logs it, escaped too.
  events::Enqueued e{"ab",        "a@example.com",        1,       10,
                     "192.0.2.1", "mx.example\r\nforged", "alice", "<m1@example.com>"};
  EXPECT_EQ(event_text(e, false),
            "ab enqueued from=<a@example.com> rcpts=1 size=10 client=[192.0.2.1] "
            "helo=<mx.example\\x0d\\x0aforged> sasl_username=alice message-id=<m1@example.com>");
  EXPECT_EQ(event_text(events::Removed{"ab", 1}, false), "ab removed");
  // Where the reply came from, how the delay was spent and the TLS (finding 9), as
  // Postfix's relay= and delays=; an MX name from the DNS is escaped too.
  events::Delivered dl{
      "ab",     "b@x.org",
      1,        2.5,
      "250 ok", {"mx.x.org\r\n[192.0.2.7]:25", "TLSv1.3 TLS_AES_256_GCM_SHA384", 2, 0.25, 0.125}};
  EXPECT_EQ(
      event_text(dl, false),
      "ab delivered rcpt=<b@x.org> attempt=1 delay=2.50 relay=mx.x.org\\x0d\\x0a[192.0.2.7]:25 "
      "delays=2.00/0.25/0.12 tls=\"TLSv1.3 TLS_AES_256_GCM_SHA384\" reply=\"250 ok\"");
  events::Failed local{"ab", "c@nowhere", 1, 0.5, "550 5.1.2 no such domain", "", {}};
  EXPECT_EQ(event_text(local, false),
            "ab failed rcpt=<c@nowhere> attempt=1 delay=0.50 reply=\"550 5.1.2 no such domain\"");
}

TEST(PartPoolTest, PartsRunAtOnceOnAtMostItsThreads) {
  engine::PartPool pool(3);
  // Four tasks that each wait for all four to have begun: done only if they run at
  // once (the caller's thread and three of the pool's).
  std::mutex mu;
  std::condition_variable cv;
  int begun = 0;
  bool all = true;
  std::vector<std::function<void()>> tasks;
  for (int k = 0; k < 4; ++k) {
    tasks.emplace_back([&] {
      std::unique_lock lock(mu);
      ++begun;
      cv.notify_all();
      if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return begun == 4; })) all = false;
    });
  }
  pool.run_all(std::move(tasks));
  EXPECT_TRUE(all);
  EXPECT_EQ(pool.threads(), 3u);
  // More tasks than threads: the rest run on the caller's thread; the pool stays at 3.
  std::atomic<int> ran = 0;
  for (int round = 0; round < 20; ++round) {
    std::vector<std::function<void()>> many(8, [&] { ++ran; });
    pool.run_all(std::move(many));
  }
  EXPECT_EQ(ran.load(), 160);
  EXPECT_EQ(pool.threads(), 3u);
  engine::PartPool none(0);
  int inline_ran = 0;
  none.run_all({[&] { ++inline_ran; }, [&] { ++inline_ran; }});
  EXPECT_EQ(inline_ran, 2);
  EXPECT_EQ(none.threads(), 0u);
}

}  // namespace
}  // namespace slimta
