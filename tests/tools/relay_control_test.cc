// slimta-queue serve's relay control as an operator sets it up and as clients on the
// internet meet it: smtplib and swaks from chosen loopback addresses (127.0.0.2 in the
// relay networks, 127.0.0.1 not), AUTH against a users file made by `slimta-queue
// passwd`, the submission port, routes, the config file's tables, and a real HAProxy
// 2.6 in front sending PROXY headers (v1 and v2).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "slimta/disk_storage.h"
#include "slimta/user_database.h"
#include "support/certificate.h"
#include "support/sink.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;
using testing::run_command;

std::string at(int port) { return "127.0.0.1:" + std::to_string(port); }

// Sends one message with smtplib from `source` (an address of 127.0.0.0/8) to
// 127.0.0.1:port; prints "ok" or the refusal's code. Optional STARTTLS + login.
std::string smtplib_send(const testing::TempDir& dir, int port, const std::string& source,
                         const std::string& rcpt, const std::string& login = "",
                         const std::string& ca = "") {
  testing::write_file(dir.sub("send.py"), R"py(
import smtplib, ssl, sys
port, source, rcpt, login, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
s = smtplib.SMTP('127.0.0.1', port, source_address=(source, 0))
if login:
    s.starttls(context=ssl.create_default_context(cafile=ca))
    s.login(*login.split(':', 1))
try:
    s.sendmail('sender@example.com', [rcpt], b'Subject: t\r\nX-Test-Seq: ' + rcpt.encode() + b'\r\n\r\nhi\r\n')
    print('ok')
except smtplib.SMTPRecipientsRefused as e:
    print(e.recipients[rcpt][0])
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code)
except smtplib.SMTPServerDisconnected:
    print('closed')
)py");
  auto r =
      run_command({"python3", dir.sub("send.py"), std::to_string(port), source, rcpt, login, ca});
  if (r.exit_code != 0) return "python failed: " + r.err;
  return r.out.substr(0, r.out.find('\n'));
}

// swaks from 127.0.0.1 with extra arguments; its whole transcript.
testing::CommandResult swaks(int port, const std::vector<std::string>& extra) {
  std::vector<std::string> argv{"swaks", "--server", at(port), "--from", "sender@example.com"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return run_command(argv);
}

class RelayControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = testing::make_certificate(dir_, "server");
    auto r = run_command({SLIMTA_QUEUE_BIN, "passwd", "alice", "--users", dir_.sub("users")},
                         "wonderland\n");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  size_t count_to(const testing::SmtpSink& sink, const std::string& rcpt) {
    size_t n = 0;
    for (const auto& m : sink.received())
      for (const auto& t : m["to"]) n += t == rcpt;
    return n;
  }

  testing::TempDir dir_;
  testing::Certificate cert_;
};

