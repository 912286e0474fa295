// slimta-queue serve as an operator runs it: SMTP in from Python's smtplib and from
// swaks, the default disk storage, SMTP out to a real sink; SIGTERM stops it cleanly.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "slimta/disk_storage.h"
#include "support/certificate.h"
#include "support/dns_server.h"
#include "support/redis_server.h"
#include "support/sink.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::run_command;

// Sends `count` messages to 127.0.0.1:port with smtplib, one connection.
testing::CommandResult send_with_smtplib(int port, int count, const testing::TempDir& dir) {
  testing::write_file(dir.sub("send.py"), R"py(
import smtplib, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = smtplib.SMTP('127.0.0.1', port)
for i in range(count):
    s.sendmail('alice@example.com', ['bob@example.org'],
               ('Subject: %d\r\nX-Test-Seq: %d\r\n\r\nbody %d\r\n' % (i, i, i)).encode())
s.quit()
)py");
  return run_command({"python3", dir.sub("send.py"), std::to_string(port), std::to_string(count)});
}

TEST(ServeTest, AcceptsOverSmtpDeliversToTheSmarthostAndStopsOnSigterm) {
  testing::SmtpSink sink;
  testing::TempDir dir;
  std::string spool = dir.sub("spool");
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage", "disk:" + spool,
       "--smarthost", "127.0.0.1:" + std::to_string(sink.port()), "--hostname", "mx.test.example"},
      "listening on");
  int port = testing::listening_ports(serve.output())[0];
  auto sent = send_with_smtplib(port, 30, dir);
  ASSERT_EQ(sent.exit_code, 0) << sent.err;
  auto swaks = run_command({"swaks", "--server", "127.0.0.1:" + std::to_string(port), "--from",
                            "carol@example.com", "--to", "dave@example.org", "--header",
                            "X-Test-Seq: swaks", "--silent", "2"});
  EXPECT_EQ(swaks.exit_code, 0) << swaks.out << swaks.err;
  for (int i = 0; i < 300 && sink.received().size() < 31; ++i) std::this_thread::sleep_for(100ms);
  auto got = sink.received();
  ASSERT_EQ(got.size(), 31u);
  std::set<std::string> seqs;
  for (const auto& m : got) seqs.insert(m["seq"].get<std::string>());
  EXPECT_EQ(seqs.size(), 31u);
  EXPECT_TRUE(seqs.count("swaks"));
  for (int i = 0; i < 100 && !DiskStorage(spool).load_all().empty(); ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(DiskStorage(spool).load_all().empty());  // removed once delivered
  int status = serve.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  auto counters = DiskStorage(spool).counters();  // flushed at stop
  EXPECT_EQ(counters["enqueued"], 31);
  EXPECT_EQ(counters["removed"], 31);
}

TEST(ServeTest, WithoutASmarthostItDeliversToTheMxHosts) {
  testing::SmtpSink sink;
  testing::DnsServer dns({{"example.org", {{"MX", {{10, "mx.example.org"}}}}},
                          {"mx.example.org", {{"A", {"127.0.0.1"}}}}});
  testing::TempDir dir;
  std::string spool = dir.sub("spool");
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage", "disk:" + spool,
       "--dns-server", dns.address(), "--mx-port", std::to_string(sink.port())},
      "listening on");
  int port = testing::listening_ports(serve.output())[0];
  ASSERT_EQ(send_with_smtplib(port, 2, dir).exit_code, 0);  // to bob@example.org
  for (int i = 0; i < 100 && sink.received().size() < 2; ++i) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(sink.received().size(), 2u);
  EXPECT_EQ(sink.received()[0]["to"], (nlohmann::json{"bob@example.org"}));
  int status = serve.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

TEST(ServeTest, AConfigFileSetsTheStorageAndServesOptions) {
  testing::TempDir dir;
  testing::write_file(dir.sub("slimta.toml"), "storage = \"disk:" + dir.sub("spool") +
                                                  "\"\n[serve]\nlisten = \"127.0.0.1:0" + "\"\n");
  // A smarthost where nothing listens: the message is deferred and stays stored.
  std::string nowhere = testing::closed_port().address();
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--config", dir.sub("slimta.toml"), "--smarthost", nowhere},
      "listening on");
  int port = testing::listening_ports(serve.output())[0];
  EXPECT_NE(serve.output().find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << serve.output();
  ASSERT_EQ(send_with_smtplib(port, 1, dir).exit_code, 0);
  EXPECT_EQ(DiskStorage(dir.sub("spool")).load_all().size(), 1u);
}

