// The one door in-process: its checks in order, its Received: line and time from the
// injected clock, its stages, and the reply of every outcome of the store.
#include "slimta/reception.h"

#include <gtest/gtest.h>

#include "slimta/memory_storage.h"

namespace slimta {
namespace {

Envelope message(std::string body = "hello\r\n") {
  Envelope env;
  env.sender = "a@example.com";
  env.recipients = {"b@example.org"};
  env.client.ip = "192.0.2.7";
  env.client.name = "client.example";
  env.client.protocol = "ESMTP";
  env.parse("Subject: s\r\n\r\n" + body);
  return env;
}

// A stage that does what it is told, counting its calls.
class Stage : public ReceptionStage {
 public:
  explicit Stage(StageVerdict v, bool add = false, bool fail = false)
      : verdict_(std::move(v)), add_(add), fail_(fail) {}
  std::string name() const override { return "test"; }
  StageVerdict inspect(Envelope& env) override {
    ++calls;
    if (fail_) throw std::runtime_error("the filter at 10.0.0.1:11332 is down");
    if (add_) env.headers.prepend("X-Stage", "seen");
    return verdict_;
  }
  int calls = 0;

 private:
  StageVerdict verdict_;
  bool add_, fail_;
};

class ReceptionTest : public ::testing::Test {
 protected:
  Reception make(ReceptionOptions o = {}) {
    if (o.hostname.empty()) o.hostname = "mx.example";
    return Reception(Reception::into(storage_, clock_), Reception::room_in(storage_), o, clock_);
  }
  MemoryStorage storage_;
  ManualClock clock_{1'800'000'000};
};

TEST_F(ReceptionTest, StoresWithOurReceivedLineAndTheInjectedTime) {
  Reception door = make();
  ReceptionResult r = door.receive(message());
  ASSERT_TRUE(r.queued()) << r.reply;
  EXPECT_EQ(r.reply, "250 2.0.0 Ok: queued as " + r.id);
  QueuedMessage m = storage_.get(r.id);
  EXPECT_EQ(m.envelope.timestamp, 1'800'000'000);
  EXPECT_EQ(m.envelope.receiver, "mx.example");
  EXPECT_EQ(m.envelope.headers.fields().front().name, "Received");
  EXPECT_EQ(m.envelope.headers.fields().front().value(),
            "from client.example ([192.0.2.7]) by mx.example with ESMTP for <b@example.org>; " +
                rfc5322_date(1'800'000'000));
  EXPECT_EQ(storage_.counters()["enqueued"], 1);
}

// Issue 34, finding 9: the receive time was whole seconds, so delay= was up to 1 s off.
TEST_F(ReceptionTest, TheReceiveTimeKeepsItsFractionOfASecond) {
  clock_.advance(0.375);
  Reception door = make();
  ReceptionResult r = door.receive(message());
  ASSERT_TRUE(r.queued()) << r.reply;
  EXPECT_EQ(storage_.get(r.id).envelope.timestamp, 1'800'000'000.375);
}

TEST_F(ReceptionTest, TheReceivedLineSaysWhatIsKnownOfTheClient) {
  Envelope env = message();
  env.timestamp = 0;
  env.client = {};
  env.client.protocol = "local";
  env.recipients.push_back("c@example.org");
  EXPECT_EQ(received_field(env, "mx.example"), "by mx.example with local; " + rfc5322_date(0));
  env.client.ip = "::1";
  EXPECT_EQ(received_field(env, "mx.example"),
            "from [::1] by mx.example with local; " + rfc5322_date(0));
  env.client.name = "bad\x1b[31m";
  EXPECT_THROW(received_field(env, "mx.example"), InvalidArgument);
}

TEST_F(ReceptionTest, ChecksRefuseInOrderAndStoreNothing) {
  ReceptionOptions o;
  o.max_message_size = 180;
  o.max_hops = 3;
  Reception door = make(o);
  auto refused = [&](Envelope env) {
    ReceptionResult r = door.receive(std::move(env));
    EXPECT_EQ(r.outcome, ReceptionResult::Outcome::refused);
    return r.reply.substr(0, 9);
  };
  Envelope bad_sender = message();
  bad_sender.sender = "a b@example.com";
  EXPECT_EQ(refused(bad_sender), "501 5.1.7");
  Envelope bad_rcpt = message();
  bad_rcpt.recipients = {"no-domain"};
  EXPECT_EQ(refused(bad_rcpt), "501 5.1.3");
  bad_rcpt.recipients = {"x@example.org\r\nRCPT TO:<evil@x>"};
  EXPECT_EQ(refused(bad_rcpt), "501 5.1.3");
  Envelope none = message();
  none.recipients.clear();
  EXPECT_EQ(refused(none), "554 5.5.1");
  Envelope crowd = message();  // HTTP injection took 16,000 recipients
  o.max_recipients = 2;
  door.reload(o);
  crowd.recipients = {"a@example.org", "b@example.org", "c@example.org"};
  EXPECT_EQ(refused(crowd), "550 5.5.3");
  EXPECT_EQ(refused(message(std::string(200, 'x'))), "552 5.3.4");
  Envelope loop = message();
  for (int i = 0; i < 3; ++i) loop.headers.prepend("Received", "from x by y; hop");
  EXPECT_EQ(refused(loop), "554 5.4.6");
  // "Received :" (a blank before the colon, RFC 5322's obsolete syntax) is a hop too.
  Envelope spaced = message();
  spaced.parse(
      "Received : from a by b; hop\r\nReceived\t: from c by d; hop\r\n"
      "Received: from e by f; hop\r\nSubject: x\r\n\r\nbody\r\n");
  EXPECT_EQ(refused(spaced), "554 5.4.6");
  Envelope bad_helo = message();
  bad_helo.client.name = "evil\x07";
  EXPECT_EQ(refused(bad_helo), "501 5.5.4");
  EXPECT_TRUE(storage_.load_all().empty());
  // Two hops and ours make three: taken.
  Envelope two = message();
  for (int i = 0; i < 2; ++i) two.headers.prepend("Received", "from x by y; hop");
  EXPECT_TRUE(door.receive(std::move(two)).queued());
}

TEST_F(ReceptionTest, StagesRunInOrderAddHeadersRefuseAndDefer) {
  auto adds = std::make_shared<Stage>(StageVerdict::accept(), /*add=*/true);
  auto refuses = std::make_shared<Stage>(StageVerdict::refuse("550 5.7.1 spam"));
  ReceptionOptions o;
  o.stages = {adds, refuses};
  Reception door = make(o);
  ReceptionResult r = door.receive(message());
  EXPECT_EQ(r.outcome, ReceptionResult::Outcome::refused);
  EXPECT_EQ(r.reply, "550 5.7.1 spam");
  EXPECT_EQ(adds->calls, 1);
  EXPECT_EQ(refuses->calls, 1);

  o.stages = {adds};
  door.reload(o);
  r = door.receive(message());
  ASSERT_TRUE(r.queued());
  QueuedMessage stored = storage_.get(r.id);
  const auto& fields = stored.envelope.headers.fields();
  EXPECT_EQ(fields[0].name, "X-Stage");  // the stage saw our Received: line, then added
  EXPECT_EQ(fields[1].name, "Received");

  // A reply of the wrong class is corrected: a refusal never says 4xx, a deferral never 5xx.
  o.stages = {std::make_shared<Stage>(StageVerdict::refuse("451 4.7.1 later"))};
  door.reload(o);
  EXPECT_EQ(door.receive(message()).reply.substr(0, 3), "554");
  o.stages = {std::make_shared<Stage>(StageVerdict::defer("550 5.7.1 no"))};
  door.reload(o);
  r = door.receive(message());
  EXPECT_EQ(r.outcome, ReceptionResult::Outcome::deferred);
  EXPECT_EQ(r.reply.substr(0, 3), "451");
  // A stage that throws defers, and its error (naming a host) is not in the reply.
  o.stages = {std::make_shared<Stage>(StageVerdict::accept(), false, /*fail=*/true)};
  door.reload(o);
  r = door.receive(message());
  EXPECT_EQ(r.outcome, ReceptionResult::Outcome::deferred);
  EXPECT_EQ(r.reply.substr(0, 9), "451 4.3.0");
  EXPECT_EQ(r.reply.find("10.0.0.1"), std::string::npos);
  o.stages = {nullptr};
  EXPECT_THROW(door.reload(o), InvalidArgument);
}

TEST_F(ReceptionTest, EachStoreOutcomeHasItsReply) {
  auto with = [&](EnqueueResult result) {
    Reception door([result](Envelope&&) { return result; }, nullptr, {}, clock_);
    return door.receive(message());
  };
  EnqueueResult full;
  full.error = "no space left on /var/spool/slimta";
  full.retryable = full.storage_full = true;
  EXPECT_EQ(with(full).reply.substr(0, 9), "452 4.3.1");
  EXPECT_EQ(with(full).reply.find("/var/spool"), std::string::npos);
  EnqueueResult down;
  down.error = "redis 10.0.0.2:6379 is down";
  down.retryable = true;
  ReceptionResult r = with(down);
  EXPECT_EQ(r.outcome, ReceptionResult::Outcome::deferred);
  EXPECT_EQ(r.reply.substr(0, 9), "451 4.3.0");
  EnqueueResult bad;
  bad.error = "bad";
  EXPECT_EQ(with(bad).reply.substr(0, 9), "554 5.6.0");
  EnqueueResult ok;
  ok.id = "abc";
  EXPECT_TRUE(with(ok).queued());
  // The Room is what has_room() asks before the data; the write enforces the guard.
  Reception door([](Envelope&&) { return EnqueueResult{}; }, [](size_t b) { return b < 10; });
  EXPECT_TRUE(door.has_room(0));
  EXPECT_FALSE(door.has_room(10));
  EXPECT_TRUE(Reception([](Envelope&&) { return EnqueueResult{}; }, nullptr).has_room(1 << 30));
}

}  // namespace
}  // namespace slimta
