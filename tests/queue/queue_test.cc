// The queue engine on a ManualClock and a MemoryStorage judging leases by the same
// clock: every policy path, with no sleeps.
#include "slimta/queue.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "queue/bounce.h"
#include "slimta/memory_storage.h"
#include "support/event_recorder.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::run_command;
using testing::sample_envelope;
using Kind = RecipientResult::Kind;

constexpr Timestamp kStart = 1'800'000'000;

// A relay scripted per recipient: each recipient's results are used in order, the
// last one repeating; a recipient without a script is delivered. Records every call.
class ScriptedRelay : public Relay {
 public:
  struct Call {
    std::string sender;
    std::vector<std::string> recipients;
    uint32_t attempt;
    Envelope envelope;
  };

  void script(const std::string& rcpt, std::vector<RecipientResult> results) {
    scripts_[rcpt] = std::deque<RecipientResult>(results.begin(), results.end());
  }
  // Runs during the next attempt, before the results are returned.
  std::function<void()> during_attempt;
  std::string throw_error;  // non-empty: attempt() throws this

  std::vector<RecipientResult> attempt(const Envelope& env, uint32_t attempt) override {
    {
      std::lock_guard lock(mu_);
      calls.push_back({env.sender, env.recipients, attempt, env});
    }
    if (during_attempt) std::exchange(during_attempt, nullptr)();
    if (!throw_error.empty()) throw std::runtime_error(throw_error);
    std::vector<RecipientResult> out;
    std::lock_guard lock(mu_);
    for (const auto& r : env.recipients) {
      auto it = scripts_.find(r);
      if (it == scripts_.end() || it->second.empty()) {
        out.push_back(RecipientResult::delivered());
        continue;
      }
      out.push_back(it->second.front());
      if (it->second.size() > 1) it->second.pop_front();
    }
    return out;
  }

  std::vector<Call> calls;

 private:
  std::mutex mu_;
  std::map<std::string, std::deque<RecipientResult>> scripts_;
};

Envelope message(std::vector<std::string> rcpts, std::string sender = "alice@example.com") {
  Envelope env;
  env.sender = std::move(sender);
  env.recipients = std::move(rcpts);
  env.headers.add("From", "Alice <alice@example.com>");
  env.headers.add("Subject", "quarterly report");
  env.headers.add("Message-ID", "<m1@example.com>");
  env.body = "hello\r\n";
  return env;
}

// These tests follow the whole schedule in memory (next_due(), scheduled()), as the
// queue keeps it on a storage without a due index; due_index_test.cc has the index's.
QueuePolicy quiet_policy() {
  QueuePolicy p;
  p.reporting_mta = "mx.test.example";
  p.use_due_index = false;
  return p;
}

class QueueTest : public ::testing::Test {
 protected:
  ManualClock clock{kStart};
  MemoryStorage storage{clock};
  ScriptedRelay relay;

  std::unique_ptr<Queue> make(QueuePolicy policy = quiet_policy()) {
    return std::make_unique<Queue>(storage, relay, policy, clock);
  }
  std::string enqueue(Queue& q, const Envelope& env) {
    EnqueueResult r = q.enqueue(env);
    EXPECT_TRUE(r.ok()) << r.error;
    return r.id;
  }
};

TEST_F(QueueTest, SuccessRemovesTheMessageAfterOneAttempt) {
  auto q = make();
  std::string id = enqueue(*q, message({"bob@example.org", "carol@example.net"}));
  EXPECT_EQ(storage.get(id).envelope.timestamp, kStart);  // stamped on arrival
  EXPECT_EQ(q->run_pending(), 1u);
  ASSERT_EQ(relay.calls.size(), 1u);
  EXPECT_EQ(relay.calls[0].attempt, 1u);
  EXPECT_EQ(relay.calls[0].recipients.size(), 2u);
  EXPECT_TRUE(storage.load_all().empty());
  EXPECT_FALSE(q->next_due().has_value());
  q->flush_counters();
  EXPECT_EQ(storage.counters(),
            (Counters{{"attempt", 1}, {"delivered", 2}, {"enqueued", 1}, {"removed", 1}}));
}

