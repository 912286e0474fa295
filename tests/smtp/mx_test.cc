// Delivery by DNS: MX lookups through the system resolver against a test DNS server
// (tests/support/dns_server.py), and MxRelay delivering to real SMTP sinks.
#include "slimta/mx_relay.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "smtp/dns.h"
#include "support/dns_server.h"
#include "support/sink.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using Kind = RecipientResult::Kind;
using Status = smtp::MxResult::Status;

nlohmann::json zone() {
  return {
      {"example.test", {{"MX", {{20, "mx2.example.test"}, {10, "mx1.example.test"}}}}},
      {"mx1.example.test", {{"A", {"127.0.0.1"}}}},
      {"mx2.example.test", {{"A", {"127.0.0.3"}}}},
      {"backup.test", {{"MX", {{10, "dead.backup.test"}, {20, "live.backup.test"}}}}},
      {"dead.backup.test", {{"A", {"127.0.0.2"}}}},  // nothing listens there
      {"live.backup.test", {{"A", {"127.0.0.1"}}}},
      {"implicit.test", {{"A", {"127.0.0.1"}}}},  // no MX: the domain itself
      {"nullmx.test", {{"MX", {{0, "."}}}}},
      {"dual.test", {{"MX", {{10, "both.dual.test"}}}}},
      {"both.dual.test", {{"A", {"127.0.0.1"}}, {"AAAA", {"::1", "2001:db8::25"}}}},
      // The preferred MX has only an IPv6 address, where nothing listens on the port.
      {"six.test", {{"MX", {{10, "v6only.six.test"}, {20, "v4.six.test"}}}}},
      {"v6only.six.test", {{"AAAA", {"::1"}}}},
      {"v4.six.test", {{"A", {"127.0.0.1"}}}},
  };
}

TEST(MxLookupTest, PreferenceOrderImplicitMxNullMxAndMissingDomains) {
  testing::DnsServer dns(zone());
  smtp::Resolver r{dns.address(), std::chrono::seconds(2)};
  auto mx = smtp::lookup_mx("example.test", r);
  ASSERT_EQ(mx.status, Status::ok) << mx.detail;
  EXPECT_EQ(mx.hosts, (std::vector<std::string>{"mx1.example.test", "mx2.example.test"}));
  EXPECT_EQ(mx.addresses, (std::vector<std::string>{"127.0.0.1", "127.0.0.3"}));
  auto implicit = smtp::lookup_mx("implicit.test", r);
  ASSERT_EQ(implicit.status, Status::ok) << implicit.detail;
  EXPECT_EQ(implicit.hosts, (std::vector<std::string>{"implicit.test"}));
  EXPECT_EQ(smtp::lookup_mx("nullmx.test", r).status, Status::null_mx);
  auto dual = smtp::lookup_mx("dual.test", r);
  ASSERT_EQ(dual.status, Status::ok) << dual.detail;
  EXPECT_EQ(dual.addresses, (std::vector<std::string>{"127.0.0.1", "::1", "2001:db8::25"}));
  EXPECT_EQ(dual.hosts, std::vector<std::string>(3, "both.dual.test"));
  auto six = smtp::lookup_mx("six.test", r);
  ASSERT_EQ(six.status, Status::ok) << six.detail;
  EXPECT_EQ(six.addresses, (std::vector<std::string>{"::1", "127.0.0.1"}));
  auto missing = smtp::lookup_mx("nosuch.test", r);
  EXPECT_EQ(missing.status, Status::no_domain);
  EXPECT_NE(missing.detail.find("nosuch.test"), std::string::npos);
  testing::ClosedPort nothing;  // (TCP; no DNS server has its number for UDP either)
  smtp::Resolver dead{nothing.address(), std::chrono::seconds(1)};
  EXPECT_EQ(smtp::lookup_mx("example.test", dead).status, Status::temporary);
}

TEST(MxRelayTest, DeliversPerDomainFallsBackToTheNextMxAndFailsBadDomains) {
  testing::DnsServer dns(zone());
  testing::SmtpSink sink;
  MxRelayOptions o;
  o.smtp.port = static_cast<uint16_t>(sink.port());  // every MX host, on the sink's port
  o.smtp.ehlo_name = "mx.test.example";
  o.smtp.connect_timeout = std::chrono::seconds(2);
  o.dns_server = dns.address();
  MxRelay relay(o);
  Envelope env;
  env.sender = "alice@example.com";
  env.recipients = {"a@example.test", "b@backup.test",   "c@nosuch.test", "d@EXAMPLE.test",
                    "e@nullmx.test",  "f@implicit.test", "nodomain",      "g@six.test"};
  env.headers.add("Subject", "by MX");
  env.body = "hi\r\n";
  auto r = relay.attempt(env, 1);
  ASSERT_EQ(r.size(), 8u);
  EXPECT_EQ(r[0].kind, Kind::delivered) << r[0].reply;
  EXPECT_EQ(r[1].kind, Kind::delivered) << r[1].reply;  // after dead.backup.test failed
  EXPECT_EQ(r[2].kind, Kind::permanent);
  EXPECT_EQ(r[2].reply.substr(0, 9), "550 5.1.2") << r[2].reply;
  EXPECT_EQ(r[3].kind, Kind::delivered) << r[3].reply;
  EXPECT_EQ(r[4].kind, Kind::permanent);
  EXPECT_EQ(r[4].reply.substr(0, 10), "556 5.1.10") << r[4].reply;
  EXPECT_EQ(r[5].kind, Kind::delivered) << r[5].reply;
  EXPECT_EQ(r[6].kind, Kind::permanent);
  EXPECT_EQ(r[7].kind, Kind::delivered) << r[7].reply;  // after [::1] could not be reached
  auto received = sink.received();
  ASSERT_EQ(received.size(), 4u);  // one transaction per domain
  std::set<std::vector<std::string>> rcpts;
  for (const auto& m : received) rcpts.insert(m["to"].get<std::vector<std::string>>());
  EXPECT_TRUE(rcpts.count({"a@example.test", "d@EXAMPLE.test"}));
  EXPECT_TRUE(rcpts.count({"b@backup.test"}));
  EXPECT_TRUE(rcpts.count({"f@implicit.test"}));
  EXPECT_TRUE(rcpts.count({"g@six.test"}));
}

