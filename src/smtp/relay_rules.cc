#include "smtp/relay_rules.h"

#include <string_view>

#include "slimta/ascii.h"
#include "slimta/errors.h"

namespace slimta::smtp {

RelayRules make_relay_rules(const std::vector<std::string>& accept_domains,
                            const std::optional<std::set<std::string>>& known_recipients,
                            const std::string& postmaster) {
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
  if (!postmaster.empty()) {
    size_t at = postmaster.rfind('@');
    if (at == std::string::npos || at == 0 ||
        bad_domain(std::string_view(postmaster).substr(at + 1)) ||
        postmaster.find_first_of(" \t\r\n<>") != std::string::npos)
      throw InvalidArgument("postmaster '" + postmaster + "' is not an address (user@domain)");
    rules.postmaster = postmaster;
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
  if (domain.empty()) {  // "postmaster" (the parser allows no other address without one)
    if (rules.postmaster.empty())
      return "550 5.1.1 <" + address +
             ">: Recipient address rejected: no postmaster address is set here";
    return std::nullopt;
  }
  bool ours = rules.accept_domains.count(domain) > 0;
  if (!may_relay && (!ours || has_routing(address)))
    return "554 5.7.1 <" + address + ">: Relay access denied";
  if (ours && rules.known_recipients && !rules.known_recipients->count(to_lower(address)) &&
      !rules.known_recipients->count("@" + domain))
    return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown";
  return std::nullopt;
}

std::string stored_recipient(const RelayRules& rules, const std::string& address) {
  return domain_of(address).empty() ? rules.postmaster : address;
}

std::optional<std::string> check_sender(const RelayRules& rules, const std::string& sender,
                                        const std::string& login) {
  if (!rules.sender_logins || login.empty() || sender.empty()) return std::nullopt;
  auto owned_by = [&](const std::string& key) {
    auto it = rules.sender_logins->find(key);
    return it != rules.sender_logins->end() && it->second.count(to_lower(login)) > 0;
  };
  if (owned_by(to_lower(sender)) || owned_by("@" + domain_of(sender))) return std::nullopt;
  return "553 5.7.1 <" + sender + ">: Sender address rejected: not owned by user " + login;
}

}  // namespace slimta::smtp