TEST_F(QueueTest, PartialSuccessMarksOriginalIndexesAndNeverRetriesDeliveredRecipients) {
  auto q = make();
  relay.script("b@x.org", {RecipientResult::transient("451 4.2.1 mailbox busy"),
                           RecipientResult::delivered()});
  relay.script("d@x.org",
               {RecipientResult::transient("421 4.4.2 timeout"),
                RecipientResult::transient("421 4.4.2 timeout"), RecipientResult::delivered()});
  std::string id = enqueue(*q, message({"a@x.org", "b@x.org", "c@x.org", "d@x.org"}));
  q->run_pending();
  QueuedMessage m = storage.get(id);
  EXPECT_EQ(m.delivered, (std::vector<size_t>{0, 2}));
  EXPECT_EQ(m.envelope.recipients, (std::vector<std::string>{"b@x.org", "d@x.org"}));
  EXPECT_EQ(m.attempts, 1u);
  EXPECT_EQ(m.timestamp, kStart + 300);
  EXPECT_EQ(m.lease.expires, 0);  // released

  clock.advance(299);
  EXPECT_EQ(q->run_pending(), 0u);  // not due yet
  clock.advance(1);
  q->run_pending();
  ASSERT_EQ(relay.calls.size(), 2u);
  EXPECT_EQ(relay.calls[1].recipients, (std::vector<std::string>{"b@x.org", "d@x.org"}));
  EXPECT_EQ(relay.calls[1].attempt, 2u);
  m = storage.get(id);
  EXPECT_EQ(m.delivered, (std::vector<size_t>{0, 1, 2}));  // b was index 1 originally
  EXPECT_EQ(m.timestamp, kStart + 300 + 600);

  clock.advance(600);
  q->run_pending();
  ASSERT_EQ(relay.calls.size(), 3u);
  EXPECT_EQ(relay.calls[2].recipients, (std::vector<std::string>{"d@x.org"}));
  EXPECT_TRUE(storage.load_all().empty());
}

// A MemoryStorage whose updates fail (as a full disk or a Redis that is down would)
// while `broken` is set.
class BreakableStorage : public MemoryStorage {
 public:
  using MemoryStorage::MemoryStorage;
  bool broken = false;
  bool reads_broken = false;  // get() fails too

 protected:
  QueuedMessage do_get(std::string_view id) override {
    if (reads_broken) throw QueueError("connection refused", true);
    return MemoryStorage::do_get(id);
  }
  void check() const {
    if (broken) throw StorageFull("no space left on device");
  }
  void do_set_recipients_delivered(std::string_view id, std::span<const size_t> rcpts, Fence fence,
                                   std::span<const RecipientFailure> failed) override {
    check();
    MemoryStorage::do_set_recipients_delivered(id, rcpts, fence, failed);
  }
  uint32_t do_increment_attempts(std::string_view id, Fence fence) override {
    check();
    return MemoryStorage::do_increment_attempts(id, fence);
  }
  void do_remove(std::string_view id, Fence fence) override {
    check();
    MemoryStorage::do_remove(id, fence);
  }
  void do_release(std::string_view id, Fence fence) override {
    check();
    MemoryStorage::do_release(id, fence);
  }
};

// Found by failing Redis over under load: an attempt whose storage went away before it
// began could not give back its claim either, and its retry 30 s later found the
// message claimed (by that dead attempt) and waited for the lease: 5 minutes.
TEST_F(QueueTest, AClaimThatCouldNotBeGivenBackDoesNotDelayTheRetry) {
  BreakableStorage broken_storage{clock};
  auto q = std::make_unique<Queue>(broken_storage, relay, quiet_policy(), clock);
  std::string id = enqueue(*q, message({"a@x.org"}));
  broken_storage.broken = broken_storage.reads_broken = true;
  q->run_pending();  // claimed; reading it and giving the claim back both fail
  EXPECT_EQ(relay.calls.size(), 0u);
  Timestamp retry = *q->next_due();
  EXPECT_EQ(retry, kStart + quiet_policy().error_retry);
  broken_storage.broken = broken_storage.reads_broken = false;
  clock.set(retry);
  q->run_pending();
  EXPECT_EQ(relay.calls.size(), 1u) << "the retry waited for the dead attempt's lease";
  EXPECT_THROW(broken_storage.get(id), KeyError);
}

