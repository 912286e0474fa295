// End-to-end benchmark of `slimta-queue serve`: SMTP in from 16 concurrent clients,
// 10 KiB messages, each made durable before its 250, then relayed to a sink. Prints
// one JSON object.
//
// Runs, in one go on this machine:
//   sink       the same clients straight into the sink (the harness's ceiling);
//   postfix    Debian's Postfix as a relay to the sink (a private instance: its own
//              config, queue and data directories; it fsyncs each message before 250);
//   haraka     Haraka (npm) relaying through its outbound queue to the sink (a private
//              instance, a node process per core; its queue files are written without
//              fsync);
//              the haraka binary from $HARAKA, else /opt/haraka/node_modules/.bin/haraka
//              (npm install --prefix /opt/haraka Haraka);
//   disk       serve on a disk spool (fdatasync per message);
//   redis      serve on a redis-server with appendonly yes + appendfsync always;
//   kill       serve on disk SIGKILLed under load and restarted: how many messages got
//              their 250 but never reached the sink (must be 0), and how many twice;
//   rules      serve on disk as an MX: no relay network, the recipients' domain an
//              accept domain checked against a file of 10,000 known recipients;
//   tls        serve on disk, every client on STARTTLS (relaying as a relay network);
//   auth       serve on disk, every client on the submission port: STARTTLS, then AUTH
//              PLAIN against a yescrypt users file.
// "rules" is compared with "disk", "auth" with "tls": what relay control costs.
//   memory     serve on disk, 16 clients sending one 10 MiB message each at once: the
//              peak resident memory of serve (VmHWM), before and after.
// For each: accepted/s (every 250 received) and delivered/s (until its queue is empty
// again); the ratios compare accepted/s with Postfix's, measured in the same run.
//
// Needs the postfix package (smtp-sink and postfix) and root (Postfix's own user).
//
// usage: [SLIMTA_QUEUE_BIN=PATH] e2e_bench [--messages N] [--clients N] [--size BYTES] [--rounds N]
//                  [--only sink,postfix,haraka,disk,redis,kill,rules,tls,auth,memory]
// With several rounds, each round measures every part once and the medians of the
// per-round ratios are printed beside each round's figures.
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "slimta/disk_storage.h"
#include "slimta/redis_storage.h"
#include "slimta/user_database.h"
#include "support/certificate.h"
#include "support/redis_server.h"
#include "support/sink.h"
#include "support/smtp_client.h"
#include "support/test_util.h"

namespace {

using namespace slimta;
using Steady = slimta::bench::Clock;
using slimta::bench::seconds_since;

// One message on `c`, MAIL/RCPT/DATA pipelined; true on 250.
bool send_message(testing::SmtpClient& c, const std::string& data) {
  c.send("MAIL FROM:<bench@example.com>\r\nRCPT TO:<rcpt@example.org>\r\nDATA\r\n");
  if (c.code() != 250 || c.code() != 250 || c.code() != 354) return false;
  return c.exchange(data) == 250;
}

// How a client opens its session, after the greeting: true when ready for MAIL.
using Opening = std::function<bool(testing::SmtpClient&)>;
bool ehlo(testing::SmtpClient& c) { return c.exchange("EHLO bench.example\r\n") == 250; }
bool ehlo_starttls(testing::SmtpClient& c) { return ehlo(c) && c.starttls() && ehlo(c); }
bool submit(testing::SmtpClient& c) {
  return ehlo_starttls(c) && c.auth_plain("bench", "bench password") == 235;
}

// `messages` messages from `clients` connections; returns accepted per second.
double load(int port, size_t messages, int clients, const std::string& data,
            const Opening& opening = ehlo) {
  std::atomic<size_t> next{0}, ok{0};
  std::vector<std::thread> threads;
  auto start = Steady::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      testing::SmtpClient client(port);
      if (client.code() != 220 || !opening(client)) return;
      while (next.fetch_add(1) < messages)
        if (send_message(client, data)) ++ok;
      client.exchange("QUIT\r\n");
    });
  }
  for (auto& t : threads) t.join();
  double seconds = seconds_since(start);
  if (ok != messages) throw std::runtime_error("only " + std::to_string(ok) + " accepted");
  return messages / seconds;
}

