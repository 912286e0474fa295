// RoutingRelay: each recipient to its domain's relay, the rest to the fallback, the
// results back in the recipients' order; a route that fails fails only its recipients.
#include <gtest/gtest.h>

#include <mutex>

#include "slimta/errors.h"
#include "slimta/routing_relay.h"

namespace slimta {
namespace {

using Kind = RecipientResult::Kind;

// Records what it was given; answers each recipient "250 <name> <recipient>", or
// throws when `fail` is set.
class RecordingRelay : public Relay {
 public:
  explicit RecordingRelay(std::string name, bool fail = false)
      : name_(std::move(name)), fail_(fail) {}
  std::vector<RecipientResult> attempt(const Envelope& env, uint32_t) override {
    std::lock_guard lock(mu_);
    seen.push_back(env.recipients);
    bodies.push_back(env.body);
    if (fail_) throw QueueError("connection refused");
    std::vector<RecipientResult> out;
    for (const auto& r : env.recipients)
      out.push_back(RecipientResult::delivered("250 " + name_ + " " + r));
    return out;
  }
  std::vector<std::vector<std::string>> seen;
  std::vector<std::string> bodies;

 private:
  std::mutex mu_;
  std::string name_;
  bool fail_;
};

Envelope envelope(std::vector<std::string> recipients) {
  Envelope env;
  env.sender = "a@example.com";
  env.recipients = std::move(recipients);
  env.body = "body\r\n";
  return env;
}

TEST(RoutingRelayTest, EachRecipientGoesToItsDomainsRouteAndResultsKeepTheirOrder) {
  auto ours = std::make_shared<RecordingRelay>("ours");
  auto other = std::make_shared<RecordingRelay>("other");
  auto fallback = std::make_shared<RecordingRelay>("fallback");
  RoutingRelay relay({{"Ours.Example", ours}, {"other.example", other}}, fallback);
  auto results = relay.attempt(envelope({"a@remote.example", "b@OURS.example", "c@other.example",
                                         "d@ours.example", "postmaster"}),
                               1);
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[0].reply, "250 fallback a@remote.example");
  EXPECT_EQ(results[1].reply, "250 ours b@OURS.example");
  EXPECT_EQ(results[2].reply, "250 other c@other.example");
  EXPECT_EQ(results[3].reply, "250 ours d@ours.example");
  EXPECT_EQ(results[4].reply, "250 fallback postmaster");
  EXPECT_EQ(ours->seen,
            (std::vector<std::vector<std::string>>{{"b@OURS.example", "d@ours.example"}}));
  EXPECT_EQ(other->seen.size(), 1u);
  EXPECT_EQ(fallback->seen,
            (std::vector<std::vector<std::string>>{{"a@remote.example", "postmaster"}}));
  EXPECT_EQ(ours->bodies[0], "body\r\n");
}

TEST(RoutingRelayTest, ARouteThatFailsFailsOnlyItsRecipientsTransiently) {
  auto broken = std::make_shared<RecordingRelay>("broken", /*fail=*/true);
  auto fallback = std::make_shared<RecordingRelay>("fallback");
  RoutingRelay relay({{"ours.example", broken}}, fallback);
  auto results = relay.attempt(envelope({"a@remote.example", "b@ours.example"}), 1);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].kind, Kind::delivered);  // not attempted again: no duplicate
  EXPECT_EQ(results[1].kind, Kind::transient);
  EXPECT_NE(results[1].reply.find("connection refused"), std::string::npos);
}

TEST(RoutingRelayTest, BadRoutesAreRefused) {
  auto r = std::make_shared<RecordingRelay>("r");
  EXPECT_THROW(RoutingRelay({{"", r}}, r), InvalidArgument);
  EXPECT_THROW(RoutingRelay({{"a@b", r}}, r), InvalidArgument);
  EXPECT_THROW(RoutingRelay({{"ok.example", nullptr}}, r), InvalidArgument);
  EXPECT_THROW(RoutingRelay({}, nullptr), InvalidArgument);
}

}  // namespace
}  // namespace slimta
