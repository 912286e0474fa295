// AUTH failures counted across sessions, as fail2ban or Dovecot's auth penalty would,
// inside the server: a client network (an IPv4 address, an IPv6 /64: one host's
// addresses) that failed `per_client` times within `window` is refused at once (454
// 4.7.0, no password checked) until the window has passed since its first counted
// failure; a user name guessed `per_user` times within the window, from anywhere, is
// refused likewise to every network that has not authenticated as that user before
// (within `remember`), so a distributed guesser is stopped and the user, from where it
// usually connects, is not locked out.
//
// Bounded: at most kMaxEntries keys are kept (expired ones are dropped first; past
// that, the oldest half goes). Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace slimta::smtp {

struct AuthLimits {
  size_t per_client = 10;
  size_t per_user = 30;
  std::chrono::seconds window{900};
  std::chrono::seconds remember{86400};  // how long a success exempts its network
};

class AuthGuard {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxEntries = 100000;

  explicit AuthGuard(AuthLimits limits = {}) : limits_(limits) {}

  // Why `ip` may not try to authenticate as `user` now ("" when it may): for the log.
  std::string refused(const std::string& ip, std::string_view user,
                      Clock::time_point now = Clock::now());
  void failed(const std::string& ip, std::string_view user, Clock::time_point now = Clock::now());
  void succeeded(const std::string& ip, std::string_view user,
                 Clock::time_point now = Clock::now());

  // Keys held now (clients, names and known networks): for the memory bound's test.
  size_t entries();

  // The network a client address counts in: "192.0.2.1", "2001:db8:1:2::/64".
  static std::string network_of(const std::string& ip);

 private:
  struct Count {
    size_t failures = 0;
    Clock::time_point since;  // the first failure counted
  };
  void count(std::unordered_map<std::string, Count>& map, const std::string& key,
             Clock::time_point now);
  bool over(const std::unordered_map<std::string, Count>& map, const std::string& key, size_t limit,
            Clock::time_point now) const;
  template <typename Map>
  void bound(Map& map, Clock::time_point now, std::chrono::seconds keep);

  AuthLimits limits_;
  std::mutex mu_;
  std::unordered_map<std::string, Count> clients_, users_;
  std::unordered_map<std::string, Clock::time_point> known_;  // network + user -> success
};

}  // namespace slimta::smtp
