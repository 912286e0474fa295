// Delivering one envelope in parts, one per group of its recipients (a domain, a
// route), with the results put back in the recipients' order. Shared by the relays
// that split a message: MxRelay (by domain) and RoutingRelay (by route).
#pragma once

#include <exception>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "slimta/envelope.h"
#include "slimta/queue.h"

namespace slimta {

// `group(recipient)` names a recipient's group, or returns a result to stand for the
// recipient as it is (it cannot be delivered); `deliver(part, name)` delivers the
// envelope `part` that holds one group's recipients, and returns their results in
// order. The envelope is copied only when its recipients are in several groups. A
// part that throws, or answers for the wrong number of recipients, fails only its own
// recipients, transiently: the parts delivered before it stay delivered.
template <class Group, class Deliver>
std::vector<RecipientResult> deliver_in_groups(const Envelope& envelope, Group group,
                                               Deliver deliver) {
  std::vector<RecipientResult> out(envelope.recipients.size());
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t i = 0; i < envelope.recipients.size(); ++i) {
    std::variant<std::string, RecipientResult> g = group(envelope.recipients[i]);
    if (auto* name = std::get_if<std::string>(&g)) {
      groups[*name].push_back(i);
    } else {
      out[i] = std::get<RecipientResult>(std::move(g));
    }
  }
  if (groups.size() == 1 && groups.begin()->second.size() == envelope.recipients.size())
    return deliver(envelope, groups.begin()->first);
  for (const auto& [name, indexes] : groups) {
    Envelope part = envelope;
    part.recipients.clear();
    for (size_t i : indexes) part.recipients.push_back(envelope.recipients[i]);
    std::vector<RecipientResult> results;
    try {
      results = deliver(part, name);
    } catch (const std::exception& e) {
      results.assign(indexes.size(),
                     RecipientResult::transient(std::string("451 4.3.0 ") + e.what()));
    }
    if (results.size() != indexes.size())
      results.assign(indexes.size(),
                     RecipientResult::transient(
                         "451 4.3.0 relay answered for the wrong number of recipients"));
    for (size_t k = 0; k < indexes.size(); ++k) out[indexes[k]] = std::move(results[k]);
  }
  return out;
}

}  // namespace slimta
