// The server's access control end to end, against SmtpServer on loopback: AUTH (with
// Python's smtplib, under STARTTLS and implicit TLS), the submission roles, the relay
// decision for authenticated and unauthenticated sessions, and the PROXY protocol.
#include <gtest/gtest.h>

#include <random>

#include "slimta/memory_storage.h"
#include "slimta/smtp_server.h"
#include "smtp/sasl.h"
#include "support/certificate.h"
#include "support/smtp_client.h"
#include "support/test_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::run_command;

// Runs a Python smtplib script with port, ca, tls (an SSL context trusting ca) and
// tls_session() (a session after STARTTLS and EHLO) defined.
testing::CommandResult python(const testing::TempDir& dir, const std::string& script, int port,
                              const std::string& ca) {
  testing::write_file(dir.sub("client.py"),
                      "import smtplib, ssl, sys\nport, ca = int(sys.argv[1]), sys.argv[2]\n"
                      "tls = ssl.create_default_context(cafile=ca)\n"
                      "def tls_session():\n"
                      "    s = smtplib.SMTP('127.0.0.1', port)\n"
                      "    s.starttls(context=tls)\n"
                      "    s.ehlo()\n"
                      "    return s\n" +
                          script);
  return run_command({"python3", dir.sub("client.py"), std::to_string(port), ca});
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = testing::make_certificate(dir_, "server");
    UserDatabase::store(dir_.sub("users"), "alice", UserDatabase::hash("wonderland"));
  }
  SmtpServerOptions options() {
    SmtpServerOptions o;
    o.tls_certificate_file = cert_.cert;
    o.tls_key_file = cert_.key;
    o.users = std::make_shared<UserDatabase>(UserDatabase::load(dir_.sub("users")));
    o.relay_networks = IpNetworks();  // nobody relays without AUTH
    o.accept_domains = {"ours.example"};
    o.auth_failure_delay = 100ms;
    return o;
  }
  void start(SmtpServerOptions o, ListenerRole role = ListenerRole::smtp) {
    server_ = std::make_unique<testing::TestSmtpServer>(o, role);
  }
  int port() const { return server_->port(); }

  testing::TempDir dir_;
  testing::Certificate cert_;
  std::unique_ptr<testing::TestSmtpServer> server_;
};

TEST_F(AuthTest, AuthIsOfferedOnlyUnderTlsAndRefusedBeforeIt) {
  start(options());
  testing::SmtpClient c(port());
  EXPECT_EQ(c.code(), 220);
  c.send("EHLO client.example\r\n");
  std::string ehlo = c.reply();
  EXPECT_NE(ehlo.find("STARTTLS"), std::string::npos) << ehlo;
  EXPECT_EQ(ehlo.find("AUTH"), std::string::npos) << ehlo;
  c.send("AUTH PLAIN " + smtp::base64_encode(std::string("\0alice\0wonderland", 17)) + "\r\n");
  EXPECT_EQ(c.reply().substr(0, 10), "538 5.7.11");
  // Still not allowed to relay; our own domain is fine.
  EXPECT_EQ(c.exchange("MAIL FROM:<a@example.com>\r\n"), 250);
  EXPECT_EQ(c.exchange("RCPT TO:<victim@elsewhere.example>\r\n"), 554);
  EXPECT_EQ(c.exchange("RCPT TO:<user@ours.example>\r\n"), 250);
}