TEST_F(RelayControlTest, ClosedToStrangersOpenToRelayNetworksAuthAndOurDomains) {
  testing::SmtpSink smarthost, mailbox;
  ChildProcess serve({SLIMTA_QUEUE_BIN,   "serve",
                      "--listen",         at(0),
                      "--submission",     at(0),
                      "--storage",        "disk:" + dir_.sub("spool"),
                      "--smarthost",      at(smarthost.port()),
                      "--route",          "ours.example=" + at(mailbox.port()),
                      "--relay-networks", "127.0.0.2/32",
                      "--accept-domains", "ours.example",
                      "--tls-cert",       cert_.cert,
                      "--tls-key",        cert_.key,
                      "--users",          dir_.sub("users"),
                      "--hostname",       "mx.test.example"},
                     "listening on");
  std::vector<int> ports = testing::listening_ports(serve.output());
  int port = ports[0], submission = ports[1];
  // From a relay network: anywhere.
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "far@remote.example"), "ok");
  // From elsewhere: only our domain, which its route takes to the mailbox server.
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "victim@remote.example"), "554");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "user@ours.example"), "ok");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "User@Ours.Example"), "ok");
  // Relay tricks through our domain.
  for (const char* trick :
       {"victim%remote.example@ours.example", "remote.example!victim@ours.example",
        "victim@remote.example@ours.example", "\"victim@remote.example\"@ours.example",
        "@ours.example:victim@remote.example"}) {
    auto r = swaks(port, {"--to", trick, "--quit-after", "RCPT"});
    EXPECT_NE(r.out.find("554 5.7.1"), std::string::npos) << trick << "\n" << r.out;
    EXPECT_NE(r.exit_code, 0) << trick;
  }
  // Authenticated (swaks: STARTTLS + AUTH PLAIN): anywhere.
  auto authed = swaks(port, {"--to", "auth@remote.example", "--tls", "--auth", "PLAIN",
                             "--auth-user", "alice", "--auth-password", "wonderland"});
  EXPECT_EQ(authed.exit_code, 0) << authed.out << authed.err;
  EXPECT_NE(authed.out.find("235 2.7.0"), std::string::npos) << authed.out;
  EXPECT_EQ(
      smtplib_send(dir_, port, "127.0.0.1", "login@remote.example", "alice:wonderland", cert_.cert),
      "ok");
  // A wrong password.
  auto wrong = swaks(port, {"--to", "x@remote.example", "--tls", "--auth", "LOGIN", "--auth-user",
                            "alice", "--auth-password", "guess"});
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.out.find("535 5.7.8"), std::string::npos) << wrong.out;
  // AUTH before STARTTLS, and the submission port without AUTH.
  testing::write_file(dir_.sub("plain.py"), R"py(
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo()
print(s.docmd('AUTH', 'PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=')[0])
t = smtplib.SMTP('127.0.0.1', int(sys.argv[2]), source_address=('127.0.0.2', 0))
t.ehlo()
print(t.docmd('MAIL', 'FROM:<a@example.com>')[0])
)py");
  auto plain = run_command(
      {"python3", dir_.sub("plain.py"), std::to_string(port), std::to_string(submission)});
  EXPECT_EQ(plain.out, "538\n530\n") << plain.err;
  EXPECT_EQ(smtplib_send(dir_, submission, "127.0.0.1", "sub@remote.example", "alice:wonderland",
                         cert_.cert),
            "ok");

  ASSERT_TRUE(testing::eventually(
      [&] { return smarthost.received().size() >= 4 && mailbox.received().size() >= 2; }));
  EXPECT_EQ(count_to(smarthost, "far@remote.example"), 1u);
  EXPECT_EQ(count_to(smarthost, "auth@remote.example"), 1u);
  EXPECT_EQ(count_to(smarthost, "login@remote.example"), 1u);
  EXPECT_EQ(count_to(smarthost, "sub@remote.example"), 1u);
  EXPECT_EQ(count_to(smarthost, "victim@remote.example"), 0u);
  EXPECT_EQ(smarthost.received().size(), 4u);
  EXPECT_EQ(count_to(mailbox, "user@ours.example"), 1u);
  EXPECT_EQ(count_to(mailbox, "User@Ours.Example"), 1u);
  EXPECT_EQ(mailbox.received().size(), 2u);
  for (const auto& m : smarthost.received()) {
    std::string received = m["received"];
    if (m["to"][0] == "far@remote.example") {
      EXPECT_NE(received.find("[127.0.0.2]"), std::string::npos) << received;
    } else {
      EXPECT_NE(received.find("with ESMTPSA"), std::string::npos) << received;
    }
  }
  int status = serve.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// Seen: SIGHUP (systemctl reload) killed serve with exit 129.
