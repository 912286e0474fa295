// The three ways in are one door: the same message through SMTP DATA, HTTP injection
// and the CLI's enqueue is stored the same (bar the id, the time and how it came in),
// refused the same as a loop, and deferred with the same 452 when the spool is under
// its free-space guard. (Before the door, HTTP and the CLI had no hop limit, the CLI no
// Received: line, and neither honoured the free-space guard.)
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "slimta/disk_storage.h"
#include "support/smtp_client.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::ChildProcess;

// serve's and the CLI's name for us: this host's (neither is given another).
const std::string kHost = host_name();

// What a test sends each way: a sender, one recipient, the message.
struct Sent {
  int code = -1;      // SMTP: the reply to the end of DATA; HTTP: the status; CLI: the exit code
  std::string reply;  // SMTP's whole reply; HTTP's "reply"; the CLI's stderr
  std::string id;     // when queued
};

class DoorTest : public ::testing::Test {
 protected:
  // serve on `url` (a disk: spool), its deliveries deferred (the smarthost refuses
  // connections), so that what it accepts stays in the spool.
  void start(const std::string& url) {
    url_ = url;
    serve_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{
            SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
            "--http-token-file", testing::write_http_token(dir_), "--storage", url, "--smarthost",
            testing::closed_port().address(), "--min-free", "none", "--user", "root"},
        "listening on");
    smtp_ = testing::listening_ports(serve_->output())[0];
    http_ = testing::http_port(serve_->output());
    ASSERT_GT(http_, 0) << serve_->output();
  }

  Sent by_smtp(const std::string& message) {
    testing::SmtpClient c(smtp_);
    Sent s;
    if (c.code() != 220 || c.exchange("EHLO client.example\r\n") != 250 ||
        c.exchange("MAIL FROM:<a@example.com>\r\n") != 250 ||
        c.exchange("RCPT TO:<b@example.org>\r\n") != 250) {
      return s;
    }
    c.send("DATA\r\n");
    s.reply = c.reply();
    if (s.reply.starts_with("354")) {
      c.send(message + ".\r\n");
      s.reply = c.reply();
    }
    s.code = std::atoi(s.reply.c_str());
    if (size_t at = s.reply.find("queued as "); at != std::string::npos)
      s.id = s.reply.substr(at + 10, s.reply.find_first_of("\r\n", at) - at - 10);
    return s;
  }

  Sent by_http(const std::string& message) {
    httplib::Client client("127.0.0.1", http_);
    client.set_read_timeout(30, 0);
    auto res = client.Post("/api/v1/messages",
                           {{"Authorization", std::string("Bearer ") + testing::kHttpToken},
                            {"X-Envelope-Sender", "a@example.com"},
                            {"X-Envelope-Recipient", "b@example.org"}},
                           message, "message/rfc822");
    Sent s;
    if (!res) return s;
    s.code = res->status;
    auto j = nlohmann::json::parse(res->body);
    if (j.contains("id")) s.id = j["id"];
    if (j.contains("reply")) s.reply = j["reply"];
    return s;
  }

  Sent by_cli(const std::string& message) {
    auto r = testing::run_command({SLIMTA_QUEUE_BIN, "--storage", url_, "enqueue", "--from",
                                   "a@example.com", "--to", "b@example.org"},
                                  message);
    // The reply: the error line (the log lines around it are the operator's own, and
    // may name the spool).
    Sent s{r.exit_code, r.err, ""};
    if (size_t at = r.err.find("slimta-queue: error: "); at != std::string::npos)
      s.reply = r.err.substr(at, r.err.find('\n', at) - at);
    if (r.exit_code == 0) s.id = r.out.substr(0, r.out.find('\n'));
    return s;
  }

  testing::TempDir dir_;
  std::string url_;
  std::unique_ptr<ChildProcess> serve_;
  int smtp_ = -1, http_ = -1;
};

std::string message_with_hops(int hops) {
  std::string m;
  for (int i = 0; i < hops; ++i)
    m += "Received: from a.example by b.example; hop " + std::to_string(i) + "\r\n";
  return m + "From: <a@example.com>\r\nTo: <b@example.org>\r\nSubject: one door\r\n\r\nhello\r\n";
}