// Found by probing: when marking the delivered recipients failed (ENOSPC), the whole
// message was retried every 30 s; recipients that had it got 4 copies in 90 s, and the
// attempt count stayed at 1.
TEST_F(QueueTest, ADeliveredRecipientIsNeverAttemptedAgainWhenItsMarkCannotBeStored) {
  BreakableStorage broken_storage{clock};
  auto q = std::make_unique<Queue>(broken_storage, relay, quiet_policy(), clock);
  relay.script("later@x.org", {RecipientResult::transient("451 4.2.0 try later")});
  std::string id = enqueue(*q, message({"now@x.org", "later@x.org"}));
  broken_storage.broken = true;
  q->run_pending();  // now@ delivered; its mark (and the attempt count) cannot be stored
  ASSERT_EQ(relay.calls.size(), 1u);
  for (int i = 0; i < 4; ++i) {  // the storage stays broken: retries attempt nothing
    clock.set(*q->next_due());
    q->run_pending();
  }
  EXPECT_EQ(relay.calls.size(), 1u);
  broken_storage.broken = false;
  clock.set(*q->next_due());
  q->run_pending();  // the pending marks are stored first; the attempt counts, with backoff
  EXPECT_EQ(relay.calls.size(), 1u);
  EXPECT_EQ(broken_storage.get(id).attempts, 1u);
  EXPECT_EQ(broken_storage.get(id).envelope.recipients, std::vector<std::string>{"later@x.org"});
  Timestamp next = *q->next_due();
  EXPECT_GE(next, clock.now() + quiet_policy().initial_backoff - 1);
  clock.set(next);
  q->run_pending();
  ASSERT_EQ(relay.calls.size(), 2u);
  EXPECT_EQ(relay.calls[1].recipients, std::vector<std::string>{"later@x.org"});
  EXPECT_EQ(relay.calls[1].attempt, 2u);
}

TEST_F(QueueTest, AMessageRemovedByAnOperatorWhileItsMarksWereUnsavedStaysRemoved) {
  BreakableStorage broken_storage{clock};
  auto q = std::make_unique<Queue>(broken_storage, relay, quiet_policy(), clock);
  relay.script("later@x.org", {RecipientResult::transient("451 4.2.0 try later")});
  std::string id = enqueue(*q, message({"now@x.org", "later@x.org"}));
  broken_storage.broken = true;
  q->run_pending();
  broken_storage.broken = false;
  broken_storage.remove(id);  // an operator's `slimta-queue remove`
  clock.set(*q->next_due());
  q->run_pending();
  EXPECT_EQ(relay.calls.size(), 1u);
  EXPECT_FALSE(q->next_due().has_value());
}

TEST_F(QueueTest, AMessageWhollyDeliveredIsNotSentAgainWhenItsRemovalFails) {
  BreakableStorage broken_storage{clock};
  auto q = std::make_unique<Queue>(broken_storage, relay, quiet_policy(), clock);
  std::string id = enqueue(*q, message({"a@x.org"}));
  broken_storage.broken = true;
  q->run_pending();
  for (int i = 0; i < 3; ++i) {
    clock.set(*q->next_due());
    q->run_pending();
  }
  broken_storage.broken = false;
  clock.set(*q->next_due());
  q->run_pending();
  EXPECT_EQ(relay.calls.size(), 1u);
  EXPECT_THROW(broken_storage.get(id), KeyError);
  EXPECT_FALSE(q->next_due().has_value());
}

TEST_F(QueueTest, DeferralsFollowTheBackoffAndArePersisted) {
  auto q = make();
  relay.script("b@x.org", {RecipientResult::transient("450 4.7.1 greylisted")});
  std::string id = enqueue(*q, message({"b@x.org"}));
  const double want[] = {300, 600, 1200, 2400, 3600, 3600, 3600};
  Timestamp now = kStart;
  for (size_t i = 0; i < std::size(want); ++i) {
    EXPECT_EQ(q->run_pending(), 1u) << "attempt " << i + 1;
    QueuedMessage m = storage.get(id);
    EXPECT_EQ(m.attempts, i + 1);
    EXPECT_EQ(m.timestamp, now + want[i]) << "after attempt " << i + 1;
    EXPECT_EQ(q->next_due(), now + want[i]);
    now += want[i];
    clock.set(now);
  }
  EXPECT_EQ(relay.calls.size(), std::size(want));
  for (size_t i = 0; i < relay.calls.size(); ++i) EXPECT_EQ(relay.calls[i].attempt, i + 1);

  // A restarted queue finds the stored time (retry times are not kept in memory only).
  auto q2 = make();
  EXPECT_EQ(q2->load(), 1u);
  EXPECT_EQ(q2->next_due(), now);
}

