// Who may send mail to whom: the relay decision at RCPT (Postfix's
// permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination) and the
// recipient check for the domains we accept mail for. Pure: no I/O, no state.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace slimta::smtp {

struct RelayRules {
  std::set<std::string> accept_domains;  // lower case
  // Lower-case "user@domain" and "@domain" (any user of domain); nullopt: no check.
  std::optional<std::set<std::string>> known_recipients;
  // Where mail to "postmaster" (no domain) goes; empty: it is refused.
  std::string postmaster;
  // Lower-case sender ("user@domain" or "@domain") -> the logins that may use it.
  std::optional<std::map<std::string, std::set<std::string>>> sender_logins;
};

// Rules from the server's options, in lower case. Throws InvalidArgument naming an
// accept domain that is no domain name, or a known recipient that is neither
// "user@domain" nor "@domain".
RelayRules make_relay_rules(const std::vector<std::string>& accept_domains,
                            const std::optional<std::set<std::string>>& known_recipients,
                            const std::string& postmaster = "");

// Whether the local part of `address` routes on to another host (user%remote@ours,
// remote!user@ours, user@remote@ours, "user@remote"@ours): sender-specified routing
// that a client which may not relay must not use through a domain we accept.
bool has_routing(const std::string& address);

// nullopt when RCPT TO:<address> is accepted; otherwise the reply. A client that may
// relay (a relay network, or authenticated) may send anywhere; anyone may send to an
// accept domain (without routing in the local part) and to "postmaster" (RFC 5321
// section 4.5.1) when rules.postmaster says where it goes, else it is refused: with no
// domain, it cannot be delivered, and its bounce would carry an outsider's headers to
// any sender they name. A recipient of an accept domain must be known when
// known_recipients is set, whoever sends.
std::optional<std::string> check_recipient(const RelayRules& rules, const std::string& address,
                                           bool may_relay);

// nullopt when an authenticated client (`login`) may use MAIL FROM:<sender>; else the
// reply (553 5.7.1). With sender_logins set, a login may use only the senders it owns
// (the address, or its @domain, lists the login), as Postfix's
// reject_authenticated_sender_login_mismatch; the null sender is anyone's. Without
// it, or for a client that did not authenticate, any sender.
std::optional<std::string> check_sender(const RelayRules& rules, const std::string& sender,
                                        const std::string& login);

// The recipient an accepted RCPT TO:<address> is stored as: rules.postmaster for
// "postmaster", else the address.
std::string stored_recipient(const RelayRules& rules, const std::string& address);

}  // namespace slimta::smtp