TEST_F(AuthTest, AnAuthenticatedSessionRelaysAndIsMarkedEsmtpsa) {
  start(options());
  // PLAIN without an initial response (334 then the credentials), as smtplib does.
  auto r = python(dir_, R"py(
s = tls_session()
assert 'PLAIN' in s.esmtp_features['auth'] and 'LOGIN' in s.esmtp_features['auth']
try:
    s.sendmail('a@example.com', ['victim@elsewhere.example'], b'Subject: x\r\n\r\nx\r\n')
    raise SystemExit('relayed without AUTH')
except smtplib.SMTPRecipientsRefused as e:
    assert e.recipients['victim@elsewhere.example'][0] == 554, e.recipients
s.auth('PLAIN', lambda challenge=None: '\0alice\0wonderland', initial_response_ok=False)
s.sendmail('a@example.com', ['friend@elsewhere.example'], b'Subject: relayed\r\n\r\nhi\r\n')
s.quit()
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto stored = server_->storage.load_all();
  ASSERT_EQ(stored.size(), 1u);
  Envelope env = server_->storage.get(stored[0].id).envelope;
  EXPECT_EQ(env.recipients, std::vector<std::string>{"friend@elsewhere.example"});
  EXPECT_EQ(env.client.protocol, "ESMTPSA");
  EXPECT_EQ(env.client.auth, "alice");
  EXPECT_NE(env.headers.get("Received").value_or("").find("with ESMTPSA"), std::string::npos);
}

TEST_F(AuthTest, LoginWithAnInitialResponse) {
  start(options());
  auto r = python(dir_, R"py(
s = tls_session()
s.user, s.password = 'alice', 'wonderland'
code, text = s.auth('LOGIN', s.auth_login, initial_response_ok=True)
assert code == 235, (code, text)
s.sendmail('a@example.com', ['friend@elsewhere.example'], b'Subject: x\r\n\r\nx\r\n')
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(server_->storage.load_all().size(), 1u);
}

TEST_F(AuthTest, WrongPasswordsAreAnsweredLateAndEndTheSessionAfterThree) {
  start(options());
  auto r = python(dir_, R"py(
import time
s = tls_session()
times = []
for i in range(3):
    t = time.monotonic()
    code, text = s.docmd('AUTH', 'PLAIN ' + __import__('base64').b64encode(b'\0alice\0wrong').decode())
    times.append(time.monotonic() - t)
    assert code == 535 and text.startswith(b'5.7.8'), (code, text)
print(' '.join('%.3f' % t for t in times))
code, text = s.getreply()  # the 421 that came with the third 535
assert code == 421, (code, text)
try:
    s.noop()
    raise SystemExit('still connected')
except smtplib.SMTPServerDisconnected:
    pass
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  double t1 = 0, t2 = 0, t3 = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str(), "%lf %lf %lf", &t1, &t2, &t3), 3) << r.out;
  EXPECT_GE(t1, 0.09);  // 100 ms, then 200, then 300
  EXPECT_GE(t2, 0.19);
  EXPECT_GE(t3, 0.29);
}

// Finding 9 of the attack round: guesses spread over sessions and addresses went on
// at 28-86 a second. Failures now count across sessions, per client network and per
// name; a locked-out client is told 454 without its password being checked.
TEST_F(AuthTest, FailuresCountAcrossSessionsPerClientAndPerName) {
  SmtpServerOptions o = options();
  o.auth_failures_per_client = 4;
  o.auth_failures_per_user = 6;
  start(o);
  auto r = python(dir_, R"py(
import base64
def attempt(source, user, password):
    s = smtplib.SMTP('127.0.0.1', port, source_address=(source, 0))
    s.starttls(context=tls)
    s.ehlo()
    code, text = s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'\0' + user + b'\0' + password).decode())
    s.close()
    return str(code)
out = [attempt('127.0.0.9', b'alice', b'wonderland')]  # alice's usual place
# One guess a session from 127.0.0.1: the session limit (3) never comes into play.
out += [attempt('127.0.0.1', b'alice', b'guess%d' % i) for i in range(4)]
out.append(attempt('127.0.0.1', b'alice', b'wonderland'))  # locked: not even checked
out.append(attempt('127.0.0.1', b'bob', b'other'))  # any name
out.append(attempt('127.0.0.2', b'alice', b'wonderland'))  # another client: in
print(' '.join(out))
# Two more guesses at alice from elsewhere make six: the name is locked for strangers,
# not for where alice has authenticated before.
out = [attempt('127.0.0.3', b'alice', b'guess'), attempt('127.0.0.4', b'alice', b'guess')]
out.append(attempt('127.0.0.5', b'alice', b'wonderland'))
out.append(attempt('127.0.0.9', b'alice', b'wonderland'))
print(' '.join(out))
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "235 535 535 535 535 454 454 235\n535 535 454 235\n");
}

