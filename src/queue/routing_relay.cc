#include "slimta/routing_relay.h"

#include "queue/recipient_groups.h"
#include "slimta/ascii.h"
#include "slimta/errors.h"

namespace slimta {
namespace {

// The fallback's group name: no domain is empty.
const std::string kFallback;

}  // namespace

RoutingRelay::RoutingRelay(std::map<std::string, std::shared_ptr<Relay>> routes,
                           std::shared_ptr<Relay> fallback)
    : fallback_(std::move(fallback)) {
  if (!fallback_) throw InvalidArgument("routing relay: no fallback relay");
  for (auto& [domain, relay] : routes) {
    if (domain.empty() || domain.find('@') != std::string::npos)
      throw InvalidArgument("route domain '" + domain + "' is not a domain name");
    if (!relay) throw InvalidArgument("route for '" + domain + "' has no relay");
    routes_[to_lower(domain)] = std::move(relay);
  }
}

std::string RoutingRelay::destination(const std::string& recipient) const {
  if (std::string domain = domain_of(recipient); !domain.empty() && routes_.count(domain))
    return domain;
  return fallback_->destination(recipient);
}

std::vector<RecipientResult> RoutingRelay::attempt(const Envelope& envelope, uint32_t attempt) {
  return deliver_in_groups(
      envelope,
      [this](const std::string& r) -> std::variant<std::string, RecipientResult> {
        std::string domain = domain_of(r);
        return !domain.empty() && routes_.count(domain) ? domain : kFallback;
      },
      [&](const Envelope& part, const std::string& domain) {
        Relay& relay = domain.empty() ? *fallback_ : *routes_.at(domain);
        return relay.attempt(part, attempt);
      });
}

}  // namespace slimta
