#include "smtp/relay_rules.h"

#include <string_view>

#include "slimta/ascii.h"
#include "slimta/errors.h"

namespace slimta::smtp {

RelayRules make_relay_rules(const std::vector<std::string>& accept_domains,
                            const std::optional<std::set<std::string>>& known_recipients) {
  auto bad_domain = [](std::string_view d) {
    return d.empty() || d.find_first_of("@ \t\r\n<>") != std::string_view::npos;
  };
  RelayRules rules;
  for (const std::string& d : accept_domains) {
    if (bad_domain(d)) throw InvalidArgument("accept domain '" + d + "' is not a domain name");
    rules.accept_domains.insert(to_lower(d));
  }
  if (known_recipients) {
    rules.known_recipients.emplace();
    for (const std::string& r : *known_recipients) {
      size_t at = r.rfind('@');
      if (at == std::string::npos || bad_domain(std::string_view(r).substr(at + 1)))
        throw InvalidArgument("known recipient '" + r + "' is neither user@domain nor @domain");
      rules.known_recipients->insert(to_lower(r));
    }
  }
  return rules;
}

bool has_routing(const std::string& address) {
  size_t at = address.rfind('@');
  std::string local = at == std::string::npos ? address : address.substr(0, at);
  return local.find_first_of("@%!") != std::string::npos;
}

std::optional<std::string> check_recipient(const RelayRules& rules, const std::string& address,
                                           bool may_relay) {
  std::string domain = domain_of(address);
  if (domain.empty()) return std::nullopt;  // "postmaster": ours (the parser allows no other)
  bool ours = rules.accept_domains.count(domain) > 0;
  if (!may_relay && (!ours || has_routing(address)))
    return "554 5.7.1 <" + address + ">: Relay access denied";
  if (ours && rules.known_recipients && !rules.known_recipients->count(to_lower(address)) &&
      !rules.known_recipients->count("@" + domain))
    return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown";
  return std::nullopt;
}

}  // namespace slimta::smtp
