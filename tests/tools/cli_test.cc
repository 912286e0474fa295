// slimta-queue, run as a separate process the way an operator or a script would.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "slimta/disk_storage.h"
#include "slimta/open_storage.h"
#include "slimta/redis_storage.h"
#include "support/moto_server.h"
#include "support/redis_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::CommandResult;
using testing::run_command;

class CliTest : public ::testing::Test {
 protected:
  CommandResult q(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), SLIMTA_QUEUE_BIN);
    args.push_back("--storage");
    args.push_back(storage_url_);
    return run_command(args, input, env_);
  }
  // Enqueues message_ on storage_url_ and checks list --json and show --raw report it;
  // returns its id (empty after a failed assertion).
  std::string enqueue_and_list() {
    auto r = q({"enqueue", "--from", "a@example.com", "--to", "b@example.org"}, message_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::string id = last_line(r.out);
    auto j = nlohmann::json::parse(q({"list", "--json"}).out);
    EXPECT_EQ(j.size(), 1u);
    if (j.size() != 1) return "";
    EXPECT_EQ(j[0]["id"], id);
    std::string raw = q({"show", id, "--raw"}).out;  // under the door's Received: line
    EXPECT_TRUE(raw.starts_with("Received: by ")) << raw;
    EXPECT_TRUE(raw.ends_with("\r\n" + message_)) << raw;
    return id;
  }
  std::string last_line(const std::string& out) {
    std::string s = out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s.substr(s.rfind('\n') == std::string::npos ? 0 : s.rfind('\n') + 1);
  }

  testing::TempDir dir_;
  std::string spool_ = dir_.sub("spool");
  std::string storage_url_ = "disk:" + spool_;
  testing::Environment env_;  // for the slimta-queue it runs
  const std::string message_ =
      "From: Alice <alice@example.com>\r\nTo: bob@example.org, \"C, Carol\" <carol@example.org>\r\n"
      "Bcc: dave@example.org\r\nSubject: hello\r\n\r\nbody \xe9\r\n";
};