// Finding 12: an authenticated user could send as anyone. With sender_logins, a login
// uses only the senders it owns (Postfix's reject_authenticated_sender_login_mismatch).
TEST_F(AuthTest, AnAuthenticatedLoginSendsOnlyAsTheSendersItOwns) {
  SmtpServerOptions o = options();
  o.sender_logins = std::map<std::string, std::set<std::string>>{
      {"alice@ours.example", {"alice"}}, {"@shared.example", {"alice", "bob"}}};
  start(o);
  auto r = python(dir_, R"py(
import base64
s = tls_session()
s.login('alice', 'wonderland')
out = []
for sender in ['alice@ours.example', 'Alice@OURS.example', 'x@shared.example', 'bob@ours.example', 'ceo@bank.example', '']:
    code, text = s.docmd('MAIL FROM:<%s>' % sender)
    out.append(str(code))
    s.rset()
print(' '.join(out))
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "250 250 250 553 553 250\n");
}

TEST_F(AuthTest, MalformedExchangesGetSyntaxErrorsAndAbortIsHonoured) {
  start(options());
  auto r = python(dir_, R"py(
s = tls_session()
def expect(cmd, arg, want):
    code, text = s.docmd(cmd, arg)
    assert code == want, (cmd, arg, code, text)
expect('AUTH', 'CRAM-MD5', 504)
expect('AUTH', 'PLAIN not-base64!', 501)
expect('AUTH', 'PLAIN ' + __import__('base64').b64encode(b'no nuls').decode(), 501)
expect('AUTH', 'PLAIN', 334)
expect('*', '', 501)                    # aborted
expect('AUTH', 'LOGIN', 334)
expect('YWxpY2U=', '', 334)             # alice
expect('*', '', 501)
expect('AUTH', 'LOGIN', 334)
expect('YWxpY2U=', '', 334)
expect('d29uZGVybGFuZA==', '', 235)     # wonderland
expect('AUTH', 'PLAIN', 503)            # already authenticated
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(AuthTest, RandomAuthExchangesAlwaysGetAnAnswerFromTheAllowedSet) {
  SmtpServerOptions o = options();
  o.auth_failure_delay = 0ms;
  o.max_auth_failures = 1000;
  o.auth_failures_per_client = 0;  // the parsing is under test here, not the lockout
  o.auth_failures_per_user = 0;
  start(o);
  // AUTH is only parsed under TLS: Python's TLS client drives it.
  auto r = python(dir_, R"py(
import base64, random
rng = random.Random(11)
pieces = [b'\0', b'alice', b'wonderland', b'~', b'=', b'*', b' ', b'PLAIN', b'LOGIN']
allowed = {235, 334, 501, 503, 504, 535, 500}
s = tls_session()
sessions = 1
for i in range(400):
    mech = rng.choice(['PLAIN', 'LOGIN', 'plain', 'XOAUTH2', ''])
    raw = b''.join(rng.choice(pieces) for _ in range(rng.randrange(0, 6)))
    arg = rng.choice([base64.b64encode(raw).decode(), raw.decode().replace('\r', '').replace('\n', ''), '=', '*', 'A' * rng.randrange(0, 600)])
    code, text = s.docmd('AUTH', (mech + ' ' + arg).strip() if rng.random() < 0.7 else mech)
    while code == 334:
        code, text = s.docmd(rng.choice([base64.b64encode(raw).decode(), '*', '!!', 'A' * 13000, '=']))
    if code == 421:  # too many errors: the session ends, as it should
        assert text.startswith(b'4.7.0'), text
        s.close()
        s = tls_session()
        sessions += 1
        continue
    assert code in allowed, (code, text)
    if code == 235:
        s.rset()
        break
s.noop()
assert sessions > 1, 'the error limit was never reached'
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(AuthTest, SubmissionRequiresAuthBeforeMailEvenFromARelayNetwork) {
  SmtpServerOptions o = options();
  o.relay_networks = IpNetworks::parse("127.0.0.0/8");
  start(o, ListenerRole::submission);
  auto r = python(dir_, R"py(
s = smtplib.SMTP('127.0.0.1', port)
s.ehlo()
code, text = s.docmd('MAIL', 'FROM:<a@example.com>')
assert code == 530 and text.startswith(b'5.7.0'), (code, text)
s.starttls(context=tls)
s.ehlo()
code, text = s.docmd('MAIL', 'FROM:<a@example.com>')
assert code == 530, (code, text)
s.login('alice', 'wonderland')
s.sendmail('a@example.com', ['b@elsewhere.example'], b'Subject: x\r\n\r\nx\r\n')
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(server_->storage.load_all().size(), 1u);
}

TEST_F(AuthTest, SubmissionsSpeaksTlsFromTheFirstByte) {
  start(options(), ListenerRole::submissions);
  auto r = python(dir_, R"py(
s = smtplib.SMTP_SSL('127.0.0.1', port, context=tls)
s.ehlo()
assert 'auth' in s.esmtp_features and 'starttls' not in s.esmtp_features, s.esmtp_features
code, text = s.docmd('MAIL', 'FROM:<a@example.com>')
assert code == 530, (code, text)
s.login('alice', 'wonderland')
s.sendmail('a@example.com', ['b@elsewhere.example'], b'Subject: x\r\n\r\nx\r\n')
)py",
                  port(), cert_.cert);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_EQ(server_->storage.load_all().size(), 1u);
  EXPECT_EQ(server_->storage.get(server_->storage.load_all()[0].id).envelope.client.protocol,
            "ESMTPSA");
  // Plain text on that port gets no greeting.
  testing::SmtpClient plain(port());
  plain.send("EHLO x\r\n");
  EXPECT_EQ(plain.reply().substr(0, 3).find("220"), std::string::npos);
}

TEST_F(AuthTest, SubmissionListenersNeedTlsAndUsers) {
  SmtpServerOptions o;
  MemoryStorage storage;
  Reception reception(Reception::into(storage), Reception::room_in(storage));
  SmtpServer server(o, reception);
  EXPECT_THROW(server.listen("127.0.0.1", 0, ListenerRole::submission), InvalidArgument);
  EXPECT_THROW(server.listen("127.0.0.1", 0, ListenerRole::submissions), InvalidArgument);
}

class ProxyTest : public ::testing::Test {
 protected:
  // One header, then a transaction to a remote and to an accept domain.
  std::vector<int> transaction(const std::string& header) {
    testing::SmtpClient c(server_->port());
    c.send(header);
    std::vector<int> codes{c.code()};
    codes.push_back(c.exchange("EHLO client.example\r\n"));
    codes.push_back(c.exchange("MAIL FROM:<a@example.com>\r\n"));
    codes.push_back(c.exchange("RCPT TO:<victim@elsewhere.example>\r\n"));
    codes.push_back(c.exchange("RCPT TO:<user@ours.example>\r\n"));
    codes.push_back(c.exchange("DATA\r\n"));
    codes.push_back(c.exchange("Subject: x\r\n\r\nx\r\n.\r\n"));
    return codes;
  }
  void start(const std::string& proxy_from) {
    SmtpServerOptions o;
    o.relay_networks = IpNetworks::parse("192.0.2.0/24");
    o.accept_domains = {"ours.example"};
    o.proxy_from = IpNetworks::parse(proxy_from);
    o.proxy_timeout = 300ms;
    server_ = std::make_unique<testing::TestSmtpServer>(o);
  }
  Envelope last() {
    auto all = server_->storage.load_all();
    if (all.empty()) return {};
    return server_->storage.get(all.back().id).envelope;
  }
  std::unique_ptr<testing::TestSmtpServer> server_;
};

TEST_F(ProxyTest, TheClientAddressOfAVersion1HeaderDecidesRelayAndIsRecorded) {
  start("127.0.0.1/32");
  EXPECT_EQ(transaction("PROXY TCP4 198.51.100.9 127.0.0.1 40000 25\r\n"),
            (std::vector<int>{220, 250, 250, 554, 250, 354, 250}));
  Envelope env = last();
  EXPECT_EQ(env.client.ip, "198.51.100.9");
  EXPECT_NE(env.headers.get("Received").value_or("").find("[198.51.100.9]"), std::string::npos);
  // From a relay network (behind the proxy): relayed.
  EXPECT_EQ(transaction("PROXY TCP4 192.0.2.55 127.0.0.1 40000 25\r\n"),
            (std::vector<int>{220, 250, 250, 250, 250, 354, 250}));
}

TEST_F(ProxyTest, Version2AndTheHeaderInTheSameSegmentAsTheFirstCommand) {
  start("127.0.0.1/32");
  std::string v2(
      "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x21\x7f\x00\x00\x01\x9c\x40\x00\x19", 28);
  testing::SmtpClient c(server_->port());
  c.send(v2 + "EHLO client.example\r\n");
  EXPECT_EQ(c.code(), 220);
  EXPECT_EQ(c.code(), 250);
  EXPECT_EQ(c.exchange("MAIL FROM:<a@example.com>\r\n"), 250);
  EXPECT_EQ(c.exchange("RCPT TO:<victim@elsewhere.example>\r\n"), 250);  // 192.0.2.33 may relay
  // LOCAL (a balancer's health check) names nobody: no relay.
  EXPECT_EQ(transaction(std::string("\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 16))[3], 554);
  // UNKNOWN likewise, though the balancer itself is in 127.0.0.0/8.
  EXPECT_EQ(transaction("PROXY UNKNOWN\r\n")[3], 554);
}

TEST_F(ProxyTest, ABalancerThatSendsNoHeaderIsClosedUnanswered) {
  start("127.0.0.1/32");
  {
    testing::SmtpClient c(server_->port());
    c.send("EHLO client.example\r\n");
    EXPECT_EQ(c.reply(), "");  // no greeting: closed
    EXPECT_TRUE(c.closed());
  }
  testing::SmtpClient silent(server_->port());  // waits for a greeting that never comes
  EXPECT_EQ(silent.reply(), "");
  EXPECT_TRUE(silent.closed());
  EXPECT_EQ(transaction("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n")[0], -1);
  EXPECT_EQ(server_->server().accepted(), 0u);
}

TEST_F(ProxyTest, AHeaderFromAnAddressOutsideProxyFromIsRefused) {
  start("127.0.0.2/32");
  for (const std::string& header :
       {std::string("PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\r\n"),
        std::string(
            "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\x7f\x00\x00\x01\x9c\x40\x00\x19",
            28)}) {
    std::vector<int> codes = transaction(header);
    EXPECT_EQ(codes[0], 220);  // greeted as itself, then closed at the header
    EXPECT_EQ(codes[1], -1);
  }
  // Mid-session likewise.
  testing::SmtpClient c(server_->port());
  EXPECT_EQ(c.code(), 220);
  EXPECT_EQ(c.exchange("EHLO x\r\n"), 250);
  c.send("PROXY TCP4 192.0.2.1 127.0.0.1 40000 25\r\n");
  EXPECT_EQ(c.reply(), "");
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(server_->server().accepted(), 0u);
}

}  // namespace
}  // namespace slimta