TEST_F(QueueTest, GivesUpAfterMaxAttemptsAndBouncesToTheSender) {
  QueuePolicy p = quiet_policy();
  p.max_attempts = 3;
  auto q = make(p);
  relay.script("b@x.org", {RecipientResult::transient("451 4.7.1 greylisted, try later")});
  std::string id = enqueue(*q, message({"b@x.org"}));
  for (int i = 0; i < 2; ++i) {
    q->run_pending();
    clock.set(*q->next_due());
  }
  EXPECT_EQ(storage.get(id).attempts, 2u);
  q->run_pending();  // third attempt: gives up, bounces; the bounce is then delivered
  ASSERT_EQ(relay.calls.size(), 4u);
  EXPECT_THROW(storage.get(id), KeyError);
  const auto& dsn = relay.calls[3];
  EXPECT_EQ(dsn.sender, "");  // the null sender
  EXPECT_EQ(dsn.recipients, (std::vector<std::string>{"alice@example.com"}));
  EXPECT_NE(dsn.envelope.body.find("451 4.7.1 greylisted, try later"), std::string::npos);
  EXPECT_TRUE(storage.load_all().empty());
  q->flush_counters();
  EXPECT_EQ(storage.counters()["bounced"], 1);
  EXPECT_EQ(storage.counters()["deferred"], 2);
}

TEST_F(QueueTest, AMessageWithTooManyHopsIsBouncedWithoutAnAttempt) {
  auto q = make();
  Envelope looped = message({"b@x.org"});
  for (int i = 0; i < 51; ++i)
    looped.headers.prepend("Received", "from a by b; hop " + std::to_string(i));
  std::string id = enqueue(*q, looped);
  Envelope fine = message({"c@x.org"});
  for (int i = 0; i < 50; ++i) fine.headers.prepend("Received", "from a by b");
  enqueue(*q, fine);
  q->run_pending();
  EXPECT_THROW(storage.get(id), KeyError);
  // The looped message never went out; the one at the limit did, and the bounce.
  ASSERT_EQ(relay.calls.size(), 2u);
  EXPECT_EQ(relay.calls[0].recipients, (std::vector<std::string>{"c@x.org"}));
  EXPECT_EQ(relay.calls[1].sender, "");
  EXPECT_NE(relay.calls[1].envelope.body.find("5.4.6"), std::string::npos);
  EXPECT_NE(relay.calls[1].envelope.body.find("Too many hops (51 Received: headers)"),
            std::string::npos);
}

TEST_F(QueueTest, GivesUpWhenTheMessageIsTooOld) {
  QueuePolicy p = quiet_policy();
  p.max_age = 3600;
  auto q = make(p);
  relay.script("b@x.org", {RecipientResult::transient("452 4.2.2 mailbox full")});
  std::string id = enqueue(*q, message({"b@x.org"}));
  // Attempts at +0, +300, +900, +2100 defer; the one at +4500 is past the age limit.
  for (double at : {0.0, 300.0, 900.0, 2100.0}) {
    clock.set(kStart + at);
    q->run_pending();
    ASSERT_NO_THROW(storage.get(id)) << "gave up too early, at +" << at;
  }
  EXPECT_EQ(q->next_due(), kStart + 2100 + 2400);
  clock.set(*q->next_due());
  q->run_pending();
  EXPECT_THROW(storage.get(id), KeyError);
  ASSERT_EQ(relay.calls.size(), 6u);  // 5 attempts + the bounce
  EXPECT_EQ(relay.calls[5].sender, "");
}

// Issue 34: Postfix's delay_warning_time and bounce_queue_lifetime, as options.
TEST_F(QueueTest, OneDelayWarningOnceTheDelayIsPassedThenTheBounce) {
  QueuePolicy p = quiet_policy();
  p.delay_warning = 1000;
  p.max_age = 5000;
  auto q = make(p);
  relay.script("b@x.org", {RecipientResult::transient("452 4.2.2 mailbox full")});
  std::string id = enqueue(*q, message({"ok@x.org", "b@x.org"}));
  // Attempts at +0, +300, +900, +2100, +4500; past the lifetime at the next.
  for (int i = 0; i < 20; ++i) {
    auto due = q->next_due();
    if (!due) break;
    clock.set(std::max(clock.now(), *due));
    q->run_pending();
  }
  EXPECT_THROW(storage.get(id), KeyError);
  std::vector<ScriptedRelay::Call> warnings, bounces;
  for (const auto& c : relay.calls) {
    if (!c.sender.empty()) continue;
    (c.envelope.body.find("Action: delayed") != std::string::npos ? warnings : bounces)
        .push_back(c);
  }
  ASSERT_EQ(warnings.size(), 1u);
  ASSERT_EQ(bounces.size(), 1u);
  const Envelope& w = warnings[0].envelope;
  EXPECT_EQ(w.recipients, (std::vector<std::string>{"alice@example.com"}));
  EXPECT_EQ(w.headers.get("Subject").value_or(""), "Delayed Mail (still being retried)");
  EXPECT_NE(w.body.find("Final-Recipient: rfc822; b@x.org"), std::string::npos) << w.body;
  EXPECT_EQ(w.body.find("ok@x.org"), std::string::npos) << "delivered at once";
  EXPECT_NE(w.body.find("Status: 4.2.2"), std::string::npos) << w.body;
  EXPECT_NE(w.body.find("Will-Retry-Until: " + rfc5322_date(kStart + 5000)), std::string::npos)
      << w.body;
  // Sent by the attempt at +2100, the first past +1000.
  EXPECT_EQ(w.timestamp, kStart + 2100);
  EXPECT_NE(bounces[0].envelope.body.find("Action: failed"), std::string::npos);
  q->flush_counters();
  EXPECT_EQ(storage.counters()["bounced"], 1) << "a warning is not a bounce";
}

