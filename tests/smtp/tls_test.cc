// STARTTLS on both sides (our server and our relay, and Python's smtplib), and AUTH
// from the relay to a real server (aiosmtpd).
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "slimta/memory_storage.h"
#include "slimta/mx_relay.h"
#include "slimta/smtp_relay.h"
#include "slimta/smtp_server.h"
#include "support/certificate.h"
#include "support/dns_server.h"
#include "support/sink.h"
#include "support/smtp_client.h"
#include "support/test_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using Kind = RecipientResult::Kind;
using testing::run_command;

using testing::Certificate;
using testing::make_certificate;

Envelope message() {
  Envelope env;
  env.sender = "alice@example.com";
  env.recipients = {"bob@example.org"};
  env.headers.add("Subject", "over TLS");
  env.body = "secret\r\n";
  return env;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { cert_ = make_certificate(dir_, "server"); }
  void start_server(std::chrono::milliseconds idle_timeout = std::chrono::minutes(5)) {
    SmtpServerOptions o;
    o.idle_timeout = idle_timeout;
    o.tls_certificate_file = cert_.cert;
    o.tls_key_file = cert_.key;
    server_ = std::make_unique<testing::TestSmtpServer>(o);
    port_ = server_->port();
  }
  SmtpRelayOptions relay_options(SmtpRelayOptions::Tls tls) {
    SmtpRelayOptions o;
    o.host = "127.0.0.1";
    o.port = port_;
    o.starttls = tls;
    o.tls_ca_file = cert_.cert;
    o.command_timeout = std::chrono::seconds(10);
    return o;
  }

  testing::TempDir dir_;
  Certificate cert_;
  std::unique_ptr<testing::TestSmtpServer> server_;
  uint16_t port_ = 0;
};

TEST_F(TlsTest, PythonSmtplibUpgradesWithStarttlsAndTheMessageSaysEsmtps) {
  start_server();
  testing::write_file(dir_.sub("send.py"), R"py(
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo()
assert s.has_extn('starttls')
s.starttls(context=ctx)
s.ehlo()
assert not s.has_extn('starttls')
s.sendmail('alice@example.com', ['bob@example.org'], b'Subject: tls\r\n\r\nhi\r\n')
s.quit()
)py");
  auto r = run_command({"python3", dir_.sub("send.py"), std::to_string(port_), cert_.cert});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto entries = server_->storage.load_all();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(server_->storage.get(entries[0].id).envelope.client.protocol, "ESMTPS");
}

