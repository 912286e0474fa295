#include "slimta/mx_relay.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>

#include "core/ascii.h"
#include "queue/recipient_groups.h"
#include "smtp/client.h"
#include "smtp/dns.h"

namespace slimta {

struct MxRelay::Impl {
  explicit Impl(MxRelayOptions o) : options(std::move(o)) {
    if (options.smtp.starttls != SmtpRelayOptions::Tls::never) {
      options.smtp.starttls = SmtpRelayOptions::Tls::opportunistic;
    }
    options.smtp.username.clear();
    resolver.server = options.dns_server;
    resolver.timeout = options.dns_timeout;
  }

  MxRelayOptions options;
  smtp::Resolver resolver;
  std::mutex mu;
  std::map<std::string, std::unique_ptr<smtp::Client>> clients;  // by address: reuse

  smtp::Client& client_for(const std::string& address) {
    std::lock_guard lock(mu);
    auto& c = clients[address];
    if (!c) {
      SmtpRelayOptions o = options.smtp;
      o.host = address;
      c = std::make_unique<smtp::Client>(o);
    }
    return *c;
  }

  // Delivers `env` (recipients of one domain) to that domain's MX hosts.
  std::vector<RecipientResult> deliver_domain(const Envelope& env, const std::string& domain) {
    smtp::MxResult mx = smtp::lookup_mx(domain, resolver);
    size_t n = env.recipients.size();
    switch (mx.status) {
      case smtp::MxResult::Status::no_domain:
        return std::vector(n, RecipientResult::permanent("550 5.1.2 " + mx.detail));
      case smtp::MxResult::Status::null_mx:
        return std::vector(n, RecipientResult::permanent("556 5.1.10 " + mx.detail));
      case smtp::MxResult::Status::temporary:
        return std::vector(n, RecipientResult::transient("451 4.4.3 " + mx.detail));
      case smtp::MxResult::Status::ok:
        break;
    }
    smtp::Client::Outcome outcome;
    for (size_t i = 0; i < mx.addresses.size(); ++i) {
      outcome = client_for(mx.addresses[i]).deliver(env);
      if (outcome.reached) break;  // tried: its answers stand (never a second MX)
    }
    return outcome.results;
  }
};

MxRelay::MxRelay(MxRelayOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
MxRelay::~MxRelay() = default;

std::vector<RecipientResult> MxRelay::attempt(const Envelope& envelope, uint32_t) {
  return deliver_in_groups(
      envelope,
      [](const std::string& r) -> std::variant<std::string, RecipientResult> {
        size_t at = r.rfind('@');
        if (at == std::string::npos || at + 1 == r.size())
          return RecipientResult::permanent("553 5.1.3 <" + r + ">: no domain to deliver to");
        return to_lower(r.substr(at + 1));
      },
      [this](const Envelope& part, const std::string& domain) {
        return impl_->deliver_domain(part, domain);
      });
}

}  // namespace slimta