TEST_F(DoorTest, TheThreeWaysInStoreTheSameRecordAndRefuseTheSameLoop) {
  std::string spool = dir_.sub("spool");
  start("disk:" + spool);
  std::string message = message_with_hops(2);
  Sent smtp = by_smtp(message), http = by_http(message), cli = by_cli(message);
  ASSERT_EQ(smtp.code, 250) << smtp.reply;
  ASSERT_EQ(http.code, 201) << http.reply;
  ASSERT_EQ(cli.code, 0) << cli.reply;

  DiskStorage storage(spool, /*create=*/false);
  struct Way {
    const char* protocol;
    Envelope env;
  };
  std::vector<Way> ways{{"ESMTP", storage.get(smtp.id).envelope},
                        {"HTTP", storage.get(http.id).envelope},
                        {"local", storage.get(cli.id).envelope}};
  const Envelope& first = ways[0].env;
  for (Way& w : ways) {
    SCOPED_TRACE(w.protocol);
    Envelope& env = w.env;
    EXPECT_EQ(env.sender, "a@example.com");
    EXPECT_EQ(env.recipients, std::vector<std::string>{"b@example.org"});
    EXPECT_EQ(env.receiver, kHost);
    EXPECT_GT(env.timestamp, 0);
    EXPECT_EQ(env.client.protocol, w.protocol);
    // Our Received: line on top, naming us, how it came and for whom.
    ASSERT_EQ(env.headers.fields().front().name, "Received");
    std::string received = env.headers.fields().front().value();
    EXPECT_NE(received.find("by " + kHost + " with " + w.protocol + " for <b@example.org>; "),
              std::string::npos)
        << received;
    EXPECT_EQ(env.headers.count("Received"), 3u);
    // The rest is the message as sent, byte for byte, the same each way.
    EXPECT_EQ(
        std::vector<Headers::Field>(env.headers.fields().begin() + 1, env.headers.fields().end()),
        std::vector<Headers::Field>(first.headers.fields().begin() + 1,
                                    first.headers.fields().end()));
    EXPECT_EQ(env.body, "hello\r\n");
    EXPECT_EQ(env.separator, first.separator);
  }

  // 51 Received: lines: a loop, refused the same way each way, and nothing stored.
  size_t stored = storage.load_all().size();
  std::string loop = message_with_hops(51);
  smtp = by_smtp(loop);
  http = by_http(loop);
  cli = by_cli(loop);
  EXPECT_EQ(smtp.reply.substr(0, 9), "554 5.4.6") << smtp.reply;
  EXPECT_EQ(http.code, 400);
  EXPECT_EQ(http.reply.substr(0, 9), "554 5.4.6") << http.reply;
  EXPECT_EQ(cli.code, 1);
  EXPECT_NE(cli.reply.find("554 5.4.6 Too many hops"), std::string::npos) << cli.reply;
  EXPECT_EQ(storage.load_all().size(), stored);
}

TEST_F(DoorTest, UnderTheFreeSpaceGuardEachWayInSays452AndStoresNothing) {
  std::string spool = dir_.sub("full");
  // Every file system has less than all of itself free: the guard is always crossed.
  start("disk:" + spool + "?min-free=100%");
  std::string message = message_with_hops(0);
  Sent smtp = by_smtp(message), http = by_http(message), cli = by_cli(message);
  EXPECT_EQ(smtp.reply.substr(0, 9), "452 4.3.1") << smtp.reply;
  EXPECT_EQ(http.code, 503);
  EXPECT_EQ(http.reply.substr(0, 9), "452 4.3.1") << http.reply;
  EXPECT_EQ(cli.code, 75);  // EX_TEMPFAIL: try again later
  EXPECT_NE(cli.reply.find("452 4.3.1"), std::string::npos) << cli.reply;
  for (const std::string& text : {smtp.reply, http.reply, cli.reply})
    EXPECT_EQ(text.find(spool), std::string::npos) << "a reply names our path: " << text;
  EXPECT_TRUE(DiskStorage(spool, false).load_all().empty());
  // /readyz says why.
  httplib::Client client("127.0.0.1", http_);
  auto ready = client.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_NE(ready->body.find("free-space guard"), std::string::npos) << ready->body;
}

}  // namespace
}  // namespace slimta
