// The pieces of the server's access control, each on its own: IP networks, the relay
// rules at RCPT, the PROXY protocol header, SASL (base64 and PLAIN) and the users file,
// with property tests over random and truncated input (run under ASan in CI).
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "slimta/errors.h"
#include "slimta/ip_networks.h"
#include "slimta/user_database.h"
#include "smtp/proxy_header.h"
#include "smtp/relay_rules.h"
#include "smtp/sasl.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using smtp::ProxyHeader;
using Status = ProxyHeader::Status;
using testing::run_command;

TEST(IpNetworksTest, MatchesIpv4Ipv6AndV4MappedAddresses) {
  IpNetworks n = IpNetworks::parse("127.0.0.0/8, 192.0.2.7, 2001:db8::/32,::1/128");
  EXPECT_TRUE(n.contains("127.0.0.1"));
  EXPECT_TRUE(n.contains("127.255.0.9"));
  EXPECT_FALSE(n.contains("128.0.0.1"));
  EXPECT_TRUE(n.contains("192.0.2.7"));
  EXPECT_FALSE(n.contains("192.0.2.8"));
  EXPECT_TRUE(n.contains("2001:db8:1::5"));
  EXPECT_FALSE(n.contains("2001:db9::5"));
  EXPECT_TRUE(n.contains("::1"));
  EXPECT_FALSE(n.contains("::2"));
  EXPECT_TRUE(n.contains("::ffff:127.0.0.1"));  // a dual-stack socket's IPv4 peer
  EXPECT_TRUE(n.contains("[::1]"));
  EXPECT_FALSE(n.contains("unknown"));
  EXPECT_FALSE(n.contains(""));
  EXPECT_TRUE(IpNetworks::parse("::ffff:10.0.0.0/104").contains("10.1.2.3"));
  EXPECT_TRUE(IpNetworks::parse("0.0.0.0/0").contains("203.0.113.9"));
  EXPECT_FALSE(IpNetworks::parse("0.0.0.0/0").contains("2001:db8::1"));
  EXPECT_TRUE(IpNetworks::parse("10.0.0.0/7").contains("11.255.255.255"));
  EXPECT_FALSE(IpNetworks::parse("10.0.0.0/7").contains("12.0.0.0"));
  EXPECT_TRUE(IpNetworks::parse("").empty());
  EXPECT_FALSE(IpNetworks().contains("127.0.0.1"));
  EXPECT_EQ(n.to_string(), "127.0.0.0/8,192.0.2.7/32,2001:db8::/32,::1/128");
}

