#include "smtp/dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>

#include <algorithm>
#include <cstring>
#include <tuple>

#include "slimta/errors.h"
#include "slimta/host_port.h"

namespace slimta::smtp {

sockaddr_in dns_server_address(const std::string& server) {
  HostPort hp;
  try {
    hp = parse_host_port(server, "DNS server", 53);
  } catch (const InvalidArgument&) {
    throw InvalidArgument("DNS server '" + server + "' is not IPv4[:PORT]");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(hp.port);
  if (inet_pton(AF_INET, hp.host.c_str(), &addr.sin_addr) != 1)
    throw InvalidArgument("DNS server '" + server + "' is not IPv4[:PORT]");
  return addr;
}

namespace {

// A resolver state set up for one lookup; closed on destruction.
class State {
 public:
  explicit State(const Resolver& r) {
    std::memset(&st_, 0, sizeof(st_));
    if (res_ninit(&st_) != 0)
      throw QueueError("the DNS resolver could not be set up (res_ninit)", /*retryable=*/true);
    auto secs =
        std::max<long long>(1, std::chrono::duration_cast<std::chrono::seconds>(r.timeout).count());
    st_.retrans = static_cast<int>(secs);
    st_.retry = 2;
    if (!r.server.empty()) {
      st_.nsaddr_list[0] = dns_server_address(r.server);
      st_.nscount = 1;
    }
  }
  ~State() { res_nclose(&st_); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  // The answer section's records of `type` for `name`; sets `rcode`-like status.
  enum class Outcome { ok, no_domain, no_data, failed };
  Outcome query(const std::string& name, int type, std::vector<ns_rr>& out, ns_msg& msg,
                std::vector<unsigned char>& buffer) {
    buffer.assign(NS_PACKETSZ * 8, 0);
    int n = res_nquery(&st_, name.c_str(), ns_c_in, type, buffer.data(),
                       static_cast<int>(buffer.size()));
    if (n < 0) {
      switch (st_.res_h_errno) {
        case HOST_NOT_FOUND:
          return Outcome::no_domain;
        case NO_DATA:
          return Outcome::no_data;
        default:
          return Outcome::failed;
      }
    }
    if (ns_initparse(buffer.data(), n, &msg) != 0) return Outcome::failed;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); ++i) {
      ns_rr rr;
      if (ns_parserr(&msg, ns_s_an, i, &rr) == 0 && ns_rr_type(rr) == type) out.push_back(rr);
    }
    return out.empty() ? Outcome::no_data : Outcome::ok;
  }

 private:
  struct __res_state st_;
};

// The host's IPv4 addresses, then its IPv6 ones.
std::vector<std::string> addresses_of(State& state, const std::string& host) {
  std::vector<std::string> out;
  for (auto [type, family, size] : {std::tuple{ns_t_a, AF_INET, 4}, {ns_t_aaaa, AF_INET6, 16}}) {
    std::vector<ns_rr> rrs;
    ns_msg msg;
    std::vector<unsigned char> buffer;
    if (state.query(host, type, rrs, msg, buffer) != State::Outcome::ok) continue;
    for (const auto& rr : rrs) {
      if (ns_rr_rdlen(rr) != size) continue;
      char text[INET6_ADDRSTRLEN];
      if (inet_ntop(family, ns_rr_rdata(rr), text, sizeof(text))) out.emplace_back(text);
    }
  }
  return out;
}

}  // namespace

MxResult lookup_mx(const std::string& domain, const Resolver& resolver) {
  MxResult out;
  State state(resolver);
  std::vector<ns_rr> rrs;
  ns_msg msg;
  std::vector<unsigned char> buffer;
  auto outcome = state.query(domain, ns_t_mx, rrs, msg, buffer);
  if (outcome == State::Outcome::no_domain) {
    out.status = MxResult::Status::no_domain;
    out.detail = "domain " + domain + " does not exist";
    return out;
  }
  if (outcome == State::Outcome::failed) {
    out.detail = "DNS lookup of the MX of " + domain + " failed";
    return out;
  }
  std::vector<std::pair<int, std::string>> mx;
  for (const auto& rr : rrs) {
    if (ns_rr_rdlen(rr) < 3) continue;
    int pref = ns_get16(ns_rr_rdata(rr));
    char name[NS_MAXDNAME];
    if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr) + 2, name,
                           sizeof(name)) < 0)
      continue;
    mx.emplace_back(pref, name);
  }
  if (mx.size() == 1 && (mx[0].second.empty() || mx[0].second == ".")) {
    out.status = MxResult::Status::null_mx;
    out.detail = "domain " + domain + " accepts no mail (null MX)";
    return out;
  }
  std::stable_sort(mx.begin(), mx.end());
  if (mx.empty()) mx.emplace_back(0, domain);  // no MX: the implicit MX
  for (const auto& [pref, host] : mx) {
    for (auto& a : addresses_of(state, host)) {
      out.hosts.push_back(host);
      out.addresses.push_back(std::move(a));
    }
  }
  if (out.addresses.empty()) {
    out.detail = "no address found for the mail servers of " + domain;
    return out;
  }
  out.status = MxResult::Status::ok;
  return out;
}

}  // namespace slimta::smtp
