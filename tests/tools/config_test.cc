// The config file is checked strictly (src/daemon/config_file.h): a key CLI11
// does not know, a key in the wrong section or a value of the wrong type is an error
// naming the file, the line, the key and the closest known key, before anything runs;
// and check-config prints the effective configuration.
#include <filesystem>

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "slimta/clock.h"
#include "slimta/envelope.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::run_command;

class ConfigTest : public ::testing::Test {
 protected:
  // Runs slimta-queue with a config file holding `text`.
  testing::CommandResult run(const std::string& text, std::vector<std::string> args) {
    testing::write_file(dir_.sub("slimta.toml"), text);
    args.insert(args.begin(), {SLIMTA_QUEUE_BIN, "--config", dir_.sub("slimta.toml")});
    return run_command(args);
  }
  std::string spool() const { return dir_.sub("spool"); }
  testing::TempDir dir_;
};

// Seen: the typo started serve, which then delivered to MX hosts instead.
TEST_F(ConfigTest, AMisspelledKeyStopsServeNamingItsLineAndTheKeyMeant) {
  auto r = run("storage = \"disk:" + spool() +
                   "\"\n[serve]\nlisten = \"127.0.0.1:0\"\nsmarthst = \"mail.example.com:25\"\n",
               {"serve"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("config file '" + dir_.sub("slimta.toml") +
                       "' line 4: unknown key 'smarthst' in [serve]; did you mean 'smarthost'?"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out.find("listening"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(spool())) << "a refused config must not create a spool";
}

// Finding 10 of the attack round: a config, users, token or password file any local
// user may write was used silently. check-config refuses what serve refuses.
TEST_F(ConfigTest, FilesAnyUserMayChangeAreRefusedAndReadableSecretsWarned) {
  std::string token = dir_.sub("token"), users = dir_.sub("users");
  testing::write_file(token, "0123456789abcdef0123\n");
  testing::write_file(users, "");
  ::chmod(token.c_str(), 0600);
  ::chmod(users.c_str(), 0600);
  std::string text = "storage = \"disk:" + spool() + "\"\n[serve]\nhttp = \"127.0.0.1:0\"\n" +
                     "http-token-file = \"" + token + "\"\n";
  auto r = run(text, {"check-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("any user"), std::string::npos) << r.err;

  ::chmod(dir_.sub("slimta.toml").c_str(), 0666);  // run() writes it anew, keeping the mode
  r = run(text, {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("config file '" + dir_.sub("slimta.toml") +
                       "': any user may change it (mode 0666); refused: chmod o-w it"),
            std::string::npos)
      << r.err;
  ::chmod(dir_.sub("slimta.toml").c_str(), 0644);

  ::chmod(token.c_str(), 0602);
  r = run(text, {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--http-token-file '" + token + "': any user may change it"),
            std::string::npos)
      << r.err;

  ::chmod(token.c_str(), 0644);
  r = run(text, {"check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("--http-token-file '" + token +
                       "': any user may read this secret (mode 0644): chmod o-r it"),
            std::string::npos)
      << r.err;

  ::chmod(users.c_str(), 0666);
  r = run(text + "users = \"" + users + "\"\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("users file '" + users + "': any user may change it"), std::string::npos)
      << r.err;
}

TEST_F(ConfigTest, SenderLoginsAndPostmasterAreCheckedByCheckConfig) {
  std::string logins = dir_.sub("sender-logins");
  testing::write_file(logins, "# owners\nalice@example.org alice\n@example.net alice,bob\n");
  std::string text = "storage = \"disk:" + spool() + "\"\n[serve]\nsender-logins = \"" + logins +
                     "\"\npostmaster = \"admin@example.org\"\n";
  auto r = run(text, {"check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  testing::write_file(logins, "alice@example.org alice\nbob@example.org\n");
  r = run(text, {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--sender-logins '" + logins + "' line 2: expected SENDER LOGIN"),
            std::string::npos)
      << r.err;
  testing::write_file(logins, "");
  r = run("storage = \"disk:" + spool() + "\"\n[serve]\npostmaster = \"admin\"\n",
          {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("postmaster 'admin' is not an address"), std::string::npos) << r.err;
}

// Seen: storage under [serve] was ignored and ./spool used; max_size was ignored while
// max-size worked.
TEST_F(ConfigTest, AKeyInTheWrongSectionOrWithUnderscoresIsNamed) {
  auto r = run("[serve]\nstorage = \"disk:" + spool() + "\"\n", {"list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 2: unknown key 'storage' in [serve]; it belongs at the top of the "
                       "file, before any [section]"),
            std::string::npos)
      << r.err;
  r = run("smarthost = \"mail.example.com:25\"\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 1: unknown key 'smarthost' at the top; it belongs under [serve]"),
            std::string::npos)
      << r.err;
  r = run("[serve]\nmax_size = 1000\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 2: unknown key 'max_size' in [serve]; did you mean 'max-size'?"),
            std::string::npos)
      << r.err;
  r = run("[serve]\ncolour = \"red\"\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 2: unknown key 'colour' in [serve]\n"), std::string::npos) << r.err;
}

// Seen: a bad --dns-server passed check-config, then every MX delivery deferred with
// "451 4.3.0 stoi". check-config and serve now refuse it, naming it.
TEST_F(ConfigTest, ABadDnsServerIsRefusedByCheckConfig) {
  for (std::string bad : {"127.0.0.1:dns", "resolver.example", "127.0.0.1:70000", "::1"}) {
    auto r = run("[serve]\ndns-server = \"" + bad + "\"\n", {"check-config"});
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find("DNS server '" + bad + "' is not IPv4[:PORT]"), std::string::npos)
        << r.err;
  }
  auto good = run("[serve]\ndns-server = \"127.0.0.1:5353\"\n", {"check-config"});
  EXPECT_EQ(good.exit_code, 0) << good.err;
}

// check-config runs the checks serve runs before it listens: a setting serve refuses is
// refused by check-config, with the same words. (Seen: each of these passed
// check-config, then stopped serve.)
TEST_F(ConfigTest, CheckConfigRefusesWhatServeRefusesInTheSameWords) {
  testing::write_file(dir_.sub("token"), "short\n");
  struct Case {
    std::string config;  // after [serve]'s listen and smarthost
    std::string words;   // in both refusals
  };
  const std::string storage = "storage = \"disk:" + spool() + "\"\n";
  std::vector<Case> cases = {
      {"http = \"0.0.0.0:9025\"\n", "may only bind a loopback address"},
      {"http = \"127.0.0.1:9025\"\nhttp-token-file = \"" + dir_.sub("none") + "\"\n",
       "cannot read a token from it"},
      {"http = \"127.0.0.1:9025\"\nhttp-token-file = \"" + dir_.sub("token") + "\"\n",
       "the token must have at least 16 characters"},
      {"http = \"127.0.0.1:99999\"\n", "99999"},
      {"user = \"no-such-user-here\"\n", "--user no-such-user-here: no such user"},
      {"user = \"root\"\ngroup = \"no-such-group-here\"\n",
       "--group no-such-group-here: no such group"},
      {"tls-cert = \"" + dir_.sub("none.pem") + "\"\ntls-key = \"" + dir_.sub("none.key") + "\"\n",
       "cannot use TLS certificate file"},
      {"submission = \"127.0.0.1:0\"\n", "needs a TLS certificate and key, and users"},
      {"listen = \"localhost:0\"\n", "'localhost' is not an IP address"},
  };
  for (const Case& c : cases) {
    std::string config = storage + "[serve]\nsmarthost = \"127.0.0.1:25\"\n" + c.config;
    if (c.config.find("listen") == std::string::npos) config += "listen = \"127.0.0.1:0\"\n";
    auto checked = run(config, {"check-config"});
    auto served = run(config, {"serve"});
    EXPECT_EQ(served.exit_code, 1) << c.config << served.err;
    EXPECT_NE(served.err.find(c.words), std::string::npos) << c.config << served.err;
    EXPECT_EQ(checked.exit_code, 1) << c.config << checked.out;
    EXPECT_NE(checked.err.find(c.words), std::string::npos) << c.config << checked.err;
  }
  // The storage URL: check-config reads it as serve does, without connecting.
  for (std::string bad :
       std::vector<std::string>{"redis://127.0.0.1:99999/0", "s3://bucket?regio=x",
                                "disk:" + spool() + "?min-free=7q", "mysql://db"}) {
    auto checked =
        run("storage = \"" + bad + "\"\n[serve]\nsmarthost = \"127.0.0.1:25\"\n", {"check-config"});
    EXPECT_EQ(checked.exit_code, 1) << bad << checked.out;
    EXPECT_NE(checked.err.find("slimta-queue: error: "), std::string::npos) << bad << checked.err;
  }
}

TEST_F(ConfigTest, AValueOfTheWrongTypeIsNamed) {
  auto r = run("[serve]\nmax-size = \"big\"\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 2: 'max-size' takes a whole number"), std::string::npos) << r.err;
  r = run("[serve]\nsmarthost-auth-insecure = \"yes\"\n", {"check-config"});
  EXPECT_NE(r.err.find("line 2: 'smarthost-auth-insecure' takes true or false"), std::string::npos)
      << r.err;
  r = run("[serve]\nlisten = [\"127.0.0.1:25\", 587]\n", {"check-config"});
  EXPECT_NE(r.err.find("line 2: 'listen' takes a string or an array of them"), std::string::npos)
      << r.err;
  r = run("storage-timeout = \"soon\"\n", {"check-config"});
  EXPECT_NE(r.err.find("line 1: 'storage-timeout' takes a number"), std::string::npos) << r.err;
  r = run("[serve\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 1:"), std::string::npos) << r.err;
}

TEST_F(ConfigTest, CheckConfigPrintsTheEffectiveConfigurationWithSecretsMasked) {
  std::string text =
      "storage = \"redis://:s3cret@127.0.0.1:6379/0\"\n"
      "[serve]\nlisten = [\"127.0.0.1:2525\", \"[::1]:2525\"]\nsmarthost = \"10.0.0.1:25\"\n"
      "max-size = 1000\nsmarthost-auth-insecure = true\n"
      "[routes]\n\"example.org\" = \"10.0.0.5:25\"\n";
  auto r = run(text, {"check-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("s3cret"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("storage = \"redis://:***@127.0.0.1:6379/0\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[serve]\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nmax-size = 1000\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nworkers = 16\n"), std::string::npos) << r.out;  // a default
  EXPECT_NE(r.out.find("#   [::1]:2525 (smtp)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("#   example.org=10.0.0.5:25"), std::string::npos) << r.out;
  // What it prints is a config file that checks again.
  testing::write_file(dir_.sub("effective.toml"), r.out);
  auto again =
      run_command({SLIMTA_QUEUE_BIN, "--config", dir_.sub("effective.toml"), "check-config"});
  EXPECT_EQ(again.exit_code, 0) << again.err;

  // Serve's own checks run too, without listening: a bad network, a missing file.
  r = run("[serve]\nrelay-networks = \"10.1.2.3/8\"\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--relay-networks"), std::string::npos) << r.err;
  r = run("[serve]\nusers = \"" + dir_.sub("nonexistent") + "\"\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(dir_.sub("nonexistent")), std::string::npos) << r.err;
}

// Seen: the default name was the short one ("vm"); a smarthost with
// reject_non_fqdn_helo_hostname refused the mail, and its bounce the same way.
TEST_F(ConfigTest, TheDefaultHostNameIsTheFullyQualifiedOneAndAShortOneIsWarnedAbout) {
  auto fqdn = run_command({"hostname", "--fqdn"});
  ASSERT_EQ(fqdn.exit_code, 0) << fqdn.err;
  EXPECT_EQ(host_name(), fqdn.out.substr(0, fqdn.out.find('\n')));
  auto r = run("[serve]\n", {"check-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  bool qualified = host_name().find('.') != std::string::npos;
  EXPECT_EQ(r.err.find("'" + host_name() + "' is not fully qualified") != std::string::npos,
            !qualified)
      << r.err;
  r = run("[serve]\nhostname = \"mx.example.com\"\n", {"check-config"});
  EXPECT_EQ(r.err.find("not fully qualified"), std::string::npos) << r.err;
}

TEST_F(ConfigTest, DestinationsAreCheckedAndShownByCheckConfig) {
  auto r = run(R"toml(
[destinations."*"]
max-connections = 10
[destinations."Slow.Example"]
max-connections = 2
max-rate = "600/m"
max-messages-per-connection = 50
connect-timeout = 5
)toml",
               {"check-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("#   (default): max-connections 10, max-rate none"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("#   slow.example: max-connections 2, max-rate 10/s, "
                       "max-messages-per-connection 50, connect-timeout 5 s"),
            std::string::npos)
      << r.out;

  r = run("[destinations.\"x.example\"]\nmax-conections = 2\n", {"check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("line 2: unknown key 'max-conections' in destination 'x.example'; did "
                       "you mean 'max-connections'?"),
            std::string::npos)
      << r.err;
  r = run("[destinations.\"x.example\"]\nmax-rate = \"10/fortnight\"\n", {"check-config"});
  EXPECT_NE(r.err.find("line 2: destination 'x.example' max-rate: rate '10/fortnight'"),
            std::string::npos)
      << r.err;
  r = run("[destinations.\"x.example\"]\nmax-connections = 0\n", {"check-config"});
  EXPECT_NE(r.err.find("max-connections must be a whole number of at least 1"), std::string::npos)
      << r.err;
  r = run("[destinations]\n\"x.example\" = 3\n", {"check-config"});
  EXPECT_NE(r.err.find("destination 'x.example' must be a table"), std::string::npos) << r.err;
}

// Issue 34: the queue's lifetime, retry schedule and delay warning were fixed in
// QueuePolicy. They are options and keys, checked and shown by check-config.
TEST_F(ConfigTest, TheQueuePolicyIsConfiguredCheckedAndShown) {
  auto r =
      run("[serve]\nqueue-lifetime = \"2d\"\nbounce-lifetime = \"1d\"\nminimal-backoff = "
          "\"1m\"\nmaximal-backoff = \"2h\"\nbackoff-factor = 3\nmax-attempts = 40\n"
          "delay-warning = \"4h\"\n",
          {"check-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("#   lifetime 2d (bounces 1d), retries after 1m, each 3x as long up to "
                       "2h, at most 40 attempts, a delay warning after 4h"),
            std::string::npos)
      << r.out;
  r = run("", {"check-config"});
  EXPECT_NE(r.out.find("#   lifetime 5d (bounces 5d), retries after 5m, each 2x as long up to "
                       "1h, no limit of attempts, no delay warning"),
            std::string::npos)
      << r.out;
  for (const auto& [text, error] : std::vector<std::pair<std::string, std::string>>{
           {"queue-lifetime = \"5 days\"", "--queue-lifetime: duration '5 days'"},
           {"minimal-backoff = \"2h\"",
            "--maximal-backoff 1h is shorter than --minimal-backoff 2h"},
           {"delay-warning = \"6d\"", "--delay-warning 6d is not before --queue-lifetime 5d"},
           {"backoff-factor = 0.5", "backoff-factor"}}) {
    r = run("[serve]\n" + text + "\n", {"check-config"});
    EXPECT_NE(r.exit_code, 0) << text;
    EXPECT_NE(r.err.find(error), std::string::npos) << text << ": " << r.err;
  }
}

TEST_F(ConfigTest, SuspendTakesADurationAndNamesABadOne) {
  auto r = run("", {"--storage", "disk:" + spool(), "enqueue", "--from", "a@example.com", "--to",
                    "b@example.org"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run("", {"--storage", "disk:" + spool(), "suspend", "example.org", "--for", "soon"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("duration 'soon' is not a number of s, m, h or d"), std::string::npos)
      << r.err;
  r = run("[destinations.\"example.org\"]\nmax-connections = 4\n",
          {"--storage", "disk:" + spool(), "suspend", "Example.ORG", "--for", "90m", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["destination"], "example.org");
  EXPECT_NEAR(j["until_unix"].get<double>(), system_clock().now() + 5400, 30);
  r = run("[destinations.\"example.org\"]\nmax-connections = 4\n",
          {"--storage", "disk:" + spool(), "destinations"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One destination, suspended, its limit from the config file, one message waiting.
  EXPECT_NE(r.out.find("example.org                      suspended      0      4        1"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace slimta