TEST(IpNetworksTest, BadEntriesAreRefusedNamingThem) {
  for (const char* bad : {"localhost", "10.0.0.0/33", "::/129", "10.1.2.3/8", "10.0.0.0/",
                          "10.0.0.0/x", "1.2.3.4.5", "10.0.0.0/8,", ",10.0.0.0/8", "a,,b"}) {
    try {
      IpNetworks::parse(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const InvalidArgument& e) {
      std::string what = e.what();
      EXPECT_TRUE(what.find("network") != std::string::npos) << what;
    }
  }
  try {
    IpNetworks::parse("10.1.2.3/8");
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'10.1.2.3/8'"), std::string::npos) << e.what();
  }
}

TEST(RelayRulesTest, ClosedToStrangersOpenForOurDomainsAndRelayClients) {
  auto rules = smtp::make_relay_rules({"Ours.Example", "backup.example"}, std::nullopt);
  auto check = [&](const std::string& a, bool may_relay) {
    return smtp::check_recipient(rules, a, may_relay).value_or("ok");
  };
  EXPECT_EQ(check("victim@gmail.com", false), "554 5.7.1 <victim@gmail.com>: Relay access denied");
  EXPECT_EQ(check("victim@gmail.com", true), "ok");
  EXPECT_EQ(check("user@ours.example", false), "ok");
  EXPECT_EQ(check("User@OURS.example", false), "ok");
  EXPECT_EQ(check("user@backup.example", false), "ok");
  EXPECT_EQ(check("user@sub.ours.example", false).substr(0, 9), "554 5.7.1");
  // "postmaster" without a domain, with nowhere to go, is refused (finding 5: it was
  // accepted from anyone, then bounced with the outsider's headers to their sender).
  EXPECT_EQ(check("postmaster", false),
            "550 5.1.1 <postmaster>: Recipient address rejected: no postmaster address is set "
            "here");
  auto with = smtp::make_relay_rules({"ours.example"}, std::nullopt, "admin@ours.example");
  EXPECT_EQ(smtp::check_recipient(with, "PostMaster", false), std::nullopt);
  EXPECT_EQ(smtp::stored_recipient(with, "PostMaster"), "admin@ours.example");
  EXPECT_EQ(smtp::stored_recipient(with, "user@ours.example"), "user@ours.example");
  for (const char* bad : {"admin", "@ours.example", "admin@", "a b@ours.example"})
    EXPECT_THROW(smtp::make_relay_rules({}, std::nullopt, bad), InvalidArgument) << bad;
  for (const char* trick : {"user%remote.example@ours.example", "remote.example!user@ours.example",
                            "user@remote.example@ours.example", "\"user@remote\"@ours.example"}) {
    EXPECT_EQ(check(trick, false).substr(0, 9), "554 5.7.1") << trick;
    EXPECT_EQ(check(trick, true), "ok") << trick;  // a trusted client may route
  }
}

TEST(RelayRulesTest, KnownRecipientsAreCheckedForOurDomainsWhoeverSends) {
  auto rules =
      smtp::make_relay_rules({"ours.example", "catchall.example"},
                             std::set<std::string>{"Alice@Ours.Example", "@catchall.example"});
  auto check = [&](const std::string& a, bool may_relay) {
    return smtp::check_recipient(rules, a, may_relay).value_or("ok");
  };
  EXPECT_EQ(check("alice@ours.example", false), "ok");
  EXPECT_EQ(check("ALICE@ours.example", false), "ok");
  EXPECT_EQ(check("bob@ours.example", false),
            "550 5.1.1 <bob@ours.example>: Recipient address rejected: User unknown");
  EXPECT_EQ(check("bob@ours.example", true).substr(0, 9), "550 5.1.1");
  EXPECT_EQ(check("anyone@catchall.example", false), "ok");
  EXPECT_EQ(check("anyone@elsewhere.example", true), "ok");
  EXPECT_THROW(smtp::make_relay_rules({"a@b"}, std::nullopt), InvalidArgument);
  EXPECT_THROW(smtp::make_relay_rules({""}, std::nullopt), InvalidArgument);
  EXPECT_THROW(smtp::make_relay_rules({}, std::set<std::string>{"nobody"}), InvalidArgument);
}

std::string v2_header(uint8_t ver_cmd, uint8_t family, const std::string& payload) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h += static_cast<char>(ver_cmd);
  h += static_cast<char>(family);
  h += static_cast<char>(payload.size() >> 8);
  h += static_cast<char>(payload.size() & 0xff);
  return h + payload;
}

std::string v2_tcp4(const std::string& tlvs = "") {
  // 203.0.113.7:5555 -> 127.0.0.1:25
  return v2_header(0x21, 0x11,
                   std::string("\xcb\x00\x71\x07\x7f\x00\x00\x01\x15\xb3\x00\x19", 12) + tlvs);
}

TEST(ProxyHeaderTest, ParsesVersion1) {
  std::string h = "PROXY TCP4 203.0.113.7 127.0.0.1 5555 25\r\nEHLO x\r\n";
  ProxyHeader p = smtp::parse_proxy_header(h);
  ASSERT_EQ(p.status, Status::ok) << p.error;
  EXPECT_EQ(p.source, "203.0.113.7");
  EXPECT_EQ(p.source_port, 5555);
  EXPECT_EQ(h.substr(p.length), "EHLO x\r\n");
  p = smtp::parse_proxy_header("PROXY TCP6 2001:db8::7 ::1 65535 25\r\n");
  ASSERT_EQ(p.status, Status::ok);
  EXPECT_EQ(p.source, "2001:db8::7");
  p = smtp::parse_proxy_header("PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n");
  ASSERT_EQ(p.status, Status::ok);
  EXPECT_EQ(p.source, "");  // no client named: matches no network
  EXPECT_EQ(smtp::parse_proxy_header("PROXY UNKNOWN\r\n").status, Status::ok);
}