TEST(ServeTest, OffersStarttlsWithTheConfiguredCertificate) {
  testing::TempDir dir;
  auto [cert, key] = testing::make_certificate(dir, "server");
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage",
       "disk:" + dir.sub("spool"), "--tls-cert", cert, "--tls-key", key, "--smarthost",
       testing::closed_port().address()},  // nowhere: the message stays
      "listening on");
  int port = testing::listening_ports(serve.output())[0];
  testing::write_file(dir.sub("tls.py"), R"py(
import smtplib, ssl, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.starttls(context=ssl.create_default_context(cafile=sys.argv[2]))
s.sendmail('alice@example.com', ['bob@example.org'], b'Subject: tls\r\n\r\nhi\r\n')
s.quit()
)py");
  auto r = run_command({"python3", dir.sub("tls.py"), std::to_string(port), cert});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto entries = DiskStorage(dir.sub("spool")).load_all();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(DiskStorage(dir.sub("spool")).get(entries[0].id).envelope.client.protocol, "ESMTPS");
}

// An operator's retry and release reach a running serve at once, not at its next
// rescan (5 minutes) or hold recheck (a minute).
void retry_and_release_take_effect_at_once(const std::string& url) {
  // Each message's first attempt is deferred, its second accepted.
  testing::SmtpSink sink(nlohmann::json{
      {"bob@example.org", {"451 4.3.0 not now", "250 ok", "451 4.3.0 not now", "250 ok"}}});
  ChildProcess serve({SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage", url,
                      "--smarthost", "127.0.0.1:" + std::to_string(sink.port()), "--user", "root"},
                     "listening on");
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), SLIMTA_QUEUE_BIN);
    args.insert(args.end(), {"--storage", url});
    return run_command(args);
  };
  testing::TempDir dir;
  ASSERT_EQ(send_with_smtplib(testing::listening_ports(serve.output())[0], 1, dir).exit_code, 0);
  std::string id;
  ASSERT_TRUE(testing::eventually([&] {  // deferred by the 451, next attempt in 5 minutes
    auto j = nlohmann::json::parse(cli({"list", "--json"}).out);
    if (j.size() != 1 || j[0]["attempts"] != 1) return false;
    id = j[0]["id"];
    return true;
  }));
  // The deferring reply is kept with the message, as postqueue -p shows it.
  std::string reply = nlohmann::json::parse(cli({"list", "--json"}).out)[0]["last_reply"];
  EXPECT_NE(reply.find("451 4.3.0 not now"), std::string::npos) << reply;
  ASSERT_EQ(cli({"hold", id}).exit_code, 0);
  ASSERT_EQ(cli({"retry", id}).exit_code, 0);  // due, but held: serve must leave it
  std::this_thread::sleep_for(1500ms);
  EXPECT_TRUE(sink.received().empty());
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(cli({"release", id}).exit_code, 0);
  ASSERT_TRUE(testing::eventually([&] { return sink.received().size() == 1; }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);

  // And a plain retry of a deferred message.
  ASSERT_EQ(send_with_smtplib(testing::listening_ports(serve.output())[0], 1, dir).exit_code, 0);
  ASSERT_TRUE(testing::eventually([&] {
    auto j = nlohmann::json::parse(cli({"list", "--json"}).out);
    if (j.size() != 1 || j[0]["attempts"] != 1) return false;
    id = j[0]["id"];
    return true;
  }));
  start = std::chrono::steady_clock::now();
  ASSERT_EQ(cli({"retry", id}).exit_code, 0);
  ASSERT_TRUE(testing::eventually([&] { return sink.received().size() == 2; }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(ServeTest, RetryAndReleaseTakeEffectAtOnceOnDisk) {
  testing::TempDir dir;
  retry_and_release_take_effect_at_once("disk:" + dir.sub("spool"));
}

TEST(ServeTest, RetryAndReleaseTakeEffectAtOnceOnRedis) {
  if (testing::RedisServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  testing::RedisServer& server = testing::shared_redis();
  retry_and_release_take_effect_at_once("redis://127.0.0.1:" + std::to_string(server.port()) +
                                        "/3?prefix=now" + random_hex(4) + ":");
}

TEST(ServeTest, BadFlagsAreRefusedNamingThem) {
  auto r =
      run_command({SLIMTA_QUEUE_BIN, "serve", "--listen", "localhost", "--storage", "memory:"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--listen 'localhost' is not HOST:PORT"), std::string::npos) << r.err;
  r = run_command({SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:1", "--smarthost", "x:0",
                   "--storage", "memory:"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--smarthost 'x:0'"), std::string::npos) << r.err;
  r = run_command({SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:1", "--tls-cert",
                   "/nonexistent.pem", "--tls-key", "/nonexistent.key", "--storage", "memory:"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent.pem"), std::string::npos) << r.err;
  r = run_command({SLIMTA_QUEUE_BIN, "serve", "--smarthost", "127.0.0.1:25", "--smarthost-user",
                   "u", "--smarthost-tls", "required", "--storage", "memory:"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("SLIMTA_SMARTHOST_PASSWORD"), std::string::npos) << r.err;
  // The password would go to whoever answers with any certificate.
  r = run_command({SLIMTA_QUEUE_BIN, "serve", "--smarthost", "127.0.0.1:25", "--smarthost-user",
                   "u", "--storage", "memory:"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--smarthost-user: the password goes only over TLS with a verified"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace slimta