TEST_F(CliTest, EnqueueFromFileWithExplicitEnvelopeThenListShowAndRemove) {
  testing::write_file(dir_.sub("m.eml"), message_);
  auto r = q({"enqueue", dir_.sub("m.eml"), "--from", "s@example.com", "--to", "x@example.net",
              "--to", "y@example.net"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = last_line(r.out);
  ASSERT_TRUE(is_valid_id(id)) << r.out;

  auto list = q({"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto j = nlohmann::json::parse(list.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], id);
  EXPECT_EQ(j[0]["sender"], "s@example.com");
  EXPECT_EQ(j[0]["recipients"],
            (nlohmann::json{{{"address", "x@example.net"}, {"state", "pending"}},
                            {{"address", "y@example.net"}, {"state", "pending"}}}));
  EXPECT_EQ(j[0]["attempts"], 0);
  EXPECT_TRUE(j[0]["next_attempt_unix"].is_number());

  // The message as given, under the Received: line of the door (reception.h).
  auto raw = q({"show", id, "--raw"});
  EXPECT_EQ(raw.exit_code, 0);
  EXPECT_TRUE(raw.out.starts_with("Received: by " + host_name() + " with local; ")) << raw.out;
  EXPECT_TRUE(raw.out.ends_with("\r\n" + message_)) << raw.out;
  EXPECT_EQ(j[0]["size"], raw.out.size());

  auto show = q({"show", id});
  EXPECT_EQ(show.exit_code, 0);
  EXPECT_NE(show.out.find("s@example.com"), std::string::npos);
  EXPECT_NE(show.out.find("y@example.net"), std::string::npos);

  auto human = q({"list"});
  EXPECT_NE(human.out.find(id), std::string::npos);
  EXPECT_NE(human.out.find("1 Request"), std::string::npos);

  EXPECT_EQ(q({"remove", id}).exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(q({"list", "--json"}).out).size(), 0u);
  EXPECT_NE(q({"show", id}).exit_code, 0);
}

TEST_F(CliTest, EnqueueFromStdinTakesTheEnvelopeFromHeaders) {
  auto r = q({"enqueue"}, message_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = last_line(r.out);
  auto got = DiskStorage(spool_).get(id);
  EXPECT_EQ(got.envelope.sender, "alice@example.com");
  EXPECT_EQ(got.envelope.recipients,
            (std::vector<std::string>{"bob@example.org", "carol@example.org", "dave@example.org"}));
  EXPECT_FALSE(got.envelope.headers.get("Bcc")) << "Bcc must not be delivered";
}

TEST_F(CliTest, StorageOptionWorksBeforeTheSubcommandToo) {
  auto r = run_command(
      {SLIMTA_QUEUE_BIN, "--storage", storage_url_, "enqueue", "--to", "a@b.c", "--from", ""},
      message_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(
      run_command({SLIMTA_QUEUE_BIN, "--storage", storage_url_, "--json", "list"}).out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["sender"], "");
}

TEST_F(CliTest, RetryMakesMessagesDueNow) {
  DiskStorage storage(spool_);
  std::string a = storage.write(testing::sample_envelope(), 4000000000.0);
  std::string b = storage.write(testing::sample_envelope(), 4000000000.0);
  auto r = q({"retry", a});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  double now = static_cast<double>(::time(nullptr));
  EXPECT_LT(storage.get(a).timestamp, now + 5);
  EXPECT_EQ(storage.get(b).timestamp, 4000000000.0);
  EXPECT_EQ(q({"retry", "--all"}).exit_code, 0);
  EXPECT_LT(storage.get(b).timestamp, now + 5);
}

TEST_F(CliTest, RemoveAllEmptiesTheQueueAndInfoCounts) {
  DiskStorage storage(spool_);
  size_t bytes = 0;
  for (int i = 0; i < 5; ++i) {
    Envelope env = testing::sample_envelope(1, 1000 + i, i);
    bytes += env.message_size();
    storage.write(env, i);
  }
  auto info = nlohmann::json::parse(q({"info", "--json"}).out);
  EXPECT_EQ(info["messages"], 5);
  EXPECT_EQ(info["bytes"], bytes);
  EXPECT_EQ(q({"remove", "--all"}).exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(q({"info", "--json"}).out)["messages"], 0);
  EXPECT_NE(q({"info"}).out.find("messages:     0"), std::string::npos);
}

TEST_F(CliTest, HoldKeepsAMessageOutOfDeliveryUntilReleaseAndListShowsIt) {
  DiskStorage storage(spool_);
  std::string a = storage.write(testing::sample_envelope(), 1);
  std::string b = storage.write(testing::sample_envelope(), 2);
  auto r = q({"hold", a, "--reason", "abuse report #7"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "held " + a + "\n");
  ASSERT_TRUE(storage.get(a).hold.has_value());
  EXPECT_EQ(storage.get(a).hold->reason, "abuse report #7");
  EXPECT_NEAR(storage.get(a).hold->since, static_cast<double>(::time(nullptr)), 5);
  EXPECT_EQ(storage.claim(a, std::chrono::seconds(5)).status, ClaimResult::Status::held);

  std::string list = q({"list"}).out;
  EXPECT_NE(list.find(a + "!"), std::string::npos) << list;  // postqueue's mark for held
  EXPECT_NE(list.find("abuse report #7"), std::string::npos) << list;
  EXPECT_EQ(list.find(b + "!"), std::string::npos) << list;
  auto j = nlohmann::json::parse(q({"list", "--json"}).out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["state"], "held");
  EXPECT_EQ(j[0]["hold"]["reason"], "abuse report #7");
  EXPECT_EQ(j[1]["state"], "queued");
  EXPECT_NE(q({"show", a}).out.find("state:        held"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(q({"info", "--json"}).out)["held"], 1);

  // Seen: hold --all overwrote the operator's reason and time with the default.
  Hold before = *storage.get(a).hold;
  r = q({"hold", "--all"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("already held " + a + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("held " + b + "\n"), std::string::npos) << r.out;
  EXPECT_EQ(*storage.get(a).hold, before);
  EXPECT_EQ(storage.get(b).hold->reason, "held by an operator");
  r = q({"release", "--all", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["released"].size(), 2u);
  // Seen: release said "released" of a message that was not held.
  r = q({"release", a});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "not held " + a + "\n");
  // Issue 34, finding 6: retry of a held message said "retried"; it is made due at its
  // release, and says so.
  q({"hold", b});
  r = q({"retry", b});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "due at its release (held) " + b + "\n");
  EXPECT_TRUE(storage.get(b).hold.has_value());
  q({"release", b});
  EXPECT_FALSE(storage.get(a).hold.has_value());
  EXPECT_EQ(storage.claim(a, std::chrono::seconds(5)).status, ClaimResult::Status::claimed);
  EXPECT_NE(q({"list"}).out.find(a + "*"), std::string::npos);  // being attempted

  auto missing = q({"hold", "0123456789abcdef"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("0123456789abcdef"), std::string::npos) << missing.err;
  EXPECT_EQ(q({"release"}).exit_code, 2);  // neither ids nor --all
}

TEST_F(CliTest, ShapeCountsMessagesByRecipientDomainAndAge) {
  DiskStorage storage(spool_);
  double now = static_cast<double>(::time(nullptr));
  auto add = [&](std::vector<std::string> rcpts, double age_minutes) {
    Envelope env = testing::sample_envelope(1);
    env.recipients = std::move(rcpts);
    env.timestamp = now - age_minutes * 60;
    storage.write(env, 0);
  };
  add({"a@Example.ORG", "b@example.org"}, 1);  // counted once for example.org
  add({"c@example.org", "d@other.net"}, 30);
  add({"e@other.net"}, 2000);
  auto j = nlohmann::json::parse(q({"shape", "--json"}).out);
  EXPECT_EQ(j["total"]["total"], 3);
  EXPECT_EQ(j["total"]["5"], 1);
  EXPECT_EQ(j["total"]["40"], 1);
  EXPECT_EQ(j["total"]["1280+"], 1);
  ASSERT_EQ(j["domains"].size(), 2u);
  for (const auto& d : j["domains"]) {
    if (d["domain"] == "example.org") {
      EXPECT_EQ(d["total"], 2);
      EXPECT_EQ(d["5"], 1);
      EXPECT_EQ(d["40"], 1);
    } else {
      EXPECT_EQ(d["domain"], "other.net");
      EXPECT_EQ(d["total"], 2);
      EXPECT_EQ(d["40"], 1);
      EXPECT_EQ(d["1280+"], 1);
    }
  }
  std::string table = q({"shape"}).out;
  EXPECT_NE(table.find("TOTAL"), std::string::npos) << table;
  EXPECT_NE(table.find("1280+"), std::string::npos) << table;
  EXPECT_NE(table.find("example.org"), std::string::npos) << table;
}

TEST_F(CliTest, InfoShowsTheQueuesEventCounters) {
  DiskStorage storage(spool_);
  storage.add_counters({{"delivered", 12}, {"deferred", 3}});
  auto j = nlohmann::json::parse(q({"info", "--json"}).out);
  EXPECT_EQ(j["events"]["delivered"], 12);
  EXPECT_EQ(j["events"]["deferred"], 3);
  std::string text = q({"info"}).out;
  EXPECT_NE(text.find("delivered:"), std::string::npos) << text;
  EXPECT_NE(text.find("12"), std::string::npos) << text;
}

// "2026-11-28T11:25:16Z"
bool is_rfc3339(const nlohmann::json& v) {
  static const std::regex re(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)");
  return v.is_string() && std::regex_match(v.get<std::string>(), re);
}

TEST_F(CliTest, JsonTimesAreRfc3339AndRecipientsCarryTheirState) {
  DiskStorage storage(spool_);
  Envelope env = testing::sample_envelope(3);
  env.timestamp = 1795000000;
  std::string held = storage.write(env, 1795000100);  // long past: must not show as next
  const size_t one[] = {1};
  storage.set_recipients_delivered(held, one);
  storage.hold(held, "spam check", 1795000200);
  double later = static_cast<double>(::time(nullptr)) + 3600;
  std::string queued = storage.write(testing::sample_envelope(1), later);

  auto list = nlohmann::json::parse(q({"list", "--json"}).out);
  ASSERT_EQ(list.size(), 2u);
  for (const auto& m : list) {
    if (m["id"] == held) {
      EXPECT_EQ(m["recipients"],
                (nlohmann::json{{{"address", "rcpt0@example.org"}, {"state", "pending"}},
                                {{"address", "rcpt1@example.org"}, {"state", "delivered"}},
                                {{"address", "rcpt2@example.org"}, {"state", "pending"}}}));
      EXPECT_TRUE(m["next_attempt"].is_null()) << m;  // held: no attempt is due
      EXPECT_TRUE(is_rfc3339(m["hold"]["since"])) << m;
      EXPECT_TRUE(m["hold"]["since_unix"].is_number()) << m;
    } else {
      EXPECT_TRUE(is_rfc3339(m["next_attempt"])) << m;
      EXPECT_EQ(m["next_attempt_unix"], later) << m;
    }
  }
  auto show = nlohmann::json::parse(q({"show", held, "--json"}).out);
  EXPECT_EQ(show["received"], "2026-11-18T11:06:40Z") << show;
  EXPECT_EQ(show["received_unix"], 1795000000) << show;

  // info's next attempt is the queued message's, not the held one's old time.
  auto info = nlohmann::json::parse(q({"info", "--json"}).out);
  EXPECT_TRUE(is_rfc3339(info["next_attempt"])) << info;
  EXPECT_EQ(info["next_attempt_unix"], later) << info;
  std::string text = q({"list"}).out;
  EXPECT_EQ(text.find("2026-11-18 11:08:20"), std::string::npos) << text;
  EXPECT_EQ(q({"info"}).out.find("2026-11-18 11:08:20"), std::string::npos);
  EXPECT_EQ(q({"show", held}).out.find("next attempt: 2026-11-18 11:08:20"), std::string::npos);
}

TEST_F(CliTest, ListAndShowGiveTheReplyThatDeferredTheLastAttempt) {
  DiskStorage storage(spool_);
  std::string id = storage.write(testing::sample_envelope(1), 1);
  Fence fence{storage.claim(id, std::chrono::seconds(30)).lease.token};
  storage.set_timestamp(id, 2000000000, fence, "451 4.2.1 <rcpt0@example.org>: mailbox busy");
  storage.release(id, fence);
  std::string list = q({"list"}).out;
  EXPECT_NE(list.find("(451 4.2.1 <rcpt0@example.org>: mailbox busy)"), std::string::npos) << list;
  EXPECT_EQ(nlohmann::json::parse(q({"list", "--json"}).out)[0]["last_reply"],
            "451 4.2.1 <rcpt0@example.org>: mailbox busy");
  EXPECT_NE(q({"show", id}).out.find("last reply:   451 4.2.1"), std::string::npos);
}

TEST_F(CliTest, BounceReturnsTheMessageToItsSenderNow) {
  DiskStorage storage(spool_);
  Envelope env = testing::sample_envelope(2);
  env.sender = "alice@example.com";
  std::string id = storage.write(env, 1);
  const size_t first[] = {0};
  storage.set_recipients_delivered(id, first);
  Envelope from_null = testing::sample_envelope(1);
  from_null.sender = "";
  std::string null_id = storage.write(from_null, 1);

  auto r = q({"bounce", id, null_id, "--reason", "spam run, stopped"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bounced " + id), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("removed " + null_id), std::string::npos) << r.out;  // never bounced
  auto left = storage.load_all();
  ASSERT_EQ(left.size(), 1u);  // the DSN alone
  QueuedMessage dsn = storage.get(left[0].id);
  EXPECT_EQ(dsn.envelope.sender, "");
  EXPECT_EQ(dsn.envelope.recipients, (std::vector<std::string>{"alice@example.com"}));
  std::string text = dsn.envelope.flatten();
  EXPECT_NE(text.find("Final-Recipient: rfc822; rcpt1@example.org"), std::string::npos) << text;
  EXPECT_EQ(text.find("Final-Recipient: rfc822; rcpt0@example.org"), std::string::npos);
  EXPECT_NE(text.find("spam run, stopped"), std::string::npos) << text;
  EXPECT_EQ(q({"bounce", id}).exit_code, 1);  // gone
}

TEST_F(CliTest, EnqueueIsCountedInInfo) {
  ASSERT_EQ(q({"enqueue", "--from", "a@example.com", "--to", "b@example.org"}, message_).exit_code,
            0);
  auto info = nlohmann::json::parse(q({"info", "--json"}).out);
  EXPECT_EQ(info["events"]["enqueued"], 1) << info;
}

TEST_F(CliTest, ShowIndentsFoldedHeaderLines) {
  Envelope env;
  env.parse("Subject: one\r\n two\r\n\tthree\r\nX-A: b\r\n\r\nbody\r\n");
  env.sender = "a@example.com";
  env.recipients = {"b@example.org"};
  std::string id = DiskStorage(spool_).write(env, 1);
  std::string out = q({"show", id}).out;
  EXPECT_NE(out.find("  Subject: one\n   two\n  \tthree\n  X-A: b\n"), std::string::npos) << out;
}

TEST_F(CliTest, ShowEscapesControlCharactersInStoredData) {
  Envelope env = testing::sample_envelope(1);
  env.client.name = "evil\x1b[2J\x07";
  env.sender = "a\x1b]0;x\x07@example.com";
  env.headers.prepend("X-Trap", "value");
  std::string id = open_storage(storage_url_)->write(env, 1);
  auto r = q({"show", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(r.out.find('\x07'), std::string::npos);
  EXPECT_NE(r.out.find("(helo evil\\x1b[2J\\x07)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("a\\x1b]0;x\\x07@example.com"), std::string::npos) << r.out;
}

TEST_F(CliTest, OneAddressPerToAndTheFileAfterIt) {
  testing::write_file(dir_.sub("m.eml"), "Subject: x\r\n\r\nbody\r\n");
  auto r = q({"enqueue", "--from", "a@example.com", "--to", "b@example.org", dir_.sub("m.eml")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(q({"list", "--json"}).out);
  ASSERT_EQ(j.size(), 1u);
  ASSERT_EQ(j[0]["recipients"].size(), 1u) << j.dump();
  EXPECT_EQ(j[0]["recipients"][0]["address"], "b@example.org") << j.dump();
}

// Issue 34, finding 8: before serve's first start the package's /var/spool/slimta is an
// empty directory, and `list` said "no spool" (Postfix: "Mail queue is empty").
TEST_F(CliTest, AnEmptyDirectoryIsAnEmptyQueue) {
  std::string empty = dir_.sub("empty-spool");
  std::filesystem::create_directory(empty);
  auto r = run_command({SLIMTA_QUEUE_BIN, "list", "--storage", "disk:" + empty});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Mail queue is empty\n");
  r = run_command({SLIMTA_QUEUE_BIN, "info", "--json", "--storage", "disk:" + empty});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["messages"], 0) << r.out;
}

// Issue 34, finding 6: with a smarthost, `suspend exmaple.org` (a typo) and `suspend
// example.org` (a recipient domain) succeeded silently and mail flowed; `destinations`
// counted the waiting mail under the recipient domain and 0 under the smarthost; `list`
// did not say that a message waited for a suspended destination.
TEST_F(CliTest, SuspendDestinationsAndListSpeakOfTheDestinationsServeUses) {
  std::string config = dir_.sub("slimta.toml");
  testing::write_file(config,
                      "[serve]\nsmarthost = \"127.0.0.1:9\"\n"
                      "route = [\"routed.example=127.0.0.1:10\"]\n");
  auto qc = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config});
    return q(args);
  };
  auto r = q({"enqueue", "--from", "a@example.com", "--to", "b@example.org"}, message_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& name : {std::string("exmaple.org"), std::string("example.org")}) {
    r = qc({"suspend", name});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(
        r.err.find("warning: '" + name + "' is not a destination of this configuration: mail for " +
                   name + " goes to '127.0.0.1:9'"),
        std::string::npos)
        << r.err;
    qc({"resume", name});
  }
  for (const std::string& name : {std::string("routed.example"), std::string("127.0.0.1:9")}) {
    r = qc({"suspend", name});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.find("warning"), std::string::npos) << name << ": " << r.err;
  }
  // The message waits under the smarthost, and list says why it does not go.
  auto j = nlohmann::json::parse(qc({"destinations", "--json"}).out);
  std::map<std::string, int> waiting;
  for (const auto& d : j) waiting[d["destination"]] = d["waiting"];
  EXPECT_EQ(waiting["127.0.0.1:9"], 1) << j.dump();
  EXPECT_EQ(waiting.count("example.org"), 0u) << j.dump();
  std::string listed = qc({"list"}).out;
  EXPECT_NE(listed.find("(waits for 127.0.0.1:9, suspended until resumed)"), std::string::npos)
      << listed;
  auto l = nlohmann::json::parse(qc({"list", "--json"}).out);
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["waits_for"][0]["destination"], "127.0.0.1:9") << l.dump();
  qc({"resume", "127.0.0.1:9"});
  EXPECT_EQ(qc({"list"}).out.find("waits for"), std::string::npos);
}

// Issue 34: the API selected by domain, state and age; the CLI only by ids or --all.
// Postfix's postsuper takes ids from stdin (-d -) and postqueue flushes one destination
// (-s). The CLI now takes the API's selectors, a sender and a destination too.
TEST_F(CliTest, SelectorsTakeMessagesByDomainSenderStateAgeDestinationOrStdin) {
  auto enqueue = [&](const std::string& from, const std::string& to) {
    auto r = q({"enqueue", "--from", from, "--to", to}, message_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return last_line(r.out);
  };
  std::string a = enqueue("s1@example.com", "x@one.example");
  std::string b = enqueue("S2@example.com", "y@two.example");
  std::string c = enqueue("", "z@one.example");
  auto lines = [](const std::string& text) {
    std::set<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) out.insert(l);
    return out;
  };
  auto r = q({"hold", "--domain", "ONE.example"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines(r.out), (std::set<std::string>{"held " + a, "held " + c}));
  r = q({"release", "--state", "held", "--sender", "<>"});
  EXPECT_EQ(lines(r.out), (std::set<std::string>{"released " + c}));
  r = q({"retry", "--sender", "s2@example.COM"});
  EXPECT_EQ(lines(r.out), (std::set<std::string>{"retried " + b}));
  r = q({"retry", "--destination", "two.example"});  // MX delivery: the domain
  EXPECT_EQ(lines(r.out), (std::set<std::string>{"retried " + b}));
  // Nothing taken: said, and exit 1.
  r = q({"hold", "--older-than", "1d"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("no message matches"), std::string::npos) << r.err;
  // Ids from standard input, as postqueue -p marks them.
  r = q({"remove", "-"}, "  " + a + "!\n\n" + c + "\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines(r.out), (std::set<std::string>{"removed " + a, "removed " + c}));
  // Mistakes are named.
  r = q({"hold", b, "--domain", "two.example"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not both"), std::string::npos) << r.err;
  r = q({"hold", "--state", "frozen"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("state 'frozen': queued, held or active"), std::string::npos) << r.err;
  r = q({"hold", "--older-than", "soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("duration 'soon'"), std::string::npos) << r.err;
  EXPECT_EQ(nlohmann::json::parse(q({"list", "--json"}).out).size(), 1u);
}

TEST_F(CliTest, ReadOnlyCommandsOnAMissingSpoolCreateNothing) {
  std::string missing = dir_.sub("nonexistent/x");
  for (std::vector<std::string> cmd :
       {std::vector<std::string>{"list"}, {"info"}, {"shape"}, {"retry", "--all"}}) {
    cmd.insert(cmd.end(), {"--storage", "disk:" + missing});
    cmd.insert(cmd.begin(), SLIMTA_QUEUE_BIN);
    auto r = run_command(cmd);
    EXPECT_EQ(r.exit_code, 1) << cmd[1];
    EXPECT_NE(r.err.find("no spool at " + missing), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_.sub("nonexistent")));
  // enqueue makes one.
  auto r = run_command({SLIMTA_QUEUE_BIN, "enqueue", "--from", "a@example.com", "--to",
                        "b@example.org", "--storage", "disk:" + missing},
                       "Subject: x\r\n\r\nbody\r\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_command({SLIMTA_QUEUE_BIN, "list", "--storage", "disk:" + missing});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(CliTest, VersionAndUnknownCommands) {
  auto r = run_command({SLIMTA_QUEUE_BIN, "--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.substr(0, 13), "slimta-queue ");
  EXPECT_EQ(run_command({SLIMTA_QUEUE_BIN, "-V"}).out, r.out);
  r = run_command({SLIMTA_QUEUE_BIN, "lst", "--storage", storage_url_});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'lst'; did you mean 'list'?"), std::string::npos) << r.err;
  r = run_command({SLIMTA_QUEUE_BIN, "frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("did you mean"), std::string::npos) << r.err;
}

TEST_F(CliTest, SubcommandHelpShowsTheGlobalOptions) {
  for (const char* sub : {"list", "serve", "enqueue"}) {
    auto r = run_command({SLIMTA_QUEUE_BIN, sub, "--help"});
    EXPECT_EQ(r.exit_code, 0) << sub;
    for (const char* opt : {"--storage", "--config", "--json", "--storage-timeout"})
      EXPECT_NE(r.out.find(opt), std::string::npos) << sub << " --help lacks " << opt << r.out;
  }
}

TEST_F(CliTest, BadInputGetsAClearErrorAndANonZeroExit) {
  DiskStorage{spool_};  // an empty spool (read-only commands create none)
  auto unknown = q({"show", "0123456789abcdef"});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("no message with id '0123456789abcdef'"), std::string::npos)
      << unknown.err;

  auto retry = q({"retry", "0123456789abcdef"});
  EXPECT_NE(retry.exit_code, 0);

  auto evil = q({"show", "../../etc/passwd"});
  EXPECT_NE(evil.exit_code, 0);
  EXPECT_NE(evil.err.find("invalid message id"), std::string::npos) << evil.err;

  auto missing = q({"enqueue", dir_.sub("no-such-file.eml")});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("no-such-file.eml"), std::string::npos) << missing.err;

  for (std::string bad : {std::string("b@example.org\r\nRCPT TO:<evil@x>"),
                          std::string("no-domain"), std::string("sp ace@example.org")}) {
    auto r = q({"enqueue", "--from", "a@example.com", "--to", bad}, message_);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.err.find("501 5.1.3 Bad recipient address syntax"), std::string::npos) << r.err;
  }
  auto bad_sender = q({"enqueue", "--from", "a@b\nc", "--to", "x@example.org"}, message_);
  EXPECT_NE(bad_sender.exit_code, 0);
  EXPECT_NE(bad_sender.err.find("501 5.1.7 Bad sender address syntax"), std::string::npos)
      << bad_sender.err;
  EXPECT_EQ(nlohmann::json::parse(q({"list", "--json"}).out).size(), 0u);  // nothing was queued

  auto no_rcpt = q({"enqueue"}, "From: a@b.c\r\n\r\nx");
  EXPECT_NE(no_rcpt.exit_code, 0);
  EXPECT_NE(no_rcpt.err.find("no recipients"), std::string::npos) << no_rcpt.err;

  for (std::string url : {"nonsense", "disk:", "ftp://x", "memory:extra"}) {
    auto bad = run_command({SLIMTA_QUEUE_BIN, "--storage", url, "list"});
    EXPECT_NE(bad.exit_code, 0) << url;
    EXPECT_NE(bad.err.find(url), std::string::npos) << url << ": " << bad.err;
  }

  auto both = q({"remove", "abc", "--all"});
  EXPECT_NE(both.exit_code, 0);
  // Issue 34, finding 6: removing an unknown id said "removed" and exited 0.
  auto nothing = q({"remove", "0123456789abcdef"});
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_EQ(nothing.out, "");
  EXPECT_NE(nothing.err.find("no message with id '0123456789abcdef'"), std::string::npos)
      << nothing.err;
}

TEST_F(CliTest, WorksOnRedisStorageUrls) {
  if (testing::RedisServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  testing::RedisServer& server = testing::shared_redis();
  std::string prefix = "cli" + random_hex(4) + ":";
  for (std::string url :
       {"redis://127.0.0.1:" + std::to_string(server.port()) + "/2?prefix=" + prefix,
        "redis+unix://" + server.socket_path() + "?db=2&prefix=" + prefix}) {
    SCOPED_TRACE(url);
    storage_url_ = url;
    ASSERT_FALSE(enqueue_and_list().empty());
    // The shared test server keeps no append-only file: info says so.
    EXPECT_NE(q({"info"}).out.find("durable:      no: a crash can lose accepted mail"),
              std::string::npos);
    EXPECT_EQ(q({"remove", "--all"}).exit_code, 0);
  }
  // What the CLI stored is in db 2 under the prefix, where RedisStorage finds it.
  storage_url_ = "redis://127.0.0.1:" + std::to_string(server.port()) + "/2?prefix=" + prefix;
  auto r = q({"enqueue", "--from", "a@example.com", "--to", "b@example.org"}, message_);
  RedisStorage storage(server.options(prefix, 2));
  EXPECT_EQ(storage.get(last_line(r.out)).envelope.sender, "a@example.com");

  auto down = run_command({SLIMTA_QUEUE_BIN, "--storage", "redis://127.0.0.1:1?timeout=1", "list"});
  EXPECT_NE(down.exit_code, 0);
  EXPECT_NE(down.err.find("127.0.0.1:1"), std::string::npos) << down.err;
}

TEST_F(CliTest, WorksOnS3StorageUrls) {
  if (testing::MotoServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
  testing::MotoServer& server = testing::shared_moto();
  server.create_bucket("clibucket");
  std::string queue = server.create_queue("cli" + random_hex(4));
  env_ = {{"AWS_ACCESS_KEY_ID", "test"}, {"AWS_SECRET_ACCESS_KEY", "test"}};
  storage_url_ = "s3://clibucket/q" + random_hex(4) +
                 "?region=us-east-1&endpoint=" + server.endpoint() + "&sqs=" + queue;
  std::string id = enqueue_and_list();
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(q({"retry", id}).exit_code, 0);
  EXPECT_EQ(q({"remove", "--all"}).exit_code, 0);
  EXPECT_EQ(nlohmann::json::parse(q({"list", "--json"}).out).size(), 0u);

  auto bad = run_command({SLIMTA_QUEUE_BIN, "--storage", "s3://clibucket?colour=red", "list"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("unknown parameter 'colour'"), std::string::npos) << bad.err;
}

// The system log's socket, caught: a datagram socket of the test's at /dev/log when there
// is none (this machine's case), or, when a syslog daemon has it, bound over it in a
// mount namespace of the command's own (unshare -m), so that the daemon is untouched.
class SyslogCatcher {
 public:
  explicit SyslogCatcher(const std::string& dir) {
    takeover_ = !std::filesystem::exists("/dev/log");
    path_ = takeover_ ? "/dev/log" : dir + "/log";
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      throw std::runtime_error("cannot bind " + path_ + " (the test runs as root)");
    timeval tv{0, 200000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~SyslogCatcher() {
    ::close(fd_);
    if (takeover_) ::unlink(path_.c_str());
  }
  // `argv` as run with its syslog going here.
  std::vector<std::string> wrap(std::vector<std::string> argv) const {
    if (takeover_) return argv;
    std::vector<std::string> out{"unshare",
                                 "-m",
                                 "--propagation",
                                 "private",
                                 "sh",
                                 "-c",
                                 "mount --bind \"$0\" /dev/log && exec \"$@\"",
                                 path_};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }
  // Every datagram received so far.
  std::vector<std::string> lines() {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd_, buf, sizeof(buf), 0)) > 0;) got_.emplace_back(buf, n);
    return got_;
  }

 private:
  bool takeover_ = false;
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> got_;
};

// Issue 34, finding 9: CLI actions left no line in the log (no audit trail). What
// changes the queue is logged to syslog, facility mail, as serve's unit logs
// (SyslogIdentifier=slimta-queue, SyslogFacility=mail); what only reads is not.
TEST_F(CliTest, WhatTheCliChangesIsLoggedToSyslogBesideServe) {
  SyslogCatcher syslog(dir_.path());
  auto run = [&](std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), SLIMTA_QUEUE_BIN);
    args.insert(args.end(), {"--storage", storage_url_});
    return run_command(syslog.wrap(args), input, env_);
  };
  auto r = run({"enqueue", "--from", "a@example.com", "--to", "b@example.org"}, message_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = last_line(r.out);
  r = run({"hold", id, "--reason", "complaint"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(id), std::string::npos) << r.out;  // still said to the operator
  EXPECT_EQ(run({"list"}).exit_code, 0);
  const std::string unknown = "5e1f7a0d5e1f7a0d5e1f7a0d5e1f7a0d";
  r = run({"remove", unknown});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(unknown), std::string::npos) << r.err;

  // The lines of this test's commands: other tests' CLIs, run meanwhile, log here too.
  std::vector<std::string> lines;
  std::string all;
  for (const auto& l : syslog.lines()) {
    all += l + "\n";
    if (l.find(id) != std::string::npos || l.find(unknown) != std::string::npos) lines.push_back(l);
  }
  ASSERT_EQ(lines.size(), 3u) << all;
  EXPECT_EQ(all.find(": cli: root list"), std::string::npos) << all;  // reading is not logged
  // <22>: facility mail (2), level info (6); "slimta-queue[PID]: ".
  for (const auto& l : lines) {
    EXPECT_TRUE(l.starts_with("<22>")) << l;
    EXPECT_NE(l.find(" slimta-queue["), std::string::npos) << l;
  }
  EXPECT_NE(lines[0].find("]: cli: root enqueue: " + id), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("]: cli: root hold: held " + id), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("]: cli: root remove: "), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find(unknown), std::string::npos) << lines[2];
}

}  // namespace
}  // namespace slimta
