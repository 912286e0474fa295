#include "slimta/mx_relay.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>

#include "queue/recipient_groups.h"
#include "slimta/ascii.h"
#include "smtp/client.h"
#include "smtp/dns.h"

namespace slimta {

struct MxRelay::Impl {
  explicit Impl(MxRelayOptions o) : options(std::move(o)) {
    if (options.smtp.starttls != SmtpRelayOptions::Tls::never) {
      options.smtp.starttls = SmtpRelayOptions::Tls::opportunistic;
    }
    options.smtp.username.clear();
    for (auto& [domain, o] : options.domains) {
      o.starttls = options.smtp.starttls;
      o.username.clear();
      o.port = options.smtp.port;
    }
    // A bad server is said now (serve's check-config), not at every delivery.
    if (!options.dns_server.empty()) smtp::dns_server_address(options.dns_server);
    resolver.server = options.dns_server;
    resolver.timeout = options.dns_timeout;
  }

  MxRelayOptions options;
  smtp::Resolver resolver;
  std::mutex mu;
  // By address, for reuse; a client with nothing idle and no use for the idle timeout
  // goes (with thousands of destinations, each would otherwise hold descriptors).
  std::map<std::string, std::shared_ptr<smtp::Client>> clients;
  std::unique_ptr<smtp::Every> sweeper;

  // A domain with settings of its own has clients of its own.
  std::shared_ptr<smtp::Client> client_for(const std::string& address, const std::string& domain) {
    auto own = options.domains.find(domain);
    bool special = own != options.domains.end();
    std::lock_guard lock(mu);
    auto& c = clients[special ? domain + " " + address : address];
    if (!c) {
      SmtpRelayOptions o = special ? own->second : options.smtp;
      o.host = address;
      c = std::make_shared<smtp::Client>(o);
    }
    return c;
  }

  void sweep() {
    std::vector<std::pair<std::string, std::shared_ptr<smtp::Client>>> all;
    {
      std::lock_guard lock(mu);
      all.assign(clients.begin(), clients.end());
    }
    for (auto& [address, client] : all) {
      if (client->sweep()) continue;
      std::lock_guard lock(mu);
      auto it = clients.find(address);
      if (it != clients.end() && it->second == client) clients.erase(it);
    }
  }

  // Delivers `env` (recipients of one domain) to that domain's MX hosts.
  std::vector<RecipientResult> deliver_domain(const Envelope& env, const std::string& domain) {
    smtp::MxResult mx = smtp::lookup_mx(domain, resolver);
    size_t n = env.recipients.size();
    switch (mx.status) {
      case smtp::MxResult::Status::no_domain:
        return std::vector(n, RecipientResult::refused_here("550 5.1.2 " + mx.detail));
      case smtp::MxResult::Status::null_mx:
        return std::vector(n, RecipientResult::refused_here("556 5.1.10 " + mx.detail));
      case smtp::MxResult::Status::temporary:
        return std::vector(n, RecipientResult::transient("451 4.4.3 " + mx.detail));
      case smtp::MxResult::Status::ok:
        break;
    }
    smtp::Client::Outcome outcome;
    for (size_t i = 0; i < mx.addresses.size(); ++i) {
      outcome = client_for(mx.addresses[i], domain)->deliver(env);
      if (outcome.reached) break;  // tried: its answers stand (never a second MX)
    }
    return outcome.results;
  }
};

MxRelay::MxRelay(MxRelayOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->sweeper = std::make_unique<smtp::Every>(smtp::sweep_interval(impl_->options.smtp),
                                                 [impl = impl_.get()] { impl->sweep(); });
}
MxRelay::~MxRelay() = default;

std::string MxRelay::destination(const std::string& recipient) const {
  return domain_of(recipient);
}

std::vector<RecipientResult> MxRelay::attempt(const Envelope& envelope, uint32_t) {
  return deliver_in_groups(
      envelope,
      [](const std::string& r) -> std::variant<std::string, RecipientResult> {
        std::string domain = domain_of(r);
        if (domain.empty())
          return RecipientResult::refused_here("553 5.1.3 <" + r + ">: no domain to deliver to");
        return domain;
      },
      [this](const Envelope& part, const std::string& domain) {
        return impl_->deliver_domain(part, domain);
      });
}

}  // namespace slimta