TEST_F(QueueTest, ABounceHasItsOwnLifetime) {
  QueuePolicy p = quiet_policy();
  p.bounce_max_age = 600;
  auto q = make(p);
  relay.script("b@x.org", {RecipientResult::transient("452 4.2.2 mailbox full")});
  std::string bounce = enqueue(*q, message({"b@x.org"}, ""));
  std::string mail = enqueue(*q, message({"b@x.org"}));
  for (double at : {0.0, 300.0, 900.0}) {
    clock.set(kStart + at);
    q->run_pending();
  }
  EXPECT_THROW(storage.get(bounce), KeyError);  // given up at +900, past 600 s
  EXPECT_NO_THROW(storage.get(mail));           // 5 days
}

TEST_F(QueueTest, PermanentFailureBouncesAtOnceOnlyTheFailedRecipients) {
  auto q = make();
  relay.script("bad@x.org", {RecipientResult::permanent("550 5.1.1 <bad@x.org>: no such user")});
  relay.script("later@x.org", {RecipientResult::transient("451 4.3.0 try again")});
  std::string id = enqueue(*q, message({"ok@x.org", "bad@x.org", "later@x.org"}));
  q->run_pending();
  ASSERT_EQ(relay.calls.size(), 2u);  // the message, then its bounce
  const Envelope& dsn = relay.calls[1].envelope;
  EXPECT_EQ(dsn.sender, "");
  EXPECT_NE(dsn.body.find("bad@x.org"), std::string::npos);
  EXPECT_EQ(dsn.body.find("later@x.org"), std::string::npos);  // not failed (yet)
  QueuedMessage m = storage.get(id);
  EXPECT_EQ(m.envelope.recipients, (std::vector<std::string>{"later@x.org"}));
  EXPECT_EQ(m.delivered, (std::vector<size_t>{0, 1}));  // bad@ is never attempted again
}

// Issue 27, finding 5: what our own routing refused at once (no domain, no MX, a null
// MX, a loop) is not bounced to the sender of a client we do not vouch for: that bounce
// would carry an outsider's message to whatever sender it named. A peer's 5xx is.
TEST_F(QueueTest, WhatOurRoutingRefusedIsNotBouncedToAnOutsidersSender) {
  QueuePolicy policy = quiet_policy();
  int asked = 0;
  policy.from_outsider = [&](const Envelope& e) {
    ++asked;
    return e.client.ip == "203.0.113.9";
  };
  auto observer = std::make_shared<testing::EventRecorder>();
  policy.observers.push_back(observer);
  auto q = make(policy);
  relay.script("postmaster", {RecipientResult::refused_here("553 5.1.3 <postmaster>: no domain")});
  relay.script("user@nullmx.example", {RecipientResult::refused_here("556 5.1.10 null MX")});
  relay.script("bad@x.org", {RecipientResult::permanent("550 5.1.1 <bad@x.org>: no such user")});
  Envelope outsider = message({"postmaster", "user@nullmx.example", "bad@x.org"}, "victim@y.org");
  outsider.client.ip = "203.0.113.9";
  outsider.client.protocol = "ESMTP";
  enqueue(*q, outsider);
  q->run_pending();
  ASSERT_EQ(relay.calls.size(), 2u);  // the message, then a bounce for bad@x.org alone
  const Envelope& dsn = relay.calls[1].envelope;
  EXPECT_EQ(dsn.recipients, std::vector<std::string>{"victim@y.org"});
  EXPECT_NE(dsn.body.find("bad@x.org"), std::string::npos);
  EXPECT_EQ(dsn.body.find("nullmx.example"), std::string::npos);
  EXPECT_EQ(dsn.body.find("postmaster"), std::string::npos);
  EXPECT_TRUE(storage.load_all().empty());
  EXPECT_EQ(asked, 1);  // once a message
  size_t not_bounced = 0;
  for (const auto& f : observer->all<events::Failed>())
    not_bounced += f.gave_up.starts_with("not bounced");
  EXPECT_EQ(not_bounced, 2u);

  // From a client it vouches for, the same refusals are bounced.
  relay.calls.clear();
  Envelope trusted = message({"user@nullmx.example"}, "alice@example.com");
  trusted.client.ip = "127.0.0.1";
  enqueue(*q, trusted);
  q->run_pending();
  ASSERT_EQ(relay.calls.size(), 2u);
  EXPECT_NE(relay.calls[1].envelope.body.find("nullmx.example"), std::string::npos);
}

