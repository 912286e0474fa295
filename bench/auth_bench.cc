// A legitimate user's AUTH latency while a brute force runs: 20 attacking addresses
// (127.0.0.10-29), each with as many sessions as the server lets one client have (20),
// each guessing as fast as the server answers (STARTTLS, then AUTH PLAIN with a wrong
// password, over and over), against SmtpServer in this process with the production
// defaults. The user authenticates from 127.0.0.1 every 50 ms; its AUTH round trip is
// timed (it authenticated once before the attack, as a mail client that checks every
// few minutes has). Three configurations in one run: no attack (the reference), the attack
// against the server without the cross-session limits (what serve did before), and the
// attack against the limits.
//   auth_bench [--seconds N]   (prints JSON)
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "slimta/user_database.h"
#include "support/certificate.h"
#include "support/smtp_client.h"
#include "support/test_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using bench::Clock;
using bench::seconds_since;

nlohmann::json percentiles(std::vector<double> ms) {
  if (ms.empty()) return {{"samples", 0}};
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))];
  };
  return {{"samples", ms.size()}, {"p50_ms", at(0.5)}, {"p99_ms", at(0.99)}, {"max_ms", ms.back()}};
}

// Greeting, EHLO, STARTTLS, EHLO again: ready for AUTH.
bool ready_for_auth(testing::SmtpClient& c) {
  return c.code() == 220 && c.exchange("EHLO bench.example\r\n") == 250 && c.starttls() &&
         c.exchange("EHLO bench.example\r\n") == 250;
}

nlohmann::json run_one(const testing::TempDir& dir, const testing::Certificate& cert, bool attack,
                       bool limits, double seconds) {
  SmtpServerOptions o;
  o.tls_certificate_file = cert.cert;
  o.tls_key_file = cert.key;
  o.users = std::make_shared<UserDatabase>(UserDatabase::load(dir.sub("users")));
  o.relay_networks = IpNetworks();
  if (!limits) {
    o.auth_failures_per_client = 0;
    o.auth_failures_per_user = 0;
  }
  testing::TestSmtpServer server(o);
  int port = server.port();
  std::atomic<bool> stop{false};
  std::atomic<size_t> guesses{0}, refused{0};
  // The user has authenticated from its usual place before the attack (as a mail
  // client does every few minutes): its network is exempt from a lock on its name.
  {
    testing::SmtpClient c(port);
    if (!ready_for_auth(c) || c.auth_plain("alice", "wonderland") != 235)
      throw std::runtime_error("the user cannot authenticate");
  }
  std::vector<std::thread> attackers;
  if (attack) {
    for (int a = 0; a < 20; ++a) {
      for (int s = 0; s < 20; ++s) {
        attackers.emplace_back([&, a] {
          std::string source = "127.0.0." + std::to_string(10 + a);
          while (!stop) {
            try {
              testing::SmtpClient c(port, source);
              if (!ready_for_auth(c)) continue;
              for (int i = 0; !stop; ++i) {  // until the server ends the session
                int code = c.auth_plain("alice", "guess" + std::to_string(i));
                if (code != 535 && code != 454) break;
                ++guesses;
                if (code == 454) ++refused;
              }
            } catch (const std::exception&) {
            }
          }
        });
      }
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));  // the attack under way
  }
  std::vector<double> ms;
  size_t failed = 0;
  for (auto start = Clock::now(); seconds_since(start) < seconds;) {
    testing::SmtpClient c(port);
    if (!ready_for_auth(c)) {
      ++failed;
      continue;
    }
    auto t = Clock::now();
    int code = c.auth_plain("alice", "wonderland");
    if (code == 235) {
      ms.push_back(seconds_since(t) * 1000);
    } else {
      ++failed;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop = true;
  for (auto& t : attackers) t.join();
  nlohmann::json out = percentiles(ms);
  out["failed_logins"] = failed;
  out["guesses"] = guesses.load();
  out["guesses_refused_unchecked"] = refused.load();
  return out;
}

int run(int argc, char** argv) {
  double seconds = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--seconds") {
      seconds = std::stod(v);
    } else {
      throw std::runtime_error("unknown option " + a);
    }
  }
  spdlog::set_level(spdlog::level::off);  // a line per session would be the bench's cost
  testing::TempDir dir;
  testing::Certificate cert = testing::make_certificate(dir, "server");
  UserDatabase::store(dir.sub("users"), "alice", UserDatabase::hash("wonderland"));
  nlohmann::json out;
  out["no_attack"] = run_one(dir, cert, false, true, seconds);
  out["attack_without_limits"] = run_one(dir, cert, true, false, seconds);
  out["attack_with_limits"] = run_one(dir, cert, true, true, seconds);
  if (out["attack_with_limits"].contains("p99_ms") && out["no_attack"].contains("p99_ms"))
    out["p99_with_limits_vs_no_attack"] = out["attack_with_limits"]["p99_ms"].get<double>() /
                                          out["no_attack"]["p99_ms"].get<double>();
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace slimta

int main(int argc, char** argv) {
  try {
    return slimta::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "auth_bench: " << e.what() << "\n";
    return 1;
  }
}
