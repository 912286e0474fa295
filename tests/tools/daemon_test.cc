// slimta-queue serve as a system daemon: the systemd notification protocol, journald's
// log format, and the switch from root to its user.
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/sink.h"
#include "support/smtp_client.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::ChildProcess;

// A NOTIFY_SOCKET as systemd makes one: datagrams, one notification each.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      throw std::runtime_error("cannot bind " + path);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~NotifySocket() { ::close(fd_); }
  // The next notification, "" after 10 s without one.
  std::string next() {
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, n) : "";
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

TEST(DaemonTest, TellsSystemdWhenReadyReloadingAndStopping) {
  testing::TempDir dir;
  NotifySocket notify(dir.sub("notify"));
  ChildProcess serve({SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage",
                      "memory:", "--smarthost", testing::closed_port().address(), "--user", "root"},
                     "listening on", {{"NOTIFY_SOCKET", notify.path()}});
  std::string ready = notify.next();
  EXPECT_NE(ready.find("READY=1"), std::string::npos) << ready;
  EXPECT_NE(ready.find("STATUS=listening on 127.0.0.1:"), std::string::npos) << ready;
  ASSERT_EQ(::kill(serve.pid(), SIGHUP), 0);
  EXPECT_NE(notify.next().find("RELOADING=1"), std::string::npos);
  EXPECT_NE(notify.next().find("READY=1"), std::string::npos);
  ASSERT_EQ(::kill(serve.pid(), SIGTERM), 0);
  EXPECT_NE(notify.next().find("STOPPING=1"), std::string::npos);
  int status = serve.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(DaemonTest, LogLinesSuitJournaldWhenItHoldsStderr) {
  // JOURNAL_STREAM names stderr's device and inode: priority prefixes, no time stamps.
  const std::string serve = std::string("exec ") + SLIMTA_QUEUE_BIN +
                            " serve --listen 127.0.0.1:0 --storage memory: --user root "
                            "--smarthost " +
                            testing::closed_port().address();
  ChildProcess journald(
      {"bash", "-c",
       "exec 2>&1; export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); " + serve},
      "listening on");
  EXPECT_NE(journald.output().find("\n<6>serve: clients in"), std::string::npos)
      << journald.output();
  EXPECT_EQ(journald.output().find("[20"), std::string::npos) << journald.output();
  // Another stream's JOURNAL_STREAM (inherited, say): time stamps as usual.
  ChildProcess other({"bash", "-c", "exec 2>&1; export JOURNAL_STREAM=1:1; " + serve},
                     "listening on");
  EXPECT_EQ(other.output().find("<6>"), std::string::npos) << other.output();
  EXPECT_NE(other.output().find("[20"), std::string::npos) << other.output();
}

TEST(DaemonTest, JsonLogLinesCarryTheEventsFields) {
  testing::TempDir dir;
  testing::SmtpSink sink;
  ChildProcess serve({"bash", "-c",
                      std::string("exec 2>") + dir.sub("log") + "; exec " + SLIMTA_QUEUE_BIN +
                          " --log-format json serve --listen 127.0.0.1:0 --storage memory: "
                          "--user root --smarthost 127.0.0.1:" +
                          std::to_string(sink.port())},
                     "listening on");
  ASSERT_EQ(testing::send_message(testing::listening_ports(serve.output())[0]), 250);
  ASSERT_TRUE(testing::eventually([&] { return sink.received().size() == 1; }));
  ASSERT_TRUE(testing::eventually([&] {
    return testing::read_file(dir.sub("log")).find("\"event\":\"removed\"") != std::string::npos;
  }));
  serve.stop(SIGTERM);
  std::istringstream log(testing::read_file(dir.sub("log")));
  std::map<std::string, nlohmann::json> events;
  for (std::string line; std::getline(log, line);) {
    if (line.starts_with("slimta-queue serve: ")) continue;  // warnings before logging
    nlohmann::json j = nlohmann::json::parse(line);          // every log line is JSON
    EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
    if (j.contains("event")) events[j["event"]] = j;
  }
  ASSERT_TRUE(events.count("delivered")) << testing::read_file(dir.sub("log"));
  const nlohmann::json& d = events["delivered"];
  EXPECT_EQ(d["component"], "queue");
  EXPECT_EQ(d["id"].get<std::string>().size(), 32u);
  EXPECT_EQ(d["rcpt"], "b@example.org");
  EXPECT_EQ(d["attempt"], 1);
  EXPECT_TRUE(d["delay"].is_number());
  EXPECT_EQ(d["reply"].get<std::string>().substr(0, 3), "250") << d;
  // Where it went and how the delay was spent (issue 34, finding 9).
  EXPECT_EQ(d["relay"], "127.0.0.1[127.0.0.1]:" + std::to_string(sink.port())) << d;
  EXPECT_TRUE(d["delays"]["queued"].is_number() && d["delays"]["connect"].is_number() &&
              d["delays"]["transmit"].is_number())
      << d;
  EXPECT_FALSE(d.contains("tls")) << d;  // the sink has no STARTTLS
  EXPECT_EQ(events["enqueued"]["from"], "a@example.com");
  EXPECT_EQ(events["enqueued"]["rcpts"], 1);
  auto bad = testing::run_command({SLIMTA_QUEUE_BIN, "--log-format", "xml", "list"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--log-format"), std::string::npos) << bad.err;
}

// Every file under `spool` (more than the directories alone) belongs to `uid`.
void expect_owned_by(const std::string& spool, uid_t uid) {
  size_t files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(spool)) {
    struct stat st {};
    ASSERT_EQ(::lstat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, uid) << entry.path();
    ++files;
  }
  EXPECT_GT(files, 2u);
}

// Issue 34: a Postfix site expects /usr/sbin/sendmail (cron, PHP's mail(), mailx).
// As root it puts the message straight into the storage through the door; as any other
// user (cron's) over SMTP to serve's listener; -bs is an SMTP session on stdio.
TEST(DaemonTest, SendmailFromACronLikeCallerDeliversThroughServe) {
  ASSERT_EQ(::geteuid(), 0u) << "the test suite runs as root (sendmail runs as nobody)";
  testing::TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
  testing::SmtpSink sink;
  int port = testing::free_port();
  std::string config = dir.sub("slimta.toml");
  testing::write_file(config,
                      "storage = \"disk:" + dir.sub("spool") +
                          "\"\n[serve]\nlisten = " + "[\"127.0.0.1:" + std::to_string(port) +
                          "\"]\nsmarthost = " + "\"127.0.0.1:" + std::to_string(sink.port()) +
                          "\"\nuser = \"root\"\nhostname = \"mx.example.com\"\n");
  ASSERT_EQ(::chmod(config.c_str(), 0644), 0);
  auto serve = std::make_unique<ChildProcess>(
      std::vector<std::string>{SLIMTA_QUEUE_BIN, "--config", config, "serve"}, "listening on");
  const testing::Environment env{{"SLIMTA_CONFIG", config}};
  const std::vector<std::string> as_nobody = {"setpriv",        "--reuid=nobody", "--regid=nogroup",
                                              "--clear-groups", SLIMTA_QUEUE_BIN, "sendmail"};
  auto sendmail = [&](std::vector<std::string> argv, const std::string& input) {
    return testing::run_command(argv, input, env);
  };
  // Root: into the storage. nobody: the spool is root's, so over SMTP.
  auto r = sendmail({SLIMTA_QUEUE_BIN, "sendmail", "-t", "-i"},
                    "To: root-cron@example.org\nSubject: from root\n\nok\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out + r.err, "") << "quiet when all is well";
  std::vector<std::string> argv = as_nobody;
  argv.insert(argv.end(), {"-f", "cron@example.org", "nobody-cron@example.org"});
  r = sendmail(argv, "Subject: from nobody\n\nok\n.\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  argv = as_nobody;
  argv.push_back("-bs");
  r = sendmail(argv,
               "EHLO cron\r\nMAIL FROM:<cron@example.org>\r\nRCPT TO:<bs@example.org>\r\nDATA\r\n"
               "Subject: bs\r\n\r\nhi\r\n.\r\nQUIT\r\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\r\n221 "), std::string::npos) << r.out;
  ASSERT_TRUE(testing::eventually([&] { return sink.received().size() == 3; }))
      << sink.received().size();
  std::set<std::string> to;
  for (const auto& m : sink.received()) to.insert(m["to"][0].get<std::string>());
  EXPECT_EQ(to, (std::set<std::string>{"root-cron@example.org", "nobody-cron@example.org",
                                       "bs@example.org"}));
  // Mistakes and a stopped serve, in sendmail's exit codes.
  EXPECT_EQ(sendmail({SLIMTA_QUEUE_BIN, "sendmail", "-t"}, "Subject: none\n\n").exit_code, 64);
  EXPECT_EQ(sendmail({SLIMTA_QUEUE_BIN, "sendmail", "-y", "a@example.org"}, "").exit_code, 64);
  serve.reset();
  argv = as_nobody;
  argv.push_back("late@example.org");
  r = sendmail(argv, "Subject: late\n\nx\n");
  EXPECT_EQ(r.exit_code, 75) << r.err;  // EX_TEMPFAIL: cron's mail is tried again
}

// Issue 34, finding 9: no log level switch.
TEST(DaemonTest, TheLogLevelSwitchQuietsInfoLines) {
  for (const std::string& level : {std::string("info"), std::string("warning")}) {
    ChildProcess serve({"sh", "-c",
                        "exec \"$0\" --log-level " + level +
                            " --storage memory: serve --listen 127.0.0.1:0 --user root "
                            "--hostname mx.example.com 2>&1",
                        SLIMTA_QUEUE_BIN},
                       "listening on");
    bool info = serve.output().find("[info]") != std::string::npos;
    EXPECT_EQ(info, level == "info") << serve.output();
  }
  auto bad = testing::run_command({SLIMTA_QUEUE_BIN, "--log-level", "chatty", "list"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--log-level"), std::string::npos) << bad.err;
}

TEST(DaemonTest, StartedAsRootItBindsThenRunsAsItsUser) {
  testing::TempDir dir;
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  if (::geteuid() != 0) {  // only root switches users
    auto r = testing::run_command({SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0",
                                   "--storage", "memory:", "--user", "nobody"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("--user nobody: only root can switch users"), std::string::npos) << r.err;
    return;
  }
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
  std::string spool = dir.sub("spool");
  std::filesystem::create_directory(spool);
  ASSERT_EQ(::chown(spool.c_str(), nobody->pw_uid, nobody->pw_gid), 0);
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage", "disk:" + spool,
       "--smarthost", testing::closed_port().address(), "--user", "nobody"},
      "listening on");
  // Every uid (real, effective, saved, file system) is nobody's.
  std::ifstream status("/proc/" + std::to_string(serve.pid()) + "/status");
  std::string line, uids;
  while (std::getline(status, line))
    if (line.starts_with("Uid:")) uids = line;
  std::string n = std::to_string(nobody->pw_uid);
  EXPECT_EQ(uids, "Uid:\t" + n + "\t" + n + "\t" + n + "\t" + n) << uids;
  // What it stores is nobody's.
  ASSERT_EQ(testing::send_message(testing::listening_ports(serve.output())[0]), 250);
  expect_owned_by(spool, nobody->pw_uid);

  auto r = testing::run_command({SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage",
                                 "memory:", "--user", "no-such-user-here"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--user no-such-user-here: no such user"), std::string::npos) << r.err;
}

// Finding 12 of the attack round: after serve dropped root, a SIGHUP reload could not
// read a root-only users or key file, and said so only at the reload. Such a file is
// named at the start.
TEST(DaemonTest, AFileItsUserCannotReadForAReloadIsNamedAtTheStart) {
  testing::TempDir dir;
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  ASSERT_EQ(::geteuid(), 0u) << "the test suite runs as root (serve switches users)";
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
  std::string secret = dir.sub("recipients-root-only"), shared = dir.sub("recipients-shared");
  testing::write_file(secret, "a@example.org\n");
  testing::write_file(shared, "a@example.org\n");
  ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);
  ASSERT_EQ(::chown(shared.c_str(), 0, nobody->pw_gid), 0);
  ASSERT_EQ(::chmod(shared.c_str(), 0640), 0);
  for (const std::string& file : {secret, shared}) {
    // Its log (stderr) read up to a line logged after the check, on the same thread.
    ChildProcess serve({"sh", "-c",
                        std::string("exec \"$0\" serve --listen 127.0.0.1:0 --storage memory: "
                                    "--accept-domains example.org --accept-recipients \"$1\" "
                                    "--user nobody 2>&1"),
                        SLIMTA_QUEUE_BIN, file},
                       "anyone may send to");
    bool warned = serve.output().find("--accept-recipients '" + file +
                                      "': user nobody cannot read it (Permission denied), so a "
                                      "SIGHUP reload would fail") != std::string::npos;
    EXPECT_EQ(warned, file == secret) << serve.output();
  }
}

// Issue 34, finding 3: `passwd` run as root made the users file root:root 0600, which the
// unit's user cannot read, and check-config, run as root, said all was well. passwd now
// makes it the service group's (0640), and check-config reads every file serve reads as
// the user serve runs as.
TEST(DaemonTest, PasswdMakesAFileTheServiceCanReadAndCheckConfigReadsAsTheService) {
  testing::TempDir dir;
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  ASSERT_EQ(::geteuid(), 0u) << "the test suite runs as root (serve switches users)";
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
  std::string users = dir.sub("users");
  std::string config = dir.sub("slimta.toml");
  testing::write_file(config,
                      "storage = \"memory:\"\n[serve]\nuser = \"nobody\"\nlisten = "
                      "[\"127.0.0.1:2525\"]\nusers = \"" +
                          users + "\"\n");
  auto r = testing::run_command(
      {SLIMTA_QUEUE_BIN, "--config", config, "passwd", "alice", "--users", users}, "secret\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat(users.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, nobody->pw_gid);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  // A second user keeps the file's owner and mode.
  r = testing::run_command(
      {SLIMTA_QUEUE_BIN, "--config", config, "passwd", "bob", "--users", users}, "other\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(::stat(users.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, nobody->pw_gid);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  r = testing::run_command({SLIMTA_QUEUE_BIN, "--config", config, "check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;

  // The users file as root made it before, and a key in the usual root 0600.
  ASSERT_EQ(::chown(users.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(users.c_str(), 0600), 0);
  r = testing::run_command({SLIMTA_QUEUE_BIN, "--config", config, "check-config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--users '" + users +
                       "': serve runs as user nobody, which cannot read it (Permission denied)"),
            std::string::npos)
      << r.err;
  // check-config gave root back: it still prints nothing of the effective configuration
  // it did not reach, and a second run as root reads the file.
  ASSERT_EQ(::chmod(users.c_str(), 0644), 0);
  r = testing::run_command({SLIMTA_QUEUE_BIN, "--config", config, "check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// Issue 34, finding 8: serve started as root (the demo, on a host with the package and
// its slimta user) became that user, which could not reach ./spool under root's home,
// and failed with an error that did not say so. serve and check-config now name the
// spool, the user and the fix before anything starts.
TEST(DaemonTest, ASpoolTheServiceUserCannotUseIsNamedWithTheFix) {
  testing::TempDir dir;
  ASSERT_EQ(::geteuid(), 0u) << "the test suite runs as root (serve switches users)";
  ASSERT_EQ(::chmod(dir.path().c_str(), 0700), 0);  // as /root is
  std::string spool = dir.sub("spool");
  testing::TempDir etc;  // a config nobody may read, elsewhere
  ASSERT_EQ(::chmod(etc.path().c_str(), 0711), 0);
  std::string config = etc.sub("slimta.toml");
  testing::write_file(config, "[serve]\nuser = \"nobody\"\nlisten = [\"127.0.0.1:0\"]\n");
  ASSERT_EQ(::chmod(config.c_str(), 0644), 0);
  for (const char* command : {"serve", "check-config"}) {
    auto r = testing::run_command(
        {SLIMTA_QUEUE_BIN, "--config", config, "--storage", "disk:" + spool, command});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.err.find("spool '" + spool +
                         "': serve runs as user nobody, which cannot make it "
                         "in '" +
                         dir.path() + "' (Permission denied)"),
              std::string::npos)
        << command << ": " << r.err;
    EXPECT_NE(r.err.find("--user root"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(spool));
}

// Issue 34, finding 1: hold, release and retry run as root on the packaged spool (the
// service user's) rewrote meta/ID and nudge/ID as root 0600; serve, as that user, could
// then neither read nor attempt the message. Root's CLI acts as the spool's owner.
TEST(DaemonTest, TheCliAsRootActsAsTheSpoolsOwner) {
  testing::TempDir dir;
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  ASSERT_EQ(::geteuid(), 0u) << "the test suite runs as root (serve switches users)";
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
  std::string spool = dir.sub("spool");
  std::filesystem::create_directory(spool);
  ASSERT_EQ(::chown(spool.c_str(), nobody->pw_uid, nobody->pw_gid), 0);
  ASSERT_EQ(::chmod(spool.c_str(), 0750), 0);
  auto q = [&](std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {SLIMTA_QUEUE_BIN, "--storage", "disk:" + spool});
    return testing::run_command(args, input);
  };
  auto r =
      q({"enqueue", "--from", "a@example.com", "--to", "b@example.org"}, "Subject: x\r\n\r\nx\r\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string id = r.out.substr(0, r.out.size() - 1);
  id = id.substr(id.rfind('\n') + 1);  // the last line
  for (const char* action : {"hold", "release", "retry"}) {
    r = q({action, id});
    EXPECT_EQ(r.exit_code, 0) << action << ": " << r.err;
  }
  EXPECT_EQ(q({"suspend", "example.org"}).exit_code, 0);
  EXPECT_EQ(q({"resume", "example.org"}).exit_code, 0);
  expect_owned_by(spool, nobody->pw_uid);
  // And the service user reads it all: a serve as nobody delivers it.
  testing::SmtpSink sink;
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage", "disk:" + spool,
       "--smarthost", "127.0.0.1:" + std::to_string(sink.port()), "--user", "nobody"},
      "listening on");
  EXPECT_TRUE(testing::eventually([&] { return sink.received().size() == 1; }));
}

// Issue 34, finding 6: a recipient refused with 550 and bounced was shown as
// "delivered" by list, show and --json. Each recipient's outcome is stored and shown.
// And each recipient still pending with the reply of its own last attempt.
TEST(DaemonTest, ARecipientRefusedAndBouncedIsShownBouncedWithItsReply) {
  testing::TempDir dir;
  const std::string spool = dir.sub("spool");
  auto q = [&](std::vector<std::string> args) {
    args.insert(args.begin(), SLIMTA_QUEUE_BIN);
    args.insert(args.end(), {"--storage", "disk:" + spool});
    return testing::run_command(args, "Subject: three\r\n\r\nbody\r\n");
  };
  auto r = q({"enqueue", "--from", "a@example.com", "--to", "ok@example.org", "--to",
              "gone@example.org", "--to", "busy@example.org", "--to", "full@example.org"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  testing::SmtpSink sink(
      nlohmann::json{{"gone@example.org", {"550 5.1.1 <gone@example.org>: no such user"}},
                     {"busy@example.org", {"451 4.2.1 <busy@example.org>: mailbox busy"}},
                     {"full@example.org", {"452 4.2.2 <full@example.org>: mailbox full"}}});
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--storage", "disk:" + spool,
       "--smarthost", "127.0.0.1:" + std::to_string(sink.port()), "--user", "root"},
      "listening on");
  // The delivery to ok@ and the bounce for gone@ to a@example.com.
  ASSERT_TRUE(testing::eventually([&] { return sink.received().size() == 2; }));
  nlohmann::json message;
  ASSERT_TRUE(testing::eventually([&] {
    auto list = nlohmann::json::parse(q({"list", "--json"}).out);
    for (const auto& m : list)
      if (m["sender"] == "a@example.com" && m["attempts"] == 1) message = m;
    return !message.is_null();
  }));
  EXPECT_EQ(message["recipients"],
            (nlohmann::json{{{"address", "ok@example.org"}, {"state", "delivered"}},
                            {{"address", "gone@example.org"},
                             {"state", "bounced"},
                             {"reply", "550 5.1.1 <gone@example.org>: no such user"}},
                            {{"address", "busy@example.org"},
                             {"state", "pending"},
                             {"reply", "451 4.2.1 <busy@example.org>: mailbox busy"}},
                            {{"address", "full@example.org"},
                             {"state", "pending"},
                             {"reply", "452 4.2.2 <full@example.org>: mailbox full"}}}))
      << message;
  std::string id = message["id"];
  std::string shown = q({"show", id}).out;
  EXPECT_NE(shown.find("recipients:   2 pending, 1 delivered, 1 bounced of 4"), std::string::npos)
      << shown;
  EXPECT_NE(shown.find("gone@example.org (bounced: 550 5.1.1 <gone@example.org>: no such user)"),
            std::string::npos)
      << shown;
  EXPECT_NE(shown.find("ok@example.org (delivered)"), std::string::npos) << shown;
  EXPECT_NE(shown.find("full@example.org (pending: 452 4.2.2 <full@example.org>: mailbox full)"),
            std::string::npos)
      << shown;
  std::string listed = q({"list"}).out;
  EXPECT_NE(listed.find("(1 delivered, 1 bounced)"), std::string::npos) << listed;
  EXPECT_EQ(listed.find("already delivered"), std::string::npos) << listed;
}

}  // namespace
}  // namespace slimta