TEST_F(QueueTest, ABounceIsNeverBounced) {
  auto q = make();
  relay.script("alice@example.com", {RecipientResult::permanent("550 5.1.1 gone")});
  enqueue(*q, message({"alice@example.com"}, ""));
  q->run_pending();
  EXPECT_EQ(relay.calls.size(), 1u);
  EXPECT_TRUE(storage.load_all().empty());
  q->flush_counters();
  EXPECT_EQ(storage.counters().count("bounced"), 0u);

  // And the bounce of a failed message, failing itself, ends there too.
  relay.script("bob@x.org", {RecipientResult::permanent("550 5.1.1 no such user")});
  enqueue(*q, message({"bob@x.org"}, "alice@example.com"));
  q->run_pending();
  EXPECT_EQ(relay.calls.size(), 3u);  // message, bounce (fails), nothing more
  EXPECT_TRUE(storage.load_all().empty());
}

TEST_F(QueueTest, BounceIsAMultipartReportPythonsEmailPackageReads) {
  auto q = make();
  relay.script("bad@x.org", {RecipientResult::permanent("550 5.1.1 <bad@x.org>: no such user")});
  relay.script("full@x.org",
               {RecipientResult::permanent("552-5.2.2 mailbox full\r\n552 5.2.2 sorry")});
  relay.script("alice@example.com", {RecipientResult::transient("451 4.3.0 hold the bounce")});
  std::string id = enqueue(*q, message({"bad@x.org", "full@x.org", "ok@x.org"}));
  q->run_pending();
  auto entries = storage.load_all();
  ASSERT_EQ(entries.size(), 1u);  // the bounce, deferred
  std::string dsn_id = entries[0].id;
  ASSERT_NE(dsn_id, id);
  QueuedMessage dsn = storage.get(dsn_id);
  EXPECT_EQ(dsn.envelope.sender, "");
  testing::TempDir dir;
  testing::write_file(dir.sub("dsn.eml"), dsn.envelope.flatten());
  auto r =
      run_command({"python3", SLIMTA_SOURCE_DIR "/tests/queue/check_dsn.py", dir.sub("dsn.eml")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["defects"].empty()) << j["defects"];
  EXPECT_EQ(j["content_type"], "multipart/report");
  EXPECT_EQ(j["report_type"], "delivery-status");
  EXPECT_EQ(j["parts"],
            (nlohmann::json{"text/plain", "message/delivery-status", "text/rfc822-headers"}));
  EXPECT_EQ(j["to"], "alice@example.com");
  EXPECT_EQ(j["reporting_mta"], "dns; mx.test.example");
  ASSERT_EQ(j["recipients"].size(), 2u);
  EXPECT_EQ(j["recipients"][0]["final_recipient"], "rfc822; bad@x.org");
  EXPECT_EQ(j["recipients"][0]["action"], "failed");
  EXPECT_EQ(j["recipients"][0]["status"], "5.1.1");
  EXPECT_EQ(j["recipients"][0]["diagnostic"], "smtp; 550 5.1.1 <bad@x.org>: no such user");
  EXPECT_EQ(j["recipients"][1]["final_recipient"], "rfc822; full@x.org");
  EXPECT_EQ(j["recipients"][1]["status"], "5.2.2");
  EXPECT_EQ(j["recipients"][1]["diagnostic"], "smtp; 552-5.2.2 mailbox full 552 5.2.2 sorry");
  std::string text = j["text"];
  EXPECT_NE(text.find("<bad@x.org>: 550 5.1.1"), std::string::npos) << text;
  std::string headers = j["original_headers"];
  EXPECT_NE(headers.find("Subject: quarterly report"), std::string::npos) << headers;
  EXPECT_EQ(text.find("ok@x.org"), std::string::npos);
}

TEST_F(QueueTest, StatusCodesComeFromTheReply) {
  EXPECT_EQ(bounce::status_of("550 5.1.1 no such user"), "5.1.1");
  EXPECT_EQ(bounce::status_of("552-5.2.2 full"), "5.2.2");
  EXPECT_EQ(bounce::status_of("451 4.7.12 x"), "4.7.12");
  EXPECT_EQ(bounce::status_of("554 transaction failed"), "5.0.0");
  EXPECT_EQ(bounce::status_of("421 5.1.1 mismatched class"), "4.0.0");
  EXPECT_EQ(bounce::status_of("connection refused"), "4.0.0");
  EXPECT_EQ(bounce::status_of(""), "4.0.0");
}

TEST_F(QueueTest, AHeldMessageWaitsUntilReleased) {
  auto q = make();
  std::string id = enqueue(*q, message({"b@x.org"}));
  storage.hold(id, "abuse report #7", clock.now());
  EXPECT_EQ(q->run_pending(), 1u);  // claim refused: held
  EXPECT_TRUE(relay.calls.empty());
  EXPECT_EQ(q->next_due(), kStart + 60);
  clock.advance(60);
  q->run_pending();
  EXPECT_TRUE(relay.calls.empty());
  storage.release_hold(id);
  clock.advance(60);
  q->run_pending();
  EXPECT_EQ(relay.calls.size(), 1u);
  EXPECT_TRUE(storage.load_all().empty());
}

TEST_F(QueueTest, ARelayErrorIsATransientFailureForEveryRecipient) {
  auto q = make();
  relay.throw_error = "connection reset by peer";
  std::string id = enqueue(*q, message({"a@x.org", "b@x.org"}));
  q->run_pending();
  QueuedMessage m = storage.get(id);
  EXPECT_EQ(m.attempts, 1u);
  EXPECT_TRUE(m.delivered.empty());
  EXPECT_EQ(m.timestamp, kStart + 300);
}

TEST_F(QueueTest, EnqueueReportsEachEnvelopeAndStoresTheGoodOnes) {
  auto q = make();
  std::vector<Envelope> envs = {message({"a@x.org"}), message({}), message({"c@x.org"})};
  auto results = q->enqueue(envs);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].ok());
  EXPECT_FALSE(results[1].ok());
  EXPECT_NE(results[1].error.find("no recipients"), std::string::npos) << results[1].error;
  EXPECT_TRUE(results[2].ok());
  EXPECT_EQ(storage.load_all().size(), 2u);
  EXPECT_EQ(q->scheduled(), 2u);
}