TEST_F(RelayControlTest, SighupReloadsUsersAndCertificateAndABadReloadKeepsTheOld) {
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", at(0), "--submission", at(0), "--storage",
       "memory:", "--smarthost", testing::closed_port().address(), "--tls-cert", cert_.cert,
       "--tls-key", cert_.key, "--users", dir_.sub("users"), "--hostname", "mx.test.example"},
      "listening on");
  int submission = testing::listening_ports(serve.output())[1];
  auto send_as = [&](const std::string& login) {
    return smtplib_send(dir_, submission, "127.0.0.2", "far@remote.example", login, cert_.cert);
  };
  EXPECT_NE(send_as("bob:builder").find("(535, b'5.7.8"), std::string::npos);  // no bob yet
  auto r =
      run_command({SLIMTA_QUEUE_BIN, "passwd", "bob", "--users", dir_.sub("users")}, "builder\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(::kill(serve.pid(), SIGHUP), 0);
  EXPECT_TRUE(testing::eventually([&] { return send_as("bob:builder") == "ok"; }));
  EXPECT_EQ(send_as("alice:wonderland"), "ok");

  // A certificate that cannot be read: the reload fails and the old one stays in use.
  testing::write_file(cert_.cert + ".good", testing::read_file(cert_.cert));
  testing::write_file(cert_.cert, "not a certificate\n");
  ASSERT_EQ(::kill(serve.pid(), SIGHUP), 0);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(::kill(serve.pid(), 0), 0) << "serve died";
  testing::write_file(cert_.cert, testing::read_file(cert_.cert + ".good"));  // for the client
  EXPECT_EQ(send_as("bob:builder"), "ok");
  int status = serve.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

TEST_F(RelayControlTest, SighupReloadsTheConfigFilesRelaySettings) {
  testing::SmtpSink first, second;
  auto config = [&](const std::string& networks, int smarthost, const std::string& extra = "") {
    testing::write_file(dir_.sub("slimta.toml"),
                        "storage = \"memory:\"\n[serve]\nrelay-networks = \"" + networks +
                            "\"\nsmarthost = \"127.0.0.1:" + std::to_string(smarthost) + "\"\n" +
                            extra);
  };
  config("127.0.0.2/32", first.port());
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "--config", dir_.sub("slimta.toml"), "serve", "--listen", at(0)},
      "listening on");
  int port = testing::listening_ports(serve.output())[0];
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.3", "far@remote.example"), "554");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "one@remote.example"), "ok");
  EXPECT_TRUE(testing::eventually([&] { return first.received().size() == 1; }));

  // Another relay network and another smarthost: both apply after SIGHUP.
  config("127.0.0.3/32", second.port());
  ASSERT_EQ(::kill(serve.pid(), SIGHUP), 0);
  EXPECT_TRUE(testing::eventually(
      [&] { return smtplib_send(dir_, port, "127.0.0.3", "two@remote.example") == "ok"; }));
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "far@remote.example"), "554");
  EXPECT_TRUE(testing::eventually([&] { return second.received().size() == 1; }));
  EXPECT_EQ(first.received().size(), 1u);

  // A mistake in the file: the reload fails, the settings in use stay.
  config("127.0.0.2/32", first.port(), "smarthst = \"127.0.0.1:1\"\n");
  ASSERT_EQ(::kill(serve.pid(), SIGHUP), 0);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.3", "three@remote.example"), "ok");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "far@remote.example"), "554");
  EXPECT_TRUE(testing::eventually([&] { return second.received().size() == 2; }));
  int status = serve.stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

TEST_F(RelayControlTest, KnownRecipientsAreCheckedAtRcpt) {
  testing::write_file(dir_.sub("recipients"), "# valid users\nalice@ours.example\n@all.example\n");
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", at(0), "--storage", "memory:", "--smarthost",
       testing::closed_port().address(), "--relay-networks", "", "--accept-domains",
       "ours.example,all.example", "--accept-recipients", dir_.sub("recipients")},
      "listening on");
  int port = testing::listening_ports(serve.output())[0];
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "alice@ours.example"), "ok");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "mallory@ours.example"), "550");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "anyone@all.example"), "ok");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "x@remote.example"), "554");
}

