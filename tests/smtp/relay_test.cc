// SmtpRelay against a real SMTP server (aiosmtpd), driven by the queue on a
// ManualClock: delivery, deferral then delivery, a permanent failure and its bounce,
// connection reuse, and peers that refuse or hang.
#include "slimta/smtp_relay.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "slimta/memory_storage.h"
#include "smtp/client.h"
#include "support/sink.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using Kind = RecipientResult::Kind;
using testing::SmtpSink;

SmtpRelayOptions relay_to(int port) {
  SmtpRelayOptions o;
  o.host = "127.0.0.1";
  o.port = static_cast<uint16_t>(port);
  o.ehlo_name = "relay.test.example";
  o.command_timeout = std::chrono::seconds(10);
  return o;
}

TEST(DataOfTest, EndsEveryLineWithCrlfAndDoublesLeadingDots) {
  using smtp::data_of;
  EXPECT_EQ(data_of(""), ".\r\n");
  EXPECT_EQ(data_of("a\r\nb\r\n"), "a\r\nb\r\n.\r\n");
  EXPECT_EQ(data_of("no newline"), "no newline\r\n.\r\n");
  EXPECT_EQ(data_of("bare\nlf\n"), "bare\r\nlf\r\n.\r\n");
  EXPECT_EQ(data_of("bare\rcr"), "bare\r\ncr\r\n.\r\n");
  EXPECT_EQ(data_of("x\r\r\ny"), "x\r\n\r\ny\r\n.\r\n");  // CR, then CRLF
  EXPECT_EQ(data_of("\r\n\n\r"), "\r\n\r\n\r\n.\r\n");
  EXPECT_EQ(data_of(".\r\n..x\n.\r.y"), "..\r\n...x\r\n..\r\n..y\r\n.\r\n");
  EXPECT_EQ(data_of("a.b\r\n .c\r\n"), "a.b\r\n .c\r\n.\r\n");  // only a leading dot
  // Lines over 998 octets are broken with CRLF SPACE, as Postfix's smtp_line_length_limit.
  EXPECT_EQ(data_of(std::string(2500, 'a') + "\r\nb\r\n"),
            std::string(998, 'a') + "\r\n " + std::string(997, 'a') + "\r\n " +
                std::string(505, 'a') + "\r\nb\r\n.\r\n");
  EXPECT_EQ(data_of(std::string(998, 'a')), std::string(998, 'a') + "\r\n.\r\n");
  EXPECT_EQ(data_of("." + std::string(998, 'a')),
            ".." + std::string(996, 'a') + "\r\n " + "aa\r\n.\r\n");
  std::string big, want;
  for (int i = 0; i < 2000; ++i) {
    std::string line = (i == 1000 ? "." : "") + std::string(70, 'x');
    big += line + "\n";
    want += (i == 1000 ? "." : "") + line + "\r\n";
  }
  EXPECT_EQ(data_of(big), want + ".\r\n");
}

Envelope message(std::vector<std::string> rcpts, std::string body = "hello\r\n") {
  Envelope env;
  env.sender = "alice@example.com";
  env.recipients = std::move(rcpts);
  env.headers.add("From", "alice@example.com");
  env.headers.add("Subject", "test");
  env.body = std::move(body);
  return env;
}

TEST(SmtpRelayTest, PerRecipientResultsDeferralThenDeliveryAndABounce) {
  SmtpSink sink(nlohmann::json{{"b@x.org", {"451 4.2.0 greylisted, come back later", "250"}},
                               {"c@x.org", {"550 5.1.1 <c@x.org>: no such user"}}});
  SmtpRelay relay(relay_to(sink.port()));
  ManualClock clock;
  MemoryStorage storage(clock);
  QueuePolicy policy;
  policy.reporting_mta = "mx.test.example";
  Queue queue(storage, relay, policy, clock);
  std::string id = queue.enqueue(message({"a@x.org", "b@x.org", "c@x.org"})).id;
  ASSERT_FALSE(id.empty());
  queue.run_pending();  // a delivered, b deferred, c bounced (and the bounce delivered)
  auto got = sink.received();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["from"], "alice@example.com");
  EXPECT_EQ(got[0]["to"], (nlohmann::json{"a@x.org"}));
  EXPECT_EQ(got[1]["from"], "<>");  // the bounce, from the null sender
  EXPECT_EQ(got[1]["to"], (nlohmann::json{"alice@example.com"}));
  EXPECT_TRUE(got[1]["report"].get<bool>());
  QueuedMessage m = storage.get(id);
  EXPECT_EQ(m.envelope.recipients, (std::vector<std::string>{"b@x.org"}));
  EXPECT_EQ(m.attempts, 1u);
  clock.advance(300);
  queue.run_pending();
  got = sink.received();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2]["to"], (nlohmann::json{"b@x.org"}));
  EXPECT_THROW(storage.get(id), KeyError);
  EXPECT_EQ(relay.connections_opened(), 1u);  // one connection for all four transactions
}

TEST(SmtpRelayTest, ManyMessagesReuseOneConnectionAndBodiesArriveWhole) {
  SmtpSink sink;
  SmtpRelay relay(relay_to(sink.port()));
  std::string body;
  for (int i = 0; i < 200; ++i) body += ".line " + std::to_string(i) + " starts with a dot\r\n";
  for (int i = 0; i < 20; ++i) {
    auto r = relay.attempt(message({"r@x.org"}, body), 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].kind, Kind::delivered) << r[0].reply;
  }
  EXPECT_EQ(relay.connections_opened(), 1u);
  auto got = sink.received();
  ASSERT_EQ(got.size(), 20u);
  size_t want = message({"r@x.org"}, body).flatten().size();
  EXPECT_EQ(got[0]["size"], want);  // dot-stuffing undone by the server: same bytes
}

