// RoutingRelay: a transport map. Recipients of a routed domain go to that domain's
// relay (e.g. an SmtpRelay to the domain's mailbox server), every other recipient to
// the fallback (the smarthost, or MX delivery). A message with recipients on several
// routes is delivered once per route, each with only its recipients.
//
// Thread safety: attempt() may be called from several threads at once when the
// relays it holds allow it (SmtpRelay and MxRelay do).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "slimta/queue.h"

namespace slimta {

class RoutingRelay : public Relay {
 public:
  // `routes`: domain (case does not matter) -> its relay. Throws InvalidArgument for
  // a null relay, an empty domain or one with '@'.
  RoutingRelay(std::map<std::string, std::shared_ptr<Relay>> routes,
               std::shared_ptr<Relay> fallback);

  std::vector<RecipientResult> attempt(const Envelope& envelope, uint32_t attempt) override;
  // A routed recipient's route domain; the fallback's destination otherwise.
  std::string destination(const std::string& recipient) const override;

 private:
  std::map<std::string, std::shared_ptr<Relay>> routes_;  // lower-case domain
  std::shared_ptr<Relay> fallback_;
};

}  // namespace slimta