TEST_F(RelayControlTest, TheConfigFileDeclaresListenersAndRoutes) {
  testing::SmtpSink mailbox;
  testing::write_file(dir_.sub("slimta.toml"), "storage = \"disk:" + dir_.sub("spool") +
                                                   "\"\n"
                                                   "[serve]\n"
                                                   "listen = \"" +
                                                   at(0) +
                                                   "\"\n"
                                                   "relay-networks = \"127.0.0.2/32\"\n"
                                                   "accept-domains = [\"ours.example\"]\n"
                                                   "smarthost = \"" +
                                                   testing::closed_port().address() +
                                                   "\"\n"
                                                   "tls-cert = \"" +
                                                   cert_.cert +
                                                   "\"\n"
                                                   "tls-key = \"" +
                                                   cert_.key +
                                                   "\"\n"
                                                   "users = \"" +
                                                   dir_.sub("users") +
                                                   "\"\n"
                                                   "[routes]\n"
                                                   "\"ours.example\" = \"" +
                                                   at(mailbox.port()) +
                                                   "\"\n"
                                                   "[[listener]]\n"
                                                   "address = \"" +
                                                   at(0) +
                                                   "\"\n"
                                                   "role = \"submission\"\n");
  ChildProcess serve({SLIMTA_QUEUE_BIN, "serve", "--config", dir_.sub("slimta.toml")},
                     "listening on");
  std::vector<int> ports = testing::listening_ports(serve.output());
  int port = ports[0], submission = ports[1];
  EXPECT_NE(serve.output().find(at(submission) + " (submission)"), std::string::npos)
      << serve.output();
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "victim@remote.example"), "554");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "user@ours.example"), "ok");
  EXPECT_EQ(smtplib_send(dir_, submission, "127.0.0.1", "x@remote.example", "alice:wonderland",
                         cert_.cert),
            "ok");
  ASSERT_TRUE(testing::eventually([&] { return mailbox.received().size() == 1; }));

  // Mistakes in the tables are named with their line.
  testing::write_file(dir_.sub("bad.toml"), "storage = \"memory:\"\n[[listener]]\naddress = \"" +
                                                at(port) + "\"\nrole = \"smpt\"\n");
  auto r = run_command({SLIMTA_QUEUE_BIN, "serve", "--config", dir_.sub("bad.toml")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 4: listener role 'smpt' is not smtp, submission or submissions"),
            std::string::npos)
      << r.err;
  testing::write_file(dir_.sub("bad.toml"),
                      "storage = \"memory:\"\n[[listener]]\nadress = \"x\"\n");
  r = run_command({SLIMTA_QUEUE_BIN, "serve", "--config", dir_.sub("bad.toml")});
  EXPECT_NE(r.err.find("line 3: unknown listener key 'adress'"), std::string::npos) << r.err;
  testing::write_file(dir_.sub("bad.toml"),
                      "storage = \"memory:\"\n[routes]\n\"a.example\" = 25\n");
  r = run_command({SLIMTA_QUEUE_BIN, "serve", "--config", dir_.sub("bad.toml")});
  EXPECT_NE(r.err.find("line 3: route for 'a.example' must be \"HOST:PORT\""), std::string::npos)
      << r.err;
}

