// The queue on a storage with a due-time index (QueuePolicy::use_due_index): it holds
// only the work due now, pulls the rest from the index when it comes due, and shares
// it with other queues on the same storage. On a ManualClock and a MemoryStorage (whose
// index keeps the contract every shared backend keeps; tests/storage checks them all).
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "slimta/memory_storage.h"
#include "slimta/queue.h"
#include "support/log_capture.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::sample_envelope;

constexpr Timestamp kStart = 1800000000;

// Answers every recipient with `reply` (delivered for "250 ..."), counting the attempts
// of each message by its first recipient, and what the queue held at each attempt.
class CountingRelay : public Relay {
 public:
  std::vector<RecipientResult> attempt(const Envelope& env, uint32_t) override {
    std::lock_guard lock(mu_);
    ++attempts[env.recipients.front()];
    if (queue) max_scheduled = std::max(max_scheduled, queue->scheduled());
    auto result = reply.starts_with("250") ? RecipientResult::delivered(reply)
                                           : RecipientResult::transient(reply);
    return std::vector<RecipientResult>(env.recipients.size(), result);
  }
  size_t total() {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& [r, k] : attempts) n += k;
    return n;
  }

  std::string reply = "250 2.0.0 Ok";
  std::map<std::string, int> attempts;
  const Queue* queue = nullptr;
  size_t max_scheduled = 0;

 private:
  std::mutex mu_;
};

// A message to "rN@example.com", so that each message's attempts are counted apart.
Envelope message(int n) {
  Envelope env = sample_envelope(1, 100, n);
  env.recipients = {"r" + std::to_string(n) + "@example.com"};
  env.timestamp = kStart;  // received now: not too old to try
  return env;
}

class DueIndexTest : public ::testing::Test {
 protected:
  std::unique_ptr<Queue> make(QueuePolicy p = {}) {
    p.reporting_mta = "mx.test.example";
    auto q = std::make_unique<Queue>(storage, relay, p, clock);
    relay.queue = q.get();
    return q;
  }

  ManualClock clock{kStart};
  MemoryStorage storage{clock};
  CountingRelay relay;
};

// What start() says about the way it works, captured from the log.
std::string started_log(Queue& q) {
  testing::LogCapture log;
  q.start();
  q.stop();
  return log.text();
}

TEST_F(DueIndexTest, StartSaysWhetherItPullsFromTheIndexOrKeepsTheWholeSchedule) {
  auto pulling = make();
  EXPECT_NE(started_log(*pulling).find("pulling due work from the storage's due-time index"),
            std::string::npos);
  QueuePolicy p;
  p.use_due_index = false;
  auto whole = make(p);
  EXPECT_NE(started_log(*whole).find("keeping the whole schedule in memory (asked for)"),
            std::string::npos);
}

TEST_F(DueIndexTest, ADeferredMessageWaitsInTheStorageNotInMemoryAndIsAttemptedWhenDue) {
  auto q = make();
  relay.reply = "451 4.3.0 try later";
  ASSERT_TRUE(q->enqueue(message(1)).ok());
  EXPECT_EQ(q->run_pending(), 1u);
  EXPECT_EQ(q->scheduled(), 0u);  // the index has it, at its next attempt
  EXPECT_FALSE(q->next_due().has_value());
  clock.advance(299);
  EXPECT_EQ(q->run_pending(), 0u);
  clock.advance(1);  // the first backoff: 300 s
  relay.reply = "250 2.0.0 Ok";
  EXPECT_EQ(q->run_pending(), 1u);
  EXPECT_EQ(relay.attempts["r1@example.com"], 2);
  EXPECT_TRUE(storage.load_all().empty());
}

TEST_F(DueIndexTest, TenThousandWaitingMessagesAreNotHeldAndEachIsAttemptedOnceWhenDue) {
  for (int i = 0; i < 10000; ++i) storage.write(message(i), kStart + 3600 + i % 60);
  QueuePolicy p;
  p.due_batch = 50;
  auto q = make(p);
  EXPECT_EQ(q->run_pending(), 0u);
  EXPECT_EQ(q->scheduled(), 0u);
  clock.advance(3660);
  EXPECT_EQ(q->run_pending(), 10000u);
  EXPECT_EQ(relay.attempts.size(), 10000u);
  for (const auto& [rcpt, n] : relay.attempts) ASSERT_EQ(n, 1) << rcpt;
  EXPECT_LE(relay.max_scheduled, 2 * p.due_batch);
  EXPECT_TRUE(storage.load_all().empty());
}

