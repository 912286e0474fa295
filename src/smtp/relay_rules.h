// Who may send mail to whom: the relay decision at RCPT (Postfix's
// permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination) and the
// recipient check for the domains we accept mail for. Pure: no I/O, no state.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace slimta::smtp {

struct RelayRules {
  std::set<std::string> accept_domains;  // lower case
  // Lower-case "user@domain" and "@domain" (any user of domain); nullopt: no check.
  std::optional<std::set<std::string>> known_recipients;
};

// Rules from the server's options, in lower case. Throws InvalidArgument naming an
// accept domain that is no domain name, or a known recipient that is neither
// "user@domain" nor "@domain".
RelayRules make_relay_rules(const std::vector<std::string>& accept_domains,
                            const std::optional<std::set<std::string>>& known_recipients);

// Whether the local part of `address` routes on to another host (user%remote@ours,
// remote!user@ours, user@remote@ours, "user@remote"@ours): sender-specified routing
// that a client which may not relay must not use through a domain we accept.
bool has_routing(const std::string& address);

// nullopt when RCPT TO:<address> is accepted; otherwise the reply. A client that may
// relay (a relay network, or authenticated) may send anywhere; anyone may send to an
// accept domain (without routing in the local part) and to "postmaster" (RFC 5321
// section 4.5.1). A recipient of an accept domain must be known when
// known_recipients is set, whoever sends.
std::optional<std::string> check_recipient(const RelayRules& rules, const std::string& address,
                                           bool may_relay);

}  // namespace slimta::smtp
