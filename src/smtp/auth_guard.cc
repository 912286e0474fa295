#include "smtp/auth_guard.h"

#include <arpa/inet.h>

#include <algorithm>
#include <vector>

#include "slimta/ascii.h"

namespace slimta::smtp {

std::string AuthGuard::network_of(const std::string& ip) {
  unsigned char a[16];
  if (inet_pton(AF_INET6, ip.c_str(), a) != 1) return ip;
  bool mapped = std::all_of(a, a + 10, [](unsigned char b) { return b == 0; }) && a[10] == 0xff &&
                a[11] == 0xff;
  if (mapped)
    return std::to_string(a[12]) + "." + std::to_string(a[13]) + "." + std::to_string(a[14]) + "." +
           std::to_string(a[15]);
  std::fill(a + 8, a + 16, 0);
  char text[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, a, text, sizeof text);
  return std::string(text) + "/64";
}

bool AuthGuard::over(const std::unordered_map<std::string, Count>& map, const std::string& key,
                     size_t limit, Clock::time_point now) const {
  auto it = map.find(key);
  return limit && it != map.end() && now - it->second.since < limits_.window &&
         it->second.failures >= limit;
}

std::string AuthGuard::refused(const std::string& ip, std::string_view user,
                               Clock::time_point now) {
  std::string net = network_of(ip), name = to_lower(user);
  std::lock_guard lock(mu_);
  if (over(clients_, net, limits_.per_client, now)) {
    return std::to_string(clients_[net].failures) + " failures from " + net + " within " +
           std::to_string(limits_.window.count()) + " s";
  }
  if (over(users_, name, limits_.per_user, now)) {
    auto known = known_.find(net + " " + name);
    if (known == known_.end() || now - known->second >= limits_.remember)
      return "the name tried " + std::to_string(users_[name].failures) +
             " times from anywhere within " + std::to_string(limits_.window.count()) + " s";
  }
  return "";
}

void AuthGuard::count(std::unordered_map<std::string, Count>& map, const std::string& key,
                      Clock::time_point now) {
  Count& c = map[key];
  if (c.failures == 0 || now - c.since >= limits_.window) c = Count{0, now};
  ++c.failures;
}

void AuthGuard::failed(const std::string& ip, std::string_view user, Clock::time_point now) {
  std::lock_guard lock(mu_);
  bound(clients_, now, limits_.window);
  bound(users_, now, limits_.window);
  count(clients_, network_of(ip), now);
  if (!user.empty()) count(users_, to_lower(user), now);
}

void AuthGuard::succeeded(const std::string& ip, std::string_view user, Clock::time_point now) {
  std::lock_guard lock(mu_);
  bound(known_, now, limits_.remember);
  known_[network_of(ip) + " " + to_lower(user)] = now;
}

size_t AuthGuard::entries() {
  std::lock_guard lock(mu_);
  return clients_.size() + users_.size() + known_.size();
}

template <typename Map>
void AuthGuard::bound(Map& map, Clock::time_point now, std::chrono::seconds keep) {
  if (map.size() < kMaxEntries) return;
  auto since = [](const auto& entry) {
    if constexpr (std::is_same_v<std::decay_t<decltype(entry.second)>, Count>)
      return entry.second.since;
    else
      return entry.second;
  };
  std::erase_if(map, [&](const auto& e) { return now - since(e) >= keep; });
  if (map.size() < kMaxEntries) return;
  std::vector<Clock::time_point> times;
  times.reserve(map.size());
  for (const auto& e : map) times.push_back(since(e));
  auto middle = times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2);
  std::nth_element(times.begin(), middle, times.end());
  Clock::time_point cut = *middle;
  std::erase_if(map, [&](const auto& e) { return since(e) < cut; });
}

}  // namespace slimta::smtp