// TLS 1.2 offers only Mozilla's "intermediate" suites: forward-secret key exchange
// and AEAD ciphers; no RSA key exchange, no CBC with SHA-1 (OpenSSL's s_client as the
// peer).
TEST_F(TlsTest, Tls12OffersOnlyForwardSecretAeadSuites) {
  start_server();
  auto handshake = [&](const std::string& cipher) {
    return run_command({"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port_),
                        "-starttls", "smtp", "-tls1_2", "-cipher", cipher},
                       "QUIT\n");
  };
  // The test certificate is ECDSA (P-256).
  auto good = handshake("ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_NE(good.out.find("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"), std::string::npos)
      << good.out << good.err;
  for (const char* weak :
       {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256"}) {
    auto r = handshake(weak);
    EXPECT_EQ(r.out.find(std::string("Cipher is ") + weak), std::string::npos) << weak << r.out;
    EXPECT_NE(r.out.find("Cipher is (NONE)"), std::string::npos) << weak << r.out << r.err;
  }
}

// A client that asks for STARTTLS and then never starts the handshake is dropped
// after the idle timeout, like any silent client.
TEST_F(TlsTest, AStalledHandshakeEndsTheSession) {
  start_server(std::chrono::milliseconds(300));
  testing::SmtpClient c(port_);
  EXPECT_EQ(c.code(), 220);
  EXPECT_EQ(c.exchange("EHLO c\r\n"), 250);
  EXPECT_EQ(c.exchange("STARTTLS\r\n"), 220);
  EXPECT_EQ(server_->server().sessions(), 1u);
  for (int i = 0; i < 200 && server_->server().sessions() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(server_->server().sessions(), 0u);
}

TEST_F(TlsTest, TheRelayRequiresAndVerifiesTls) {
  start_server();
  SmtpRelay relay(relay_options(SmtpRelayOptions::Tls::required));
  auto r = relay.attempt(message(), 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, Kind::delivered) << r[0].reply;
  // For the log's relay= and tls= (issue 34, finding 9): the peer and the session.
  EXPECT_EQ(r[0].relay, "127.0.0.1[127.0.0.1]:" + std::to_string(port_));
  EXPECT_TRUE(r[0].tls.starts_with("TLSv1.3 TLS_") || r[0].tls.starts_with("TLSv1.2 ECDHE"))
      << r[0].tls;
  EXPECT_GT(r[0].connect_seconds, 0);
  EXPECT_GT(r[0].transmit_seconds, 0);
  auto entries = server_->storage.load_all();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(server_->storage.get(entries[0].id).envelope.client.protocol, "ESMTPS");

  // A certificate from another CA is refused in required mode...
  SmtpRelayOptions other = relay_options(SmtpRelayOptions::Tls::required);
  other.tls_ca_file = make_certificate(dir_, "other").cert;
  auto refused = SmtpRelay(other).attempt(message(), 1);
  EXPECT_EQ(refused[0].kind, Kind::transient);
  EXPECT_NE(refused[0].reply.find("TLS handshake failed"), std::string::npos) << refused[0].reply;
  // ...and accepted, encrypted but unverified, in opportunistic mode.
  other.starttls = SmtpRelayOptions::Tls::opportunistic;
  EXPECT_EQ(SmtpRelay(other).attempt(message(), 1)[0].kind, Kind::delivered);
  EXPECT_EQ(server_->storage.get(server_->storage.load_all()[1].id).envelope.client.protocol,
            "ESMTPS");
}

// MX delivery upgrades whenever the MX offers STARTTLS (with an unverifiable
// certificate: opportunistic), unless told never to.
TEST_F(TlsTest, MxDeliveryIsOpportunisticUnlessToldNever) {
  start_server();
  nlohmann::json zone = {{"tls.test", {{"A", {"127.0.0.1"}}}}};
  testing::DnsServer dns(zone);
  for (auto tls : {SmtpRelayOptions::Tls::opportunistic, SmtpRelayOptions::Tls::required,
                   SmtpRelayOptions::Tls::never}) {
    MxRelayOptions o;
    o.smtp.port = port_;
    o.smtp.starttls = tls;
    o.smtp.command_timeout = std::chrono::seconds(10);
    o.dns_server = dns.address();
    MxRelay relay(o);
    Envelope env = message();
    env.recipients = {"bob@tls.test"};
    auto r = relay.attempt(env, 1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].kind, Kind::delivered) << r[0].reply;
  }
  auto entries = server_->storage.load_all();
  ASSERT_EQ(entries.size(), 3u);
  std::multiset<std::string> protocols;
  for (const auto& e : entries)
    protocols.insert(server_->storage.get(e.id).envelope.client.protocol);
  // required is taken as opportunistic: an MX host's name proves nothing.
  EXPECT_EQ(protocols, (std::multiset<std::string>{"ESMTP", "ESMTPS", "ESMTPS"}));
}

TEST_F(TlsTest, RequiredTlsFailsWhenTheServerDoesNotOfferIt) {
  testing::SmtpSink sink;  // no STARTTLS
  SmtpRelayOptions o = relay_options(SmtpRelayOptions::Tls::required);
  o.port = static_cast<uint16_t>(sink.port());
  auto r = SmtpRelay(o).attempt(message(), 1);
  EXPECT_EQ(r[0].kind, Kind::transient);
  EXPECT_NE(r[0].reply.find("STARTTLS is required"), std::string::npos) << r[0].reply;
  EXPECT_TRUE(sink.received().empty());
  EXPECT_EQ(r[0].tls, "");  // nothing was encrypted
  // Without STARTTLS required, the same sink takes it in the clear: no tls to report.
  o.starttls = SmtpRelayOptions::Tls::opportunistic;
  auto clear = SmtpRelay(o).attempt(message(), 1);
  EXPECT_EQ(clear[0].kind, Kind::delivered) << clear[0].reply;
  EXPECT_EQ(clear[0].relay, "127.0.0.1[127.0.0.1]:" + std::to_string(sink.port()));
  EXPECT_EQ(clear[0].tls, "");
}

TEST_F(TlsTest, TheRelayAuthenticatesAndNeverSendsCredentialsInTheClearUnlessTold) {
  testing::SmtpSink sink(nlohmann::json::object(), "relayuser", "s3cret!");
  SmtpRelayOptions o;
  o.host = "127.0.0.1";
  o.port = static_cast<uint16_t>(sink.port());
  o.username = "relayuser";
  o.password = "s3cret!";
  o.starttls = SmtpRelayOptions::Tls::never;
  EXPECT_THROW(SmtpRelay{o}, InvalidArgument);  // credentials, and no verified TLS
  o.auth_insecure = true;
  auto ok = SmtpRelay(o).attempt(message(), 1);
  EXPECT_EQ(ok[0].kind, Kind::delivered) << ok[0].reply;
  ASSERT_EQ(sink.received().size(), 1u);
  o.password = "wrong";
  auto bad = SmtpRelay(o).attempt(message(), 1);
  EXPECT_EQ(bad[0].kind, Kind::transient);
  EXPECT_NE(bad[0].reply.find("authentication failed: 535"), std::string::npos) << bad[0].reply;
  EXPECT_EQ(bad[0].reply.find("wrong"), std::string::npos);  // the secret is never shown
}

// Found by probing: with opportunistic TLS, a fake smarthost with a self-signed
// certificate was given the password.
TEST_F(TlsTest, TheRelayGivesCredentialsOnlyToAVerifiedServer) {
  SmtpServerOptions so;
  so.tls_certificate_file = cert_.cert;
  so.tls_key_file = cert_.key;
  UserDatabase::store(dir_.sub("users"), "relayuser", UserDatabase::hash("s3cret!"));
  so.users = std::make_shared<UserDatabase>(UserDatabase::load(dir_.sub("users")));
  so.relay_networks = IpNetworks();  // only an authenticated relay may send to bob
  testing::TestSmtpServer server(so);
  port_ = server.port();
  SmtpRelayOptions o = relay_options(SmtpRelayOptions::Tls::opportunistic);
  o.username = "relayuser";
  o.password = "s3cret!";
  try {
    SmtpRelay relay(o);
    FAIL() << "a relay with opportunistic TLS would send credentials";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("verified certificate"), std::string::npos) << e.what();
  }
  // Required TLS but a CA that did not sign the server's certificate: nothing is sent.
  auto other = testing::make_certificate(dir_, "other");
  o.starttls = SmtpRelayOptions::Tls::required;
  o.tls_ca_file = other.cert;
  auto refused = SmtpRelay(o).attempt(message(), 1);
  EXPECT_EQ(refused[0].kind, Kind::transient);
  EXPECT_EQ(server.storage.load_all().size(), 0u);
  // Verified: authenticated and delivered.
  o.tls_ca_file = cert_.cert;
  auto ok = SmtpRelay(o).attempt(message(), 1);
  ASSERT_EQ(ok[0].kind, Kind::delivered) << ok[0].reply;
  auto stored = server.storage.load_all();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(server.storage.get(stored[0].id).envelope.client.auth, "relayuser");
  // Told explicitly: opportunistic TLS with credentials works.
  o.starttls = SmtpRelayOptions::Tls::opportunistic;
  o.tls_ca_file.clear();
  o.auth_insecure = true;
  EXPECT_EQ(SmtpRelay(o).attempt(message(), 1)[0].kind, Kind::delivered);
}

TEST(TlsOptionsTest, AnUnreadableCertificateIsRefusedNamingTheFile) {
  SmtpServerOptions o;
  o.tls_certificate_file = "/nonexistent/cert.pem";
  o.tls_key_file = "/nonexistent/key.pem";
  MemoryStorage storage;
  Reception reception(Reception::into(storage), Reception::room_in(storage));
  try {
    SmtpServer s(o, reception);
    FAIL() << "accepted a missing certificate";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/cert.pem"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace slimta