TEST_F(DueIndexTest, AMessageHandedToAProcessThatDiedComesBackAfterTheLease) {
  std::string id = storage.write(message(1), kStart);
  QueuePolicy p;
  p.lease = 60s;
  auto q = make(p);
  // Another process took it from the index, and died before it claimed it.
  ASSERT_EQ(storage.due(kStart, 10, p.lease).size(), 1u);
  EXPECT_EQ(q->run_pending(), 0u);
  clock.advance(59);
  EXPECT_EQ(q->run_pending(), 0u);
  clock.advance(1);
  EXPECT_EQ(q->run_pending(), 1u);
  EXPECT_EQ(relay.attempts["r1@example.com"], 1);
}

TEST_F(DueIndexTest, AClaimedMessageOfADeadProcessComesBackOnceItsLeaseRunsOut) {
  std::string id = storage.write(message(1), kStart);
  QueuePolicy p;
  p.lease = 60s;
  auto q = make(p);
  ASSERT_EQ(storage.due(kStart, 10, p.lease).size(), 1u);
  ASSERT_EQ(storage.claim(id, 90s).status, ClaimResult::Status::claimed);  // and died
  clock.advance(60);  // handed out again, but still claimed: let go
  EXPECT_EQ(q->run_pending(), 1u);
  EXPECT_EQ(relay.total(), 0u);
  EXPECT_EQ(q->scheduled(), 0u);
  clock.advance(59);
  EXPECT_EQ(q->run_pending(), 0u);
  clock.advance(31);  // the hand-out of the busy claim ran out, and so did the lease
  EXPECT_EQ(q->run_pending(), 1u);
  EXPECT_EQ(relay.attempts["r1@example.com"], 1);
}

TEST_F(DueIndexTest, AHeldMessageIsNotPulledUntilReleased) {
  std::string id = storage.write(message(1), kStart);
  storage.hold(id, "ticket 9", kStart);
  auto q = make();
  EXPECT_EQ(q->run_pending(), 0u);
  clock.advance(3600);
  EXPECT_EQ(q->run_pending(), 0u);
  storage.release_hold(id);
  EXPECT_EQ(q->run_pending(), 1u);
  EXPECT_EQ(relay.attempts["r1@example.com"], 1);
}

TEST_F(DueIndexTest, TwoQueuesOnOneStorageShareTheDueWorkEachMessageOnce) {
  for (int i = 0; i < 300; ++i) storage.write(message(i), kStart - i);
  QueuePolicy p;
  p.due_batch = 20;
  auto a = make(p);
  auto b = make(p);
  relay.queue = nullptr;
  size_t by_a = 0, by_b = 0;
  for (int round = 0; round < 100 && relay.total() < 300; ++round) {
    by_a += a->run_pending();
    by_b += b->run_pending();
  }
  EXPECT_EQ(by_a + by_b, 300u);
  EXPECT_EQ(relay.attempts.size(), 300u);
  for (const auto& [rcpt, n] : relay.attempts) ASSERT_EQ(n, 1) << rcpt;
}

TEST_F(DueIndexTest, ASuspendedDestinationKeepsAtMostMaxLineWaitingInMemory) {
  for (int i = 0; i < 50; ++i) storage.write(message(i), kStart);
  storage.destinations()->suspend("", DestinationStatus::kForever, "maintenance");
  QueuePolicy p;
  p.max_line_waiting = 10;
  p.lease = 60s;
  auto q = make(p);
  q->run_pending();
  EXPECT_EQ(relay.total(), 0u);
  EXPECT_LE(q->scheduled(), 10u);
  EXPECT_GT(q->scheduled(), 0u);
  storage.destinations()->resume("");
  clock.advance(60);  // the ones left to the index are handed out again
  q->run_pending();
  EXPECT_EQ(relay.attempts.size(), 50u);
  for (const auto& [rcpt, n] : relay.attempts) ASSERT_EQ(n, 1) << rcpt;
}

TEST_F(DueIndexTest, WithoutTheIndexTheWholeScheduleIsHeld) {
  for (int i = 0; i < 100; ++i) storage.write(message(i), kStart + 3600);
  QueuePolicy p;
  p.use_due_index = false;
  auto q = make(p);
  EXPECT_EQ(q->load(), 100u);
  EXPECT_EQ(q->scheduled(), 100u);
  EXPECT_EQ(q->next_due(), kStart + 3600);
}

}  // namespace
}  // namespace slimta