// Descriptors this process has open.
size_t open_fds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Found by probing: each distinct MX address kept ~4 descriptors forever, closed
// connections sat in CLOSE_WAIT, and a 70-domain message exhausted a 256-fd daemon.
TEST(MxRelayTest, IdleConnectionsAreClosedSoDescriptorsStayFlat) {
  // One SMTP sink (aiosmtpd) on 127.0.0.1-127.0.0.100, which closes a connection left
  // idle for 2 s (as servers do): 100 MX addresses for 100 domains.
  testing::TempDir dir;
  testing::write_file(dir.sub("sinks.py"), R"py(
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Handler:
    async def handle_DATA(self, server, session, envelope):
        return '250 2.0.0 OK'
async def main(port, n):
    loop = asyncio.get_running_loop()
    for i in range(1, n + 1):  # port 0 for the first: the kernel picks; the rest share it
        server = await loop.create_server(lambda: SMTP(Handler(), timeout=2), host='127.0.0.%d' % i, port=port)
        port = server.sockets[0].getsockname()[1]
    print('ready %d' % port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
)py");
  testing::ChildProcess sinks({"/usr/bin/python3", dir.sub("sinks.py"), "0", "100"}, "ready ");
  int port = testing::port_after("ready ", sinks.output());
  nlohmann::json zone = nlohmann::json::object();
  for (int i = 1; i <= 100; ++i) {
    std::string d = "d" + std::to_string(i) + ".test";
    zone[d] = {{"MX", {{10, "mx." + d}}}};
    zone["mx." + d] = {{"A", {"127.0.0." + std::to_string(i)}}};
  }
  testing::DnsServer dns(zone);
  size_t baseline = open_fds();
  {
    MxRelayOptions o;
    o.dns_server = dns.address();
    o.smtp.port = static_cast<uint16_t>(port);
    o.smtp.idle_connection_timeout = std::chrono::seconds(1);
    MxRelay relay(o);
    size_t peak = 0;
    for (int round = 0; round < 10; ++round) {
      std::vector<std::thread> threads;
      std::atomic<int> delivered{0};
      for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 1 + t; i <= 100; i += 4) {
            Envelope env;
            env.sender = "a@example.com";
            env.recipients = {"b@d" + std::to_string(i) + ".test"};
            env.body = "hi\r\n";
            delivered += relay.attempt(env, 1)[0].kind == Kind::delivered;
          }
        });
      }
      for (auto& th : threads) th.join();
      ASSERT_EQ(delivered, 100) << "round " << round;
      peak = std::max(peak, open_fds());
    }
    // Bounded by the destinations in use (a connection holds its socket and its event
    // loop's epoll, eventfd and timerfd), not growing with the messages sent.
    EXPECT_LE(peak, baseline + 4 * (100 + 4));
    // Idle for the timeout: every connection is closed, and the relay keeps nothing.
    EXPECT_TRUE(
        testing::eventually([&] { return open_fds() <= baseline + 2; }, std::chrono::seconds(5)))
        << open_fds() << " open, " << baseline << " before";
  }
  // With a long idle timeout, connections the servers closed are closed here too
  // (no CLOSE_WAIT) soon after.
  MxRelayOptions o;
  o.dns_server = dns.address();
  o.smtp.port = static_cast<uint16_t>(port);
  o.smtp.idle_connection_timeout = std::chrono::minutes(5);
  MxRelay relay(o);
  for (int i = 1; i <= 20; ++i) {
    Envelope env;
    env.sender = "a@example.com";
    env.recipients = {"b@d" + std::to_string(i) + ".test"};
    env.body = "hi\r\n";
    ASSERT_EQ(relay.attempt(env, 1)[0].kind, Kind::delivered);
  }
  EXPECT_GE(open_fds(), baseline + 20);
  EXPECT_TRUE(
      testing::eventually([&] { return open_fds() <= baseline + 2; }, std::chrono::seconds(6)))
      << open_fds() << " open, " << baseline << " before";
}

}  // namespace
}  // namespace slimta