TEST(ProxyHeaderTest, RefusesMalformedVersion1) {
  for (const char* bad :
       {"PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n", "PROXY TCP4 2001:db8::1 ::1 1 2\r\n",
        "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
        "PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "EHLO client.example\r\n", "GET / HTTP/1.0\r\n"}) {
    EXPECT_EQ(smtp::parse_proxy_header(bad).status, Status::invalid) << bad;
  }
  std::string endless = "PROXY TCP4 " + std::string(200, '1');
  EXPECT_EQ(smtp::parse_proxy_header(endless).status, Status::invalid);
}

TEST(ProxyHeaderTest, ParsesVersion2) {
  ProxyHeader p = smtp::parse_proxy_header(v2_tcp4() + "EHLO x\r\n");
  ASSERT_EQ(p.status, Status::ok) << p.error;
  EXPECT_EQ(p.source, "203.0.113.7");
  EXPECT_EQ(p.source_port, 5555);
  EXPECT_EQ(p.length, 28u);
  // TLVs after the addresses are skipped.
  p =
      smtp::parse_proxy_header(v2_tcp4(std::string("\x04\x00\x03"
                                                   "abc",
                                                   6)));
  ASSERT_EQ(p.status, Status::ok);
  EXPECT_EQ(p.length, 34u);
  std::string six(36, '\0');
  six[0] = '\x20', six[1] = '\x01', six[2] = '\x0d', six[3] = '\xb8', six[15] = '\x07';
  six[32] = '\x01', six[33] = '\x02';
  p = smtp::parse_proxy_header(v2_header(0x21, 0x21, six));
  ASSERT_EQ(p.status, Status::ok);
  EXPECT_EQ(p.source, "2001:db8::7");
  EXPECT_EQ(p.source_port, 0x0102);
  p = smtp::parse_proxy_header(v2_header(0x20, 0x00, ""));  // LOCAL: a health check
  ASSERT_EQ(p.status, Status::ok);
  EXPECT_EQ(p.source, "");
  EXPECT_EQ(smtp::parse_proxy_header(v2_header(0x21, 0x31, std::string(216, 'x'))).source, "");
  EXPECT_EQ(smtp::parse_proxy_header(v2_header(0x31, 0x11, std::string(12, 0))).status,
            Status::invalid);  // version 3
  EXPECT_EQ(smtp::parse_proxy_header(v2_header(0x22, 0x11, std::string(12, 0))).status,
            Status::invalid);  // command 2
  EXPECT_EQ(smtp::parse_proxy_header(v2_header(0x21, 0x11, std::string(8, 0))).status,
            Status::invalid);  // addresses cut short
  EXPECT_EQ(smtp::parse_proxy_header(v2_header(0x21, 0x41, std::string(12, 0))).status,
            Status::invalid);  // family 4
  std::string huge = v2_header(0x21, 0x11, std::string(12, 0));
  huge[14] = '\x10';  // says 4108 bytes follow
  EXPECT_EQ(smtp::parse_proxy_header(huge).status, Status::invalid);
}

TEST(ProxyHeaderTest, EveryPrefixOfAValidHeaderIsIncomplete) {
  for (const std::string& h : {std::string("PROXY TCP4 203.0.113.7 127.0.0.1 5555 25\r\n"),
                               v2_tcp4(), v2_header(0x20, 0x00, "")}) {
    for (size_t n = 0; n < h.size(); ++n) {
      ProxyHeader p = smtp::parse_proxy_header(std::string_view(h).substr(0, n));
      EXPECT_EQ(p.status, Status::incomplete) << "prefix of " << n << " bytes";
    }
    EXPECT_TRUE(smtp::looks_like_proxy_header(h));
  }
  EXPECT_FALSE(smtp::looks_like_proxy_header("EHLO x\r\n"));
  EXPECT_FALSE(smtp::looks_like_proxy_header("PROX"));  // not the whole prefix yet
}

TEST(ProxyHeaderTest, RandomAndMutatedInputNeverReadsPastTheEnd) {
  std::mt19937 rng(7);
  std::vector<std::string> seeds = {"PROXY TCP4 203.0.113.7 127.0.0.1 5555 25\r\n",
                                    "PROXY TCP6 2001:db8::7 ::1 1 2\r\n", v2_tcp4(),
                                    v2_header(0x21, 0x21, std::string(36, '\1'))};
  size_t ok = 0, invalid = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string s = seeds[rng() % seeds.size()];
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0:
          s[at] = static_cast<char>(rng());
          break;
        case 1:
          s.erase(at, 1 + rng() % 4);
          break;
        case 2:
          s.insert(at, 1, static_cast<char>(rng()));
          break;
        default:
          s.resize(at);
          break;
      }
    }
    // A copy of exactly its size: ASan sees any read past the end.
    auto data = std::make_unique<char[]>(s.size() + 1);
    std::memcpy(data.get(), s.data(), s.size());
    ProxyHeader p = smtp::parse_proxy_header(std::string_view(data.get(), s.size()));
    if (p.status == Status::ok) {
      ++ok;
      EXPECT_LE(p.length, s.size());
      EXPECT_GT(p.length, 0u);
      if (!p.source.empty()) {
        EXPECT_TRUE(IpNetworks::parse("0.0.0.0/0,::/0").contains(p.source)) << p.source;
      }
    } else if (p.status == Status::invalid) {
      ++invalid;
      EXPECT_FALSE(p.error.empty());
    }
  }
  EXPECT_GT(ok, 1000u);  // the mutations reach every outcome
  EXPECT_GT(invalid, 1000u);
}