TEST_F(QueueTest, BadPolicyIsRefusedNamingTheField) {
  QueuePolicy p;
  p.workers = 0;
  try {
    make(p);
    FAIL() << "accepted workers = 0";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("workers"), std::string::npos) << e.what();
  }
  p = QueuePolicy{};
  p.max_backoff = 1;
  EXPECT_THROW(make(p), InvalidArgument);
}

// Process A's attempt outlives its lease; B takes the message over and records its own
// result. A's late results are refused, and B's stand.
TEST_F(QueueTest, ASlowHolderWhoseLeaseWasTakenOverCannotOverwriteTheNewHolder) {
  QueuePolicy p = quiet_policy();
  p.lease = std::chrono::seconds(60);
  ScriptedRelay relay_b;
  Queue b(storage, relay_b, p, clock);
  auto a = make(p);
  relay.script("r@x.org", {RecipientResult::delivered()});               // A: delivered (late)
  relay_b.script("r@x.org", {RecipientResult::transient("451 4.3.0")});  // B: deferred
  std::string id = enqueue(*a, message({"r@x.org"}));
  relay.during_attempt = [&] {
    clock.advance(61);  // A's lease runs out mid-attempt
    b.schedule(QueueEntry{kStart, id});
    EXPECT_EQ(b.run_pending(), 1u);  // B claims (token 2), attempts, defers, releases
  };
  a->run_pending();
  QueuedMessage m = storage.get(id);  // A's remove() was refused: still stored
  EXPECT_EQ(m.attempts, 1u);          // B's deferral stands
  EXPECT_EQ(m.timestamp, kStart + 61 + 300);
  EXPECT_EQ(m.lease.token, 2u);
  EXPECT_EQ(relay_b.calls.size(), 1u);
  EXPECT_EQ(a->pending_counters()["lease_lost"], 1);
  EXPECT_FALSE(a->next_due().has_value());  // A let it go

  // The other way round: A's late deferral (set_timestamp) is refused too.
  relay.script("s@x.org", {RecipientResult::transient("451 4.3.0 late")});
  relay_b.script("s@x.org", {RecipientResult::transient("452 4.2.2 b's reply")});
  std::string id2 = enqueue(*a, message({"s@x.org"}));
  Timestamp b_next = 0;
  relay.during_attempt = [&] {
    clock.advance(61);
    b.schedule(QueueEntry{clock.now(), id2});
    b.run_pending();
    b_next = storage.get(id2).timestamp;
  };
  a->run_pending();
  m = storage.get(id2);
  EXPECT_EQ(m.attempts, 1u);  // B's one increment; A's was refused
  EXPECT_EQ(m.timestamp, b_next);
  EXPECT_EQ(a->pending_counters()["lease_lost"], 2);
}