TEST_F(RelayControlTest, BadSettingsAreRefusedNamingThem) {
  auto serve = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv{SLIMTA_QUEUE_BIN, "serve",    "--storage",
                                  "memory:",        "--listen", at(0)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_command(argv);
  };
  auto r = serve({"--relay-networks", "10.1.2.3/8"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(
      r.err.find("--relay-networks: network '10.1.2.3/8' has bits set past its prefix length"),
      std::string::npos)
      << r.err;
  r = serve({"--submission", at(0)});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("needs a TLS certificate and key, and users"), std::string::npos) << r.err;
  testing::write_file(dir_.sub("bad-users"), "alice:secret\n");
  r = serve({"--users", dir_.sub("bad-users")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 1: user 'alice'"), std::string::npos) << r.err;
  r = serve({"--route", "nodomain"});
  EXPECT_NE(r.err.find("--route 'nodomain' is not DOMAIN=HOST:PORT"), std::string::npos) << r.err;
  r = serve({"--proxy-from", "haproxy.local"});
  EXPECT_NE(r.err.find("--proxy-from: network 'haproxy.local'"), std::string::npos) << r.err;
}

TEST_F(RelayControlTest, PasswdAddsAndChangesUsersWithoutEchoingThePassword) {
  auto r =
      run_command({SLIMTA_QUEUE_BIN, "passwd", "bob", "--users", dir_.sub("users")}, "builder\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("builder"), std::string::npos);
  EXPECT_EQ(r.err.find("builder"), std::string::npos);
  r = run_command({SLIMTA_QUEUE_BIN, "passwd", "alice", "--users", dir_.sub("users")}, "changed\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string text = testing::read_file(dir_.sub("users"));
  EXPECT_EQ(text.substr(0, 9), "alice:$y$");
  EXPECT_NE(text.find("\nbob:$y$"), std::string::npos);
  UserDatabase db = UserDatabase::load(dir_.sub("users"));
  EXPECT_TRUE(db.check("alice", "changed"));
  EXPECT_FALSE(db.check("alice", "wonderland"));
  EXPECT_TRUE(db.check("bob", "builder"));
  r = run_command({SLIMTA_QUEUE_BIN, "passwd", "carol", "--users", dir_.sub("users")}, "");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no password given"), std::string::npos) << r.err;
}

TEST_F(RelayControlTest, TheReadmesConfigExampleStartsAndIsClosed) {
  std::string readme = testing::read_file(std::string(SLIMTA_SOURCE_DIR) + "/README.md");
  size_t start = readme.find("```toml\n");
  ASSERT_NE(start, std::string::npos);
  std::string config = readme.substr(start + 8, readme.find("```", start + 8) - start - 8);
  auto replace = [&](const std::string& from, const std::string& to) {
    size_t at = config.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    config.replace(at, from.size(), to);
  };
  replace("/var/spool/slimta", dir_.sub("spool"));
  replace("/etc/slimta/recipients", dir_.sub("recipients"));
  replace("/etc/slimta/cert.pem", cert_.cert);
  replace("/etc/slimta/key.pem", cert_.key);
  replace("\"/etc/slimta/users\"", "\"" + dir_.sub("users") + "\"");
  replace("0.0.0.0:25\"", at(0) + "\"");
  replace("0.0.0.0:587", at(0));
  // This host is 127.0.0.1 alone here, so that 127.0.0.2 plays a stranger.
  replace("\"127.0.0.0/8,::1/128\"", "\"127.0.0.1/32\"");
  replace("mail.example.net:25", testing::closed_port().address());
  replace("10.0.0.5:25", testing::closed_port().address());
  testing::write_file(dir_.sub("recipients"), "postmaster@example.org\n");
  testing::write_file(dir_.sub("slimta.toml"), config);
  ChildProcess serve({SLIMTA_QUEUE_BIN, "serve", "--config", dir_.sub("slimta.toml")},
                     "listening on");
  std::vector<int> ports = testing::listening_ports(serve.output());
  int port = ports[0], submission = ports[1];
  EXPECT_NE(serve.output().find(at(submission) + " (submission)"), std::string::npos);
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.1", "victim@remote.example"), "ok");  // this host
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "victim@remote.example"), "554");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "postmaster@example.org"), "ok");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "nobody@example.org"), "550");
  EXPECT_EQ(smtplib_send(dir_, port, "127.0.0.2", "postmaster"), "550");  // no postmaster set
  EXPECT_EQ(smtplib_send(dir_, submission, "127.0.0.1", "x@remote.example", "alice:wonderland",
                         cert_.cert),
            "ok");
}

TEST_F(RelayControlTest, PasswdOnATerminalAsksTwiceAndNeverEchoes) {
  // script(1) gives it a pseudo-terminal; the password is typed once the prompt is up.
  std::string cmd = std::string(SLIMTA_QUEUE_BIN) + " passwd tty --users " + dir_.sub("users");
  auto r = run_command({"sh", "-c",
                        "(sleep 0.5; printf 'typed secret\\n'; sleep 0.3; printf 'typed "
                        "secret\\n'; sleep 0.3) | script -qec '" +
                            cmd + "' /dev/null"});
  EXPECT_NE(r.out.find("Password: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Again: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("typed secret"), std::string::npos) << r.out;  // no echo
  EXPECT_TRUE(UserDatabase::load(dir_.sub("users")).check("tty", "typed secret"));
}

// A listening socket on 127.0.0.1 and a port the kernel picks, left open across exec,
// for a server to take over (HAProxy's "bind fd@N"): no port is chosen before it is
// bound. Returns the descriptor and the port.
std::pair<int, int> inheritable_listener() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 64) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot listen on 127.0.0.1");
  }
  return {fd, ntohs(addr.sin_port)};
}

