// MxRelay: a Relay that delivers by DNS (RFC 5321 section 5): for each recipient
// domain, the MX hosts in order of preference (no MX: the domain itself), each host's
// IPv4 addresses then its IPv6 ones, trying the next address when one cannot be reached. The
// recipients of one domain go in one transaction; a domain that does not exist, or publishes a null
// MX (RFC 7505), fails its recipients for good; a DNS failure defers them.
//
// STARTTLS is opportunistic (an MX host's name proves nothing without DANE or
// MTA-STS, which are not implemented: `required` is taken as opportunistic), or never
// when options.smtp.starttls says so; AUTH is never used.
//
// Thread safety: attempt() may be called from several threads at once.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "slimta/smtp_relay.h"

namespace slimta {

struct MxRelayOptions {
  // Settings of each connection; host is ignored, port applies to every MX (25).
  SmtpRelayOptions smtp;
  // Settings for the MX hosts of these domains (lower-case) instead of `smtp`
  // (a destination's connect timeout, idle timeout, messages per connection).
  std::map<std::string, SmtpRelayOptions> domains;
  // "IP" or "IP:PORT" of the DNS server to ask; empty: those of /etc/resolv.conf.
  std::string dns_server;
  std::chrono::milliseconds dns_timeout = std::chrono::seconds(5);
};

class MxRelay : public Relay {
 public:
  explicit MxRelay(MxRelayOptions options);
  ~MxRelay() override;

  std::vector<RecipientResult> attempt(const Envelope& envelope, uint32_t attempt) override;
  // The recipient's domain, lower-case.
  std::string destination(const std::string& recipient) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