TEST(SaslTest, Base64RoundTripsAndRefusesAnythingElse) {
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::string data(rng() % 40, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    std::string text = smtp::base64_encode(data);
    auto back = smtp::base64_decode(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(*back, data);
  }
  EXPECT_EQ(smtp::base64_decode("").value(), "");
  EXPECT_EQ(smtp::base64_decode("YQ==").value(), "a");
  for (const char* bad :
       {"YQ", "YQ=", "Y===", "Y Q==", "YQ==YQ==", "=YQ=", "YQ\r\n", "Y*Q=", "YWJj\n"}) {
    EXPECT_FALSE(smtp::base64_decode(bad)) << bad;
  }
}

TEST(SaslTest, PlainMessages) {
  auto c = smtp::parse_plain(std::string("\0alice\0s3cret", 13));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->authzid, "");
  EXPECT_EQ(c->user, "alice");
  EXPECT_EQ(c->password, "s3cret");
  c = smtp::parse_plain(std::string("bob\0alice\0pw", 12));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->authzid, "bob");
  for (const std::string& bad :
       {std::string("alice"), std::string("\0alice", 6), std::string("\0\0pw", 4),
        std::string("\0alice\0", 7), std::string("\0a\0b\0c", 6)}) {
    EXPECT_FALSE(smtp::parse_plain(bad));
  }
}

std::string mkpasswd(const std::string& method, const std::string& password) {
  auto r = run_command({"mkpasswd", "-m", method, "-s"}, password + "\n");
  if (r.exit_code != 0) throw std::runtime_error("mkpasswd failed: " + r.err);
  return r.out.substr(0, r.out.find('\n'));
}