TEST(SmtpRelayTest, ARefusedConnectionIsATransientFailureForEveryRecipient) {
  int port = testing::closed_port().port();  // nothing listens there
  SmtpRelay relay(relay_to(port));
  auto r = relay.attempt(message({"a@x.org", "b@x.org"}), 1);
  ASSERT_EQ(r.size(), 2u);
  for (const auto& x : r) {
    EXPECT_EQ(x.kind, Kind::transient);
    EXPECT_NE(x.reply.find("connect"), std::string::npos) << x.reply;
    EXPECT_NE(x.reply.find(std::to_string(port)), std::string::npos) << x.reply;
  }
  // An IPv6 address is named in brackets (refused, or unreachable without IPv6).
  SmtpRelayOptions v6 = relay_to(port);
  v6.host = "::1";
  auto r6 = SmtpRelay(v6).attempt(message({"a@x.org"}), 1);
  EXPECT_EQ(r6[0].kind, Kind::transient);
  EXPECT_NE(r6[0].reply.find("[::1]:" + std::to_string(port) + ": "), std::string::npos)
      << r6[0].reply;
}

TEST(SmtpRelayTest, AConnectionCarriesAtMostMaxMessagesPerConnection) {
  SmtpSink sink;
  SmtpRelayOptions o = relay_to(sink.port());
  o.max_messages_per_connection = 3;
  SmtpRelay relay(o);
  for (int i = 0; i < 7; ++i) {
    auto r = relay.attempt(message({"r@x.org"}), 1);
    ASSERT_EQ(r[0].kind, Kind::delivered) << r[0].reply;
  }
  EXPECT_EQ(relay.connections_opened(), 3u);  // 3 + 3 + 1
  EXPECT_EQ(sink.received().size(), 7u);
}

TEST(SmtpRelayTest, AnUnreachableOrRefusingPeerIsMarkedUnreachableARecipientsRefusalIsNot) {
  SmtpRelay refused(relay_to(testing::closed_port().port()));
  auto r = refused.attempt(message({"a@x.org"}), 1);
  EXPECT_TRUE(r[0].unreachable) << r[0].reply;
  SmtpSink sink(nlohmann::json{{"busy@x.org", {"450 4.2.1 mailbox busy"}}});
  SmtpRelay relay(relay_to(sink.port()));
  r = relay.attempt(message({"busy@x.org"}), 1);
  EXPECT_EQ(r[0].kind, Kind::transient);
  EXPECT_FALSE(r[0].unreachable) << "a recipient's 4xx says nothing about the destination";
}

TEST(SmtpRelayTest, APeerThatNeverAnswersTimesOut) {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 4), 0);  // accepts (in the kernel), never greets
  socklen_t len = sizeof(addr);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  SmtpRelayOptions o = relay_to(ntohs(addr.sin_port));
  o.connect_timeout = std::chrono::milliseconds(300);  // the greeting is within it
  SmtpRelay relay(o);
  auto start = std::chrono::steady_clock::now();
  auto r = relay.attempt(message({"a@x.org"}), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, Kind::transient);
  EXPECT_NE(r[0].reply.find("timed out"), std::string::npos) << r[0].reply;
  ::close(listener);
}

// A hostile destination: greets, then answers EHLO with continuation lines, one every
// `every` (none: as fast as it can), until the client goes away or `max_lines`.
class HostileMx {
 public:
  HostileMx(std::chrono::milliseconds every, size_t max_lines) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(listener_, 4);
    socklen_t len = sizeof(addr);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, every, max_lines] {
      int c = ::accept(listener_, nullptr, nullptr);
      if (c < 0) return;
      auto say = [&](const std::string& s) {
        return ::send(c, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
      };
      say("220 mx.hostile.example ESMTP\r\n");
      char buf[512];
      if (::recv(c, buf, sizeof buf, 0) <= 0) return ::close(c), void();  // EHLO
      const std::string line = "250-" + std::string(200, 'x') + "\r\n";
      for (size_t n = 0; n < max_lines && say(line); ++n) {
        sent_ += line.size();
        if (every.count() > 0) std::this_thread::sleep_for(every);
      }
      ::close(c);
    });
  }
  ~HostileMx() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }
  int port() const { return port_; }
  size_t sent() const { return sent_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::atomic<size_t> sent_ = 0;
  std::thread thread_;
};

TEST(SmtpRelayTest, AnEndlessReplyIsCutOffAndOnlyAnExcerptIsKept) {
  HostileMx mx(std::chrono::milliseconds(0), 5'000'000);  // up to 1 GB of "250-"
  SmtpRelay relay(relay_to(mx.port()));
  auto r = relay.attempt(message({"a@x.org"}), 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, Kind::transient);
  EXPECT_NE(r[0].reply.find("reply of more than 100 lines"), std::string::npos) << r[0].reply;
  EXPECT_LT(r[0].reply.size(), 1200u);
}

TEST(SmtpRelayTest, AReplyTrickledLineByLineMeetsOneDeadlineForTheWhole) {
  HostileMx mx(std::chrono::milliseconds(100), 90);  // each line in time, the whole not
  SmtpRelayOptions o = relay_to(mx.port());
  o.command_timeout = std::chrono::milliseconds(1000);
  SmtpRelay relay(o);
  auto start = std::chrono::steady_clock::now();
  auto r = relay.attempt(message({"a@x.org"}), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(6));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, Kind::transient);
  EXPECT_NE(r[0].reply.find("timed out"), std::string::npos) << r[0].reply;
}

TEST(SmtpRelayTest, BadOptionsAreRefused) {
  EXPECT_THROW(SmtpRelay(SmtpRelayOptions{}), InvalidArgument);
}

}  // namespace
}  // namespace slimta
