// AuthGuard by itself, on an injected clock: the windows, IPv6 networks, the exemption
// of a network that authenticated before, and its bound on memory.
#include "smtp/auth_guard.h"

#include <gtest/gtest.h>

namespace slimta::smtp {
namespace {

using namespace std::chrono_literals;

TEST(AuthGuardTest, AClientNetworkIsLockedForTheWindowThenFree) {
  AuthGuard guard(AuthLimits{3, 0, 600s, 86400s});
  auto t = AuthGuard::Clock::now();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(guard.refused("2001:db8:1:2::10", "alice", t), "") << i;
    guard.failed("2001:db8:1:2::10", "alice", t + std::chrono::seconds(i));
  }
  // Another address of the same /64 is the same client; another /64 is not.
  EXPECT_NE(guard.refused("2001:db8:1:2:ffff::1", "bob", t + 10s), "");
  EXPECT_EQ(guard.refused("2001:db8:1:3::10", "alice", t + 10s), "");
  EXPECT_EQ(guard.refused("::ffff:192.0.2.1", "alice", t + 10s), "");
  EXPECT_EQ(AuthGuard::network_of("::ffff:192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(AuthGuard::network_of("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
  EXPECT_NE(guard.refused("2001:db8:1:2::10", "alice", t + 599s), "");
  EXPECT_EQ(guard.refused("2001:db8:1:2::10", "alice", t + 600s), "");  // the window passed
}

TEST(AuthGuardTest, ANameGuessedFromEverywhereIsLockedExceptWhereItsUserWasBefore) {
  AuthGuard guard(AuthLimits{0, 5, 7200s, 3600s});
  auto t = AuthGuard::Clock::now();
  guard.succeeded("198.51.100.7", "Alice", t);
  for (int i = 0; i < 5; ++i) guard.failed("203.0.113." + std::to_string(i), "alice", t);
  EXPECT_NE(guard.refused("203.0.113.99", "ALICE", t), "");
  EXPECT_EQ(guard.refused("203.0.113.99", "bob", t), "");
  EXPECT_EQ(guard.refused("198.51.100.7", "alice", t), "");          // alice's usual place
  EXPECT_NE(guard.refused("198.51.100.7", "alice", t + 3600s), "");  // forgotten by then
}

TEST(AuthGuardTest, MemoryIsBoundedWhateverTheAddresses) {
  AuthGuard guard(AuthLimits{2, 2, 600s, 3600s});
  auto t = AuthGuard::Clock::now();
  for (size_t i = 0; i < AuthGuard::kMaxEntries * 2; ++i) {
    std::string ip = "10." + std::to_string(i >> 16 & 255) + "." + std::to_string(i >> 8 & 255) +
                     "." + std::to_string(i & 255);
    guard.failed(ip, "u" + std::to_string(i), t + std::chrono::milliseconds(i));
  }
  EXPECT_LE(guard.entries(), 2 * AuthGuard::kMaxEntries);  // clients and names
  // The newest are kept: the last client counts its failures.
  guard.failed("10.3.13.63", "x", t + 200s);
  EXPECT_NE(guard.refused("10.3.13.63", "y", t + 200s), "");
}

}  // namespace
}  // namespace slimta::smtp