TEST(UserDatabaseTest, ChecksYescryptBcryptAndSha512CryptHashesFromMkpasswd) {
  testing::TempDir dir;
  std::string y = mkpasswd("yescrypt", "yes pass"), b = mkpasswd("bcrypt", "b pass"),
              s = mkpasswd("sha512crypt", "s pass");
  EXPECT_EQ(y.substr(0, 3), "$y$");
  EXPECT_EQ(b.substr(0, 4), "$2b$");
  EXPECT_EQ(s.substr(0, 3), "$6$");
  testing::write_file(dir.sub("users"), "# users\n\nyuri:" + y + "\nbea:{BLF-CRYPT}" + b +
                                            ":1000:1000::/home/bea\r\nsam:" + s + "\n");
  UserDatabase db = UserDatabase::load(dir.sub("users"));
  EXPECT_EQ(db.size(), 3u);
  EXPECT_TRUE(db.check("yuri", "yes pass"));
  EXPECT_TRUE(db.check("bea", "b pass"));
  EXPECT_TRUE(db.check("sam", "s pass"));
  EXPECT_FALSE(db.check("yuri", "b pass"));
  EXPECT_FALSE(db.check("yuri", ""));
  EXPECT_FALSE(db.check("YURI", "yes pass"));
  EXPECT_FALSE(db.check("nobody", "yes pass"));
  EXPECT_FALSE(db.check("", ""));
}

// Finding 9: with sha512-crypt users, an unknown name (checked against yescrypt) took
// several times longer than a known one. It is now checked against a hash of the file's
// most common method and cost: as long as most users' checks.
TEST(UserDatabaseTest, AnUnknownNameCostsWhatTheFilesMostCommonHashCosts) {
  testing::TempDir dir;
  std::string s1 = mkpasswd("sha512crypt", "a"), s2 = mkpasswd("sha512crypt", "b");
  std::string b = mkpasswd("bcrypt", "c"), y = mkpasswd("yescrypt", "d");
  testing::write_file(dir.sub("users"),
                      "yuri:" + y + "\nsam:" + s1 + "\nsue:" + s2 + "\nbea:" + b + "\n");
  UserDatabase db = UserDatabase::load(dir.sub("users"));
  EXPECT_EQ(db.unknown_name_hash().substr(0, 3), "$6$") << db.unknown_name_hash();
  EXPECT_FALSE(db.check("nobody", "a"));  // nor with a known user's password
  testing::write_file(dir.sub("users2"), "bea:" + b + "\nbob:" + mkpasswd("bcrypt", "e") + "\n");
  EXPECT_EQ(UserDatabase::load(dir.sub("users2")).unknown_name_hash().substr(0, 7), b.substr(0, 7));
  EXPECT_EQ(UserDatabase().unknown_name_hash().substr(0, 3), "$y$");  // no users: yescrypt
}

TEST(UserDatabaseTest, ASuccessIsRememberedAndConcurrentChecksShareOneHash) {
  testing::TempDir dir;
  testing::write_file(dir.sub("users"), "alice:" + mkpasswd("yescrypt", "pw") + "\n");
  UserDatabase db = UserDatabase::load(dir.sub("users"));
  auto check_at_once = [&](const std::string& password) {
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i) threads.emplace_back([&] { ok += db.check("alice", password); });
    for (auto& t : threads) t.join();
    return ok.load();
  };
  // One hash for 8 identical checks at once, then none while remembered.
  EXPECT_EQ(check_at_once("pw"), 8);
  EXPECT_EQ(db.hashes(), 1u);
  EXPECT_EQ(check_at_once("pw"), 8);
  EXPECT_EQ(db.hashes(), 1u);
  // Every wrong guess costs its own hash, at once or not.
  EXPECT_EQ(check_at_once("wrong"), 0);
  EXPECT_EQ(db.hashes(), 9u);
  EXPECT_FALSE(db.check("alice", "wrong"));
  EXPECT_FALSE(db.check("alice", "pw2"));
  EXPECT_FALSE(db.check("bob", "pw"));
  EXPECT_EQ(db.hashes(), 12u);
}

