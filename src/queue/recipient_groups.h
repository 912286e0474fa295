// Delivering one envelope in parts, one per group of its recipients (a domain, a
// route, a destination), with the results put back in the recipients' order. Shared by
// the relays that split a message (MxRelay by domain, RoutingRelay by route) and the
// queue's shaping (a part per destination).
#pragma once

#include <exception>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "slimta/envelope.h"
#include "slimta/queue.h"

namespace slimta {

// Delivers the recipients of `envelope` at `indexes` with `deliver(part)`: `part` is
// `envelope` itself when they are all of its recipients, else a copy holding only
// those, in that order. Returns one result per index. A `deliver` that throws, or
// answers for the wrong number of recipients, fails them all transiently: "451 4.3.0 "
// + `what` + what went wrong (the parts delivered before it stay delivered).
template <class Deliver>
std::vector<RecipientResult> deliver_part(const Envelope& envelope,
                                          const std::vector<size_t>& indexes, std::string_view what,
                                          Deliver deliver) {
  const Envelope* part = &envelope;
  Envelope copy;
  if (indexes.size() != envelope.recipients.size()) {
    copy = envelope;
    copy.recipients.clear();
    for (size_t i : indexes) copy.recipients.push_back(envelope.recipients[i]);
    part = &copy;
  }
  std::vector<RecipientResult> results;
  try {
    results = deliver(*part);
    if (results.size() != indexes.size()) {
      throw std::runtime_error("relay returned " + std::to_string(results.size()) +
                               " results for " + std::to_string(indexes.size()) + " recipients");
    }
  } catch (const std::exception& e) {
    results.assign(indexes.size(),
                   RecipientResult::transient("451 4.3.0 " + std::string(what) + e.what()));
  }
  return results;
}

// `group(recipient)` names a recipient's group, or returns a result to stand for the
// recipient as it is (it cannot be delivered); `deliver(part, name)` delivers the
// envelope `part` that holds one group's recipients, and returns their results in
// order. The envelope is copied only when its recipients are in several groups. Each
// part is delivered as deliver_part() does.
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
  for (const auto& group : groups) {
    const auto& name = group.first;  // captured below: not a structured binding (clang 14)
    const auto& indexes = group.second;
    std::vector<RecipientResult> results = deliver_part(
        envelope, indexes, "", [&](const Envelope& part) { return deliver(part, name); });
    for (size_t k = 0; k < indexes.size(); ++k) out[indexes[k]] = std::move(results[k]);
  }
  return out;
}

}  // namespace slimta