// A message of about `size` bytes as DATA (ended by CRLF.CRLF), numbered `seq`.
std::string message_data(size_t size, size_t seq = 0) {
  std::string body;
  while (body.size() < size) body += "The quick brown fox jumps over the lazy dog. 0123456789\r\n";
  body.resize(size - 2);
  return "From: bench@example.com\r\nTo: rcpt@example.org\r\nSubject: bench\r\nX-Test-Seq: " +
         std::to_string(seq) + "\r\n\r\n" + body + "\r\n.\r\n";
}

std::unique_ptr<testing::ChildProcess> start_serve(int port, const std::string& url, int sink,
                                                   const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{
      bench::queue_bin(), "serve", "--listen",    "127.0.0.1:" + std::to_string(port),
      "--storage",        url,     "--smarthost", "127.0.0.1:" + std::to_string(sink),
      "--workers",        "16",    "--lease",     "2"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<testing::ChildProcess>(argv, "listening on");
}

// Kill under load: the clients send numbered messages to serve on a disk spool, which
// relays to a sink that records each one (aiosmtpd); serve is SIGKILLed once a quarter
// of them got their 250, then started again on the same spool. When the spool is
// empty, every message that got a 250 must have reached the sink.
nlohmann::json run_kill_under_load(size_t messages, int clients, size_t size) {
  testing::SmtpSink sink;
  testing::TempDir dir;
  std::string url = "disk:" + dir.sub("spool");
  int port = testing::free_port();
  auto serve = start_serve(port, url, sink.port());
  std::mutex mu;
  std::set<std::string> accepted;
  std::atomic<size_t> next{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      try {
        testing::SmtpClient client(port);
        if (client.code() != 220 || client.exchange("EHLO bench.example\r\n") != 250) return;
        for (size_t i; (i = next.fetch_add(1)) < messages;) {
          if (!send_message(client, message_data(size, i))) return;  // killed
          std::lock_guard lock(mu);
          accepted.insert(std::to_string(i));
        }
      } catch (const std::exception&) {  // the kill ended the connection
      }
    });
  }
  while (true) {
    {
      std::lock_guard lock(mu);
      if (accepted.size() >= messages / 4) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  serve->stop(SIGKILL);
  for (auto& t : threads) t.join();
  serve = start_serve(port, url, sink.port());
  DiskStorage spool(dir.sub("spool"));
  for (int i = 0; i < 6000 && !spool.load_all().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::map<std::string, int> seen;
  for (const auto& m : sink.received()) ++seen[m["seq"].get<std::string>()];
  int missing = 0, duplicates = 0;
  for (const auto& a : accepted) missing += seen.count(a) ? 0 : 1;
  for (const auto& [seq, n] : seen) duplicates += n - 1;
  serve->stop(SIGTERM);
  return {{"accepted_before_kill", accepted.size()},
          {"accepted_never_delivered", missing},
          {"delivered_twice", duplicates}};
}

// serve's flags and its clients' opening for one part of the benchmark.
struct Setup {
  std::vector<std::string> flags;  // besides --listen, --storage, --smarthost
  Opening opening = ehlo;
  bool submission = false;  // the clients go to a --submission port
  int http_port = 0;        // serve has --http there: /metrics is scraped every second
};

// 16 clients at once, one message of `size` bytes each, to serve on disk.
nlohmann::json run_memory(int sink_port, int clients, size_t size) {
  testing::TempDir dir;
  int port = testing::free_port();
  auto serve = start_serve(port, "disk:" + dir.sub("spool"), sink_port);
  size_t before = testing::peak_rss(serve->pid());
  std::string data = message_data(size);
  load(port, static_cast<size_t>(clients), clients, data);
  size_t after = testing::peak_rss(serve->pid());
  serve->stop(SIGTERM);
  double mib = 1 << 20;
  return {{"messages", clients},
          {"message_mib", size / mib},
          {"peak_rss_before_mib", before / mib},
          {"peak_rss_after_mib", after / mib},
          {"growth_vs_bytes_sent", (after - before) / (static_cast<double>(size) * clients)}};
}

// Runs serve on `url`, loads it, and waits until `empty()` says everything left.
nlohmann::json run_serve(const std::string& url, int sink_port, size_t messages, int clients,
                         const std::string& data, const std::function<bool()>& empty,
                         const Setup& setup = {}) {
  int port = testing::free_port();
  std::vector<std::string> flags = setup.flags;
  int client_port = port;
  if (setup.submission) {
    client_port = testing::free_port();
    flags.insert(flags.end(), {"--submission", "127.0.0.1:" + std::to_string(client_port)});
  }
  auto serve = start_serve(port, url, sink_port, flags);
  std::atomic<bool> done = false;
  std::atomic<int> scrapes = 0;
  std::thread scraper;
  if (setup.http_port) {
    scraper = std::thread([&] {
      httplib::Client client("127.0.0.1", setup.http_port);
      while (!done) {
        if (auto res = client.Get("/metrics"); res && res->status == 200) ++scrapes;
        for (int i = 0; i < 20 && !done; ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  auto start = Steady::now();
  double accepted = load(client_port, messages, clients, data, setup.opening);
  while (!empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  double delivered = messages / seconds_since(start);
  done = true;
  if (scraper.joinable()) scraper.join();
  serve->stop(SIGTERM);
  nlohmann::json out{{"accepted_per_s", accepted}, {"delivered_per_s", delivered}};
  if (setup.http_port) out["scrapes"] = scrapes.load();
  return out;
}

// Waits until no message file is left in a Postfix queue directory.
bool postfix_queue_empty(const std::string& spool) {
  for (const char* q : {"maildrop", "incoming", "active", "deferred", "hold"}) {
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(spool + "/" + q, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file()) return false;
    }
  }
  return true;
}

// A private Postfix relaying everything to 127.0.0.1:sink_port, its smtpd on `port`.
class Postfix {
 public:
  Postfix(int port, int sink_port) : etc_(dir_.sub("etc")), spool_(dir_.sub("spool")) {
    std::filesystem::permissions(dir_.path(), std::filesystem::perms(0755));
    std::filesystem::create_directories(etc_);
    std::filesystem::create_directories(dir_.sub("data"));
    std::filesystem::create_directories(spool_);
    if (::system(("chown postfix " + dir_.sub("data")).c_str()) != 0)
      throw std::runtime_error("chown postfix failed (run as root with postfix installed)");
    std::string master = testing::read_file("/etc/postfix/master.cf");
    size_t at = master.find("\nsmtp      inet");
    if (at == std::string::npos) throw std::runtime_error("unexpected /etc/postfix/master.cf");
    size_t eol = master.find('\n', at + 1);
    master.replace(at + 1, eol - at - 1,
                   "127.0.0.1:" + std::to_string(port) + " inet n - n - - smtpd");
    testing::write_file(etc_ + "/master.cf", master);
    testing::write_file(etc_ + "/main.cf",
                        "compatibility_level = 3.6\n"
                        "queue_directory = " +
                            spool_ +
                            "\n"
                            "data_directory = " +
                            dir_.sub("data") +
                            "\n"
                            "maillog_file_prefixes = " +
                            dir_.path() +
                            "\n"
                            "maillog_file = " +
                            dir_.sub("maillog") +
                            "\n"
                            "myhostname = bench.localdomain\nmydestination =\n"
                            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
                            "mynetworks = 127.0.0.0/8\n"
                            "smtpd_relay_restrictions = permit_mynetworks, reject\n"
                            "relayhost = [127.0.0.1]:" +
                            std::to_string(sink_port) +
                            "\n"
                            "default_process_limit = 100\nsmtp_tls_security_level = none\n");
    if (::system(("postfix -c " + etc_ + " start >/dev/null 2>&1").c_str()) != 0)
      throw std::runtime_error("postfix did not start; see " + dir_.sub("maillog"));
    for (int i = 0; i < 100; ++i) {  // until smtpd answers
      try {
        testing::SmtpClient probe(port);
        if (probe.code() == 220) break;
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~Postfix() {
    [[maybe_unused]] int rc = ::system(("postfix -c " + etc_ + " stop >/dev/null 2>&1").c_str());
  }
  bool empty() const { return postfix_queue_empty(spool_); }

 private:
  testing::TempDir dir_;
  std::string etc_, spool_;
};

nlohmann::json run_postfix(int sink_port, size_t messages, int clients, const std::string& data) {
  int port = testing::free_port();
  Postfix postfix(port, sink_port);
  auto start = Steady::now();
  double accepted = load(port, messages, clients, data);
  while (!postfix.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  double delivered = messages / seconds_since(start);
  return {{"accepted_per_s", accepted}, {"delivered_per_s", delivered}};
}

// A private Haraka relaying everything it accepts from 127.0.0.1 through its outbound
// queue to 127.0.0.1:sink_port (a get_mx plugin names the sink for every domain).
class Haraka {
 public:
  Haraka(int port, int sink_port) {
    const char* env = std::getenv("HARAKA");
    std::string bin = env ? env : "/opt/haraka/node_modules/.bin/haraka";
    if (!std::filesystem::exists(bin))
      throw std::runtime_error("no haraka at " + bin +
                               ": npm install --prefix /opt/haraka Haraka, or set HARAKA");
    std::string home = dir_.sub("haraka");
    // Its default configuration first (connection.ini's messages and the like).
    if (testing::run_command({bin, "-i", home}).exit_code != 0)
      throw std::runtime_error("haraka -i " + home + " failed");
    testing::write_file(home + "/config/plugins", "route_sink\nrelay\n");
    testing::write_file(home + "/config/relay.ini", "[relay]\nacl=true\n");
    testing::write_file(home + "/config/relay_acl_allow", "127.0.0.1/32\n");
    testing::write_file(home + "/config/smtp.ini",
                        "listen=127.0.0.1:" + std::to_string(port) + "\nnodes=cpus\n");
    testing::write_file(home + "/config/log.ini", "[main]\nlevel=warn\n");
    testing::write_file(home + "/config/me", "haraka.bench.example\n");
    // The sink for every domain; and no reverse DNS of 127.0.0.1 (this machine has no
    // DNS: each connection would wait for the lookup to time out).
    testing::write_file(home + "/plugins/route_sink.js",
                        "exports.hook_get_mx = (next, hmail, domain) => next(OK, "
                        "{exchange: '127.0.0.1', port: " +
                            std::to_string(sink_port) +
                            ", priority: 0})\n"
                            "exports.hook_lookup_rdns = (next, connection) => next(OK, "
                            "'localhost')\n");
    queue_ = home + "/queue";
    // Its log (it writes to stdout, where the benchmark's JSON goes) to a file.
    process_ = std::make_unique<testing::ChildProcess>(std::vector<std::string>{
        "/bin/sh", "-c", "exec \"$0\" -c \"$1\" >\"$1/haraka.log\" 2>&1", bin, home});
    if (!testing::eventually(
            [&] {
              try {
                testing::SmtpClient c(port);
                return c.code() == 220;
              } catch (const std::exception&) {
                return false;
              }
            },
            std::chrono::seconds(30)))
      throw std::runtime_error("haraka did not start listening");
  }
  bool empty() const {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(queue_, ec))
      if (e.is_regular_file() && !e.path().filename().string().starts_with(".")) return false;
    return true;
  }

 private:
  testing::TempDir dir_;
  std::string queue_;
  std::unique_ptr<testing::ChildProcess> process_;
};

nlohmann::json run_haraka(int sink_port, size_t messages, int clients, const std::string& data) {
  int port = testing::free_port();
  Haraka haraka(port, sink_port);
  auto start = Steady::now();
  double accepted = load(port, messages, clients, data);
  while (!haraka.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  double delivered = messages / seconds_since(start);
  return {{"accepted_per_s", accepted}, {"delivered_per_s", delivered}};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int run(int argc, char** argv) {
  size_t messages = 4000, size = 10240, rounds = 1;
  int clients = 16;
  std::set<std::string> only;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--messages")
      messages = std::stoul(v);
    else if (a == "--clients")
      clients = std::stoi(v);
    else if (a == "--size")
      size = std::stoul(v);
    else if (a == "--rounds")
      rounds = std::max<size_t>(1, std::stoul(v));
    else if (a == "--only") {
      for (size_t at = 0; at <= v.size();) {
        size_t comma = std::min(v.find(',', at), v.size());
        only.insert(v.substr(at, comma - at));
        at = comma + 1;
      }
    } else
      throw std::runtime_error("unknown option " + a);
  }
  auto wanted = [&](const char* part) { return only.empty() || only.count(part) != 0; };
  std::string data = message_data(size);
  int sink_port = testing::free_port();
  testing::ChildProcess sink(
      {"smtp-sink", "-u", "nobody", "127.0.0.1:" + std::to_string(sink_port), "1000"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  nlohmann::json out{{"messages", messages},
                     {"clients", clients},
                     {"message_bytes", size},
                     {"rounds", nlohmann::json::array()}};
  // Relay control: a certificate, a users file (yescrypt) and 10,000 known recipients.
  testing::TempDir keys;
  testing::Certificate cert = testing::make_certificate(keys, "bench");
  UserDatabase::store(keys.sub("users"), "bench", UserDatabase::hash("bench password"));
  std::string known;
  for (int i = 0; i < 10000; ++i) known += "user" + std::to_string(i) + "@example.org\n";
  testing::write_file(keys.sub("recipients"), known + "rcpt@example.org\n");
  std::vector<std::string> tls_flags{"--tls-cert", cert.cert, "--tls-key", cert.key};
  std::map<std::string, Setup> setups{{"rules",
                                       {{"--relay-networks", "", "--accept-domains", "example.org",
                                         "--accept-recipients", keys.sub("recipients")}}},
                                      {"tls", {tls_flags, ehlo_starttls}},
                                      {"auth", {tls_flags, submit, true}}};
  setups["auth"].flags.insert(setups["auth"].flags.end(), {"--users", keys.sub("users")});
  int http_port = testing::free_port();
  setups["http"] = {{"--http", "127.0.0.1:" + std::to_string(http_port)}, ehlo, false, http_port};

  testing::RedisServer redis(testing::RedisServer::Config{.password = "", .appendonly = true});
  RedisOptions ro = redis.options("bench:");
  std::string redis_url = "redis://127.0.0.1:" + std::to_string(redis.port()) + "/0?prefix=bench:";
  RedisStorage rs(ro);

  // Each round measures every part once, Postfix first, so that each ratio compares
  // figures taken a few seconds apart on this shared machine.
  std::map<std::string, std::vector<double>> ratios;
  for (size_t r = 0; r < rounds; ++r) {
    nlohmann::json round;
    if (wanted("sink")) round["sink_straight_per_s"] = load(sink_port, messages, clients, data);
    if (wanted("postfix")) round["postfix"] = run_postfix(sink_port, messages, clients, data);
    if (wanted("haraka")) round["haraka"] = run_haraka(sink_port, messages, clients, data);
    if (wanted("disk")) {
      testing::TempDir dir;
      std::string spool = dir.sub("spool");
      round["disk"] = run_serve("disk:" + spool, sink_port, messages, clients, data,
                                [&] { return DiskStorage(spool).load_all().empty(); });
    }
    if (wanted("redis")) {
      round["redis_aof_always"] = run_serve(redis_url, sink_port, messages, clients, data,
                                            [&] { return rs.load_all().empty(); });
    }
    for (const char* part : {"rules", "tls", "auth", "http"}) {
      if (!wanted(part)) continue;
      testing::TempDir dir;
      std::string spool = dir.sub("spool");
      round[part] = run_serve(
          "disk:" + spool, sink_port, messages, clients, data,
          [&] { return DiskStorage(spool).load_all().empty(); }, setups[part]);
    }
    // What relay control costs: the MX checks against plain disk, AUTH against TLS alone;
    // and what --http costs, scraped every second.
    for (auto [part, reference] :
         {std::pair{"rules", "disk"}, std::pair{"auth", "tls"}, std::pair{"http", "disk"}}) {
      if (!round.contains(part) || !round.contains(reference)) continue;
      double ratio = round[part]["accepted_per_s"].get<double>() /
                     round[reference]["accepted_per_s"].get<double>();
      round[part][std::string("accepted_vs_") + reference] = ratio;
      ratios[std::string(part) + "_accepted_vs_" + reference].push_back(ratio);
    }
    for (const char* peer : {"postfix", "haraka"}) {
      for (const char* k : {"disk", "redis_aof_always"}) {
        if (!round.contains(k) || !round.contains(peer)) continue;
        for (const char* what : {"accepted", "delivered"}) {
          std::string field = std::string(what) + "_per_s";
          double ratio = round[k][field].get<double>() / round[peer][field].get<double>();
          round[k][std::string(what) + "_vs_" + peer] = ratio;
          ratios[std::string(k) + "_" + what + "_vs_" + peer].push_back(ratio);
        }
      }
    }
    std::cerr << "e2e_bench: round " << r + 1 << ": " << round.dump() << "\n";
    out["rounds"].push_back(round);
  }
  for (const auto& [name, v] : ratios) out["median"][name] = median(v);
  if (wanted("kill"))
    out["disk_kill_under_load"] = run_kill_under_load(messages / 2, clients, size);
  if (wanted("memory")) out["memory"] = run_memory(sink_port, 16, 10 << 20);
  std::cout << out.dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Caught here so that the servers it started are stopped on the way out.
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "e2e_bench: " << e.what() << "\n";
    return 1;
  }
}