// HAProxy 2.6 (Debian's haproxy) on loopback in front of serve: one frontend sending
// PROXY v1, one sending v2, on sockets it inherits. Started in the foreground, stopped
// by its pid.
class HaproxyTest : public RelayControlTest {
 protected:
  void start_haproxy(int serve_port) {
    auto [fd1, port1] = inheritable_listener();
    auto [fd2, port2] = inheritable_listener();
    v1_ = port1;
    v2_ = port2;
    testing::write_file(dir_.sub("haproxy.cfg"),
                        "global\n  maxconn 100\n"
                        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
                        "  timeout server 30s\n"
                        "frontend v1\n  bind fd@" +
                            std::to_string(fd1) +
                            "\n  default_backend serve_v1\n"
                            "frontend v2\n  bind fd@" +
                            std::to_string(fd2) +
                            "\n  default_backend serve_v2\n"
                            "backend serve_v1\n  server s " +
                            at(serve_port) +
                            " send-proxy\n"
                            "backend serve_v2\n  server s " +
                            at(serve_port) + " send-proxy-v2\n");
    haproxy_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{"haproxy", "-f", dir_.sub("haproxy.cfg"), "-db"});
    ::close(fd1);  // haproxy has them now
    ::close(fd2);
    // Ready once both frontends take connections.
    ASSERT_TRUE(testing::eventually(
        [&] {
          auto r = run_command({"python3", "-c",
                                "import socket,sys\nfor p in sys.argv[1:]: "
                                "socket.create_connection(('127.0.0.1', int(p)), 1).close()",
                                std::to_string(v1_), std::to_string(v2_)});
          return r.exit_code == 0;
        },
        10s))
        << "haproxy did not start";
  }
  int v1_ = 0, v2_ = 0;
  std::unique_ptr<ChildProcess> haproxy_;
};

TEST_F(HaproxyTest, TheAddressHaproxySawDecidesRelayAndIsInTheReceivedLine) {
  testing::SmtpSink smarthost;
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", at(0), "--storage", "disk:" + dir_.sub("spool"),
       "--smarthost", at(smarthost.port()), "--proxy-from", "127.0.0.1/32", "--relay-networks",
       "127.0.0.3/32", "--accept-domains", "ours.example"},
      "listening on");
  int port = testing::listening_ports(serve.output())[0];
  start_haproxy(port);
  // Without the PROXY header, every client would be HAProxy's 127.0.0.1 here.
  EXPECT_EQ(smtplib_send(dir_, v1_, "127.0.0.3", "v1@remote.example"), "ok");
  EXPECT_EQ(smtplib_send(dir_, v2_, "127.0.0.3", "v2@remote.example"), "ok");
  EXPECT_EQ(smtplib_send(dir_, v1_, "127.0.0.4", "victim@remote.example"), "554");
  EXPECT_EQ(smtplib_send(dir_, v2_, "127.0.0.4", "victim@remote.example"), "554");
  EXPECT_EQ(smtplib_send(dir_, v2_, "127.0.0.4", "v2@ours.example"), "ok");
  ASSERT_TRUE(testing::eventually([&] { return smarthost.received().size() >= 3; }));
  std::map<std::string, std::string> received;
  for (const auto& m : smarthost.received()) received[m["to"][0]] = m["received"];
  EXPECT_NE(received["v1@remote.example"].find("([127.0.0.3])"), std::string::npos)
      << received["v1@remote.example"];
  EXPECT_NE(received["v2@remote.example"].find("([127.0.0.3])"), std::string::npos)
      << received["v2@remote.example"];
  EXPECT_NE(received["v2@ours.example"].find("([127.0.0.4])"), std::string::npos)
      << received["v2@ours.example"];
  EXPECT_EQ(received.count("victim@remote.example"), 0u);
  // Straight to serve from the balancer's address, without a header: closed unanswered.
  testing::write_file(dir_.sub("direct.py"), R"py(
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5, source_address=('127.0.0.1', 0))
s.sendall(b'EHLO x\r\n')
print(repr(s.recv(1000)))
)py");
  auto direct = run_command({"python3", dir_.sub("direct.py"), std::to_string(port)});
  EXPECT_EQ(direct.out, "b''\n") << direct.err;
  // A PROXY header from an address outside --proxy-from: closed.
  testing::write_file(dir_.sub("forged.py"), R"py(
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5, source_address=('127.0.0.5', 0))
greeting = s.recv(1000)
s.sendall(b'PROXY TCP4 127.0.0.3 127.0.0.1 40000 25\r\nEHLO x\r\n')
rest = s.recv(1000)
print(greeting[:3].decode(), repr(rest))
)py");
  auto forged = run_command({"python3", dir_.sub("forged.py"), std::to_string(port)});
  // 127.0.0.5 is not in --proxy-from: it is greeted as itself, and closed at the header.
  EXPECT_EQ(forged.out, "220 b''\n") << forged.err;
  haproxy_->stop(SIGTERM);
}

}  // namespace
}  // namespace slimta