TEST_F(QueueTest, ABusyMessageIsLookedAtAgainWhenTheLeaseRunsOut) {
  QueuePolicy p = quiet_policy();
  p.lease = std::chrono::seconds(60);
  auto q = make(p);
  std::string id = enqueue(*q, message({"r@x.org"}));
  ASSERT_EQ(storage.claim(id, std::chrono::seconds(60)).status, ClaimResult::Status::claimed);
  q->run_pending();  // busy: another holder
  EXPECT_TRUE(relay.calls.empty());
  ASSERT_TRUE(q->next_due().has_value());
  EXPECT_GE(*q->next_due(), kStart + 60);
  EXPECT_LT(*q->next_due(), kStart + 61);
  clock.set(*q->next_due());  // the holder died: its lease ran out
  q->run_pending();
  EXPECT_EQ(relay.calls.size(), 1u);
  EXPECT_TRUE(storage.load_all().empty());
}

// An attempt four times as long as the lease: the lease is renewed while it runs, so
// another process trying to claim the message finds it busy throughout, and it is
// delivered once.
TEST(QueueThreadsTest, AnAttemptLongerThanTheLeaseKeepsItsClaim) {
  MemoryStorage storage;  // leases judged by the system clock
  ScriptedRelay relay;
  QueuePolicy p = quiet_policy();
  p.workers = 1;
  p.lease = std::chrono::milliseconds(300);
  Queue q(storage, relay, p);
  std::string id = storage.write(message({"r@x.org"}), 0);
  std::atomic<int> busy{0}, claimed{0};
  relay.during_attempt = [&] {
    for (int i = 0; i < 12; ++i) {  // 1.2 s
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ClaimResult other = storage.claim(id, std::chrono::seconds(30));
      ++(other.status == ClaimResult::Status::busy ? busy : claimed);
    }
  };
  q.start();
  for (int i = 0; i < 500 && !storage.load_all().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  q.stop();
  EXPECT_EQ(claimed, 0) << "another claim got the message while its attempt ran";
  EXPECT_EQ(busy, 12);
  EXPECT_TRUE(storage.load_all().empty());  // the attempt's remove was not fenced out
  EXPECT_EQ(relay.calls.size(), 1u);
  EXPECT_EQ(storage.counters()["lease_lost"], 0);
}

TEST(QueueThreadsTest, StartDeliversEverythingWithWorkersAndStopFlushesCounters) {
  MemoryStorage storage;
  ScriptedRelay relay;
  QueuePolicy p = quiet_policy();
  p.workers = 4;
  Queue q(storage, relay, p);
  for (int i = 0; i < 200; ++i) storage.write(sample_envelope(1, 64, i), 0);  // found by load()
  q.start();
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(q.enqueue(message({"r@x.org"})).ok());
  for (int i = 0; i < 1000 && !storage.load_all().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  q.stop();
  EXPECT_TRUE(storage.load_all().empty());
  EXPECT_EQ(relay.calls.size(), 500u);
  Counters c = storage.counters();
  EXPECT_EQ(c["enqueued"], 300);
  EXPECT_EQ(c["removed"], 500);
  EXPECT_EQ(c["attempt"], 500);
}

}  // namespace
}  // namespace slimta
