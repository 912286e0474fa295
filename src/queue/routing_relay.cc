#include "slimta/routing_relay.h"

#include "core/ascii.h"
#include "queue/recipient_groups.h"
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
  size_t at = recipient.rfind('@');
  if (at != std::string::npos) {
    std::string domain = to_lower(recipient.substr(at + 1));
    if (routes_.count(domain)) return domain;
  }
  return fallback_->destination(recipient);
}

std::vector<RecipientResult> RoutingRelay::attempt(const Envelope& envelope, uint32_t attempt) {
  return deliver_in_groups(
      envelope,
      [this](const std::string& r) -> std::variant<std::string, RecipientResult> {
        size_t at = r.rfind('@');
        if (at == std::string::npos) return kFallback;
        std::string domain = to_lower(r.substr(at + 1));
        return routes_.count(domain) ? domain : kFallback;
      },
      [&](const Envelope& part, const std::string& domain) {
        Relay& relay = domain.empty() ? *fallback_ : *routes_.at(domain);
        return relay.attempt(part, attempt);
      });
}

}  // namespace slimta