TEST(UserDatabaseTest, BadFilesAreRefusedNamingTheLine) {
  testing::TempDir dir;
  auto refused = [&](const std::string& content, const std::string& expect) {
    testing::write_file(dir.sub("users"), content);
    try {
      UserDatabase::load(dir.sub("users"));
      ADD_FAILURE() << content << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
  };
  std::string y = mkpasswd("yescrypt", "pw");
  refused("a:" + y + "\nno colon here\n", "line 2: expected name:HASH");
  refused(":" + y + "\n", "line 1: empty user name");
  refused("a:plaintext\n", "line 1: user 'a' has a hash of a broken method, or plain text");
  refused("a:" + mkpasswd("md5crypt", "pw") + "\n", "broken method");
  refused("a:" + y + "\na:" + y + "\n", "line 2: user 'a' listed twice");
  EXPECT_THROW(UserDatabase::load(dir.sub("missing")), InvalidArgument);
}

TEST(UserDatabaseTest, StoreAddsAndReplacesKeepingOtherLinesAndMode0600) {
  testing::TempDir dir;
  std::string path = dir.sub("users");
  UserDatabase::store(path, "alice", UserDatabase::hash("one"));
  testing::write_file(path, "# kept\n" + testing::read_file(path) +
                                "bob:" + mkpasswd("sha512crypt", "two") + ":1000:1000\n");
  UserDatabase::store(path, "alice", UserDatabase::hash("three"));
  std::string text = testing::read_file(path);
  EXPECT_EQ(text.substr(0, 7), "# kept\n");
  EXPECT_NE(text.find(":1000:1000\n"), std::string::npos);
  UserDatabase db = UserDatabase::load(path);
  EXPECT_EQ(db.size(), 2u);
  EXPECT_TRUE(db.check("alice", "three"));
  EXPECT_FALSE(db.check("alice", "one"));
  EXPECT_TRUE(db.check("bob", "two"));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THROW(UserDatabase::store(path, "a:b", "x"), InvalidArgument);
  EXPECT_THROW(UserDatabase::store(path, "", "x"), InvalidArgument);
}

TEST(UserDatabaseTest, StoreFollowsNoLinkPlantedWhereItWritesItsTempFile) {
  testing::TempDir dir;
  std::string path = dir.sub("users"), victim = dir.sub("victim");
  testing::write_file(victim, "precious\n");
  // The temp name was path + ".tmp" + the pid: whoever could write the directory could
  // make root overwrite any file through a link there.
  std::string planted = path + ".tmp" + std::to_string(::getpid());
  ASSERT_EQ(::symlink(victim.c_str(), planted.c_str()), 0);
  UserDatabase::store(path, "alice", UserDatabase::hash("one"));
  EXPECT_EQ(testing::read_file(victim), "precious\n");
  EXPECT_TRUE(UserDatabase::load(path).check("alice", "one"));
  struct stat st;
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST(UserDatabaseTest, StoreKeepsTheFilesOwnerAndMode) {
  testing::TempDir dir;
  std::string path = dir.sub("users");
  UserDatabase::store(path, "alice", UserDatabase::hash("one"));
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  const bool root = ::geteuid() == 0;
  if (root) {
    ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);  // nobody: the service user
  }
  UserDatabase::store(path, "bob", UserDatabase::hash("two"));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (root) {
    EXPECT_EQ(st.st_uid, 65534u);
    EXPECT_EQ(st.st_gid, 65534u);
  }
}

TEST(UserDatabaseTest, ConcurrentStoresLoseNoUser) {
  testing::TempDir dir;
  std::string path = dir.sub("users");
  const std::string hash = UserDatabase::hash("pw");
  std::vector<std::thread> writers;
  std::atomic<int> failed = 0;
  for (int i = 0; i < 8; ++i) {
    writers.emplace_back([&, i] {
      try {
        UserDatabase::store(path, "user" + std::to_string(i), hash);
      } catch (const std::exception&) {
        ++failed;
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(failed.load(), 0);
  UserDatabase db = UserDatabase::load(path);
  EXPECT_EQ(db.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(db.check("user" + std::to_string(i), "pw")) << i;
}

}  // namespace
}  // namespace slimta
