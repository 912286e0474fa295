// The one door. The order of the checks is the cheapest first, and nothing that costs
// a storage round trip happens before a message is known to be acceptable. The room is
// not asked again before the write: the storage enforces its own guard there
// (StorageFull), which a check a moment earlier could only repeat.
#include "slimta/reception.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "slimta/ascii.h"

namespace slimta {
namespace {

const char* const kNoRoom = "452 4.3.1 Error: insufficient system storage, try again later";

bool has_control(std::string_view s) { return std::any_of(s.begin(), s.end(), is_control); }

// An address a queue can carry: no space or control character, at most 254 octets
// (RFC 5321's path limit less the brackets); a recipient has a domain.
bool bad_address(std::string_view a, bool recipient) {
  if (a.size() > 254 || has_control(a) || a.find(' ') != std::string_view::npos) return true;
  return recipient && (a.find('@') == std::string_view::npos || a.back() == '@');
}

ReceptionResult refused(std::string reply) {
  return {ReceptionResult::Outcome::refused, "", std::move(reply)};
}
ReceptionResult deferred(std::string reply) {
  return {ReceptionResult::Outcome::deferred, "", std::move(reply)};
}

// A stage's reply, in the class its verdict says (a refusal with a 4xx would make the
// client retry for ever; a deferral with a 5xx would lose mail).
std::string reply_of(const StageVerdict& v) {
  char want = v.kind == StageVerdict::Kind::refuse ? '5' : '4';
  if (v.reply.size() >= 3 && v.reply[0] == want && !has_control(v.reply)) return v.reply;
  return want == '5' ? "554 5.7.1 Error: message refused" : "451 4.7.1 Error: try again later";
}

}  // namespace

std::string received_field(const Envelope& envelope, const std::string& hostname) {
  const ClientInfo& c = envelope.client;
  for (std::string_view part : {std::string_view(c.name), std::string_view(c.ip),
                                std::string_view(c.protocol), std::string_view(hostname)}) {
    if (has_control(part)) throw InvalidArgument("a Received: part has a control character");
  }
  std::string out;
  if (!c.name.empty()) {
    out = "from " + c.name + (c.ip.empty() ? "" : " ([" + c.ip + "])") + " ";
  } else if (!c.ip.empty()) {
    out = "from [" + c.ip + "] ";
  }
  out += "by " + hostname;
  if (!c.protocol.empty()) out += " with " + c.protocol;
  if (envelope.recipients.size() == 1) out += " for <" + envelope.recipients.front() + ">";
  return out + "; " + rfc5322_date(envelope.timestamp);
}

Reception::Store Reception::into(Queue& queue) {
  return [&queue](Envelope&& envelope) { return queue.enqueue(std::move(envelope)); };
}

Reception::Store Reception::into(QueueStorage& storage, const Clock& clock) {
  return [&storage, &clock](Envelope&& envelope) {
    EnqueueResult r = store_message(storage, envelope, clock.now());
    if (r.ok() && storage.capabilities().can_lease) {  // counted as a Queue counts it
      try {
        storage.add_counters({{"enqueued", 1}});
      } catch (const QueueError& e) {
        spdlog::warn("reception: {} queued but not counted: {}", r.id, e.what());
      }
    }
    return r;
  };
}

Reception::Room Reception::room_in(const QueueStorage& storage) {
  return [&storage](size_t bytes) { return storage.has_room(bytes); };
}

Reception::Reception(Store store, Room room, ReceptionOptions options, const Clock& clock)
    : store_(std::move(store)), room_(std::move(room)), clock_(clock) {
  if (!store_) throw InvalidArgument("a reception needs somewhere to store");
  reload(std::move(options));
}

Reception::~Reception() = default;

std::shared_ptr<const ReceptionOptions> Reception::options() const { return options_.load(); }

void Reception::reload(ReceptionOptions options) {
  for (const auto& stage : options.stages)
    if (!stage) throw InvalidArgument("a reception stage is null");
  if (options.hostname.empty()) options.hostname = host_name();
  options_.store(std::make_shared<const ReceptionOptions>(std::move(options)));
}

bool Reception::has_room(size_t bytes) const { return !room_ || room_(bytes); }

ReceptionResult Reception::receive(Envelope&& envelope) const {
  auto options = options_.load();
  const std::string from = printable(envelope.sender);
  if (bad_address(envelope.sender, /*recipient=*/false)) {
    spdlog::warn("reception: refused from=<{}>: a bad sender address", from);
    return refused("501 5.1.7 Bad sender address syntax");
  }
  if (envelope.recipients.empty()) return refused("554 5.5.1 Error: no valid recipients");
  if (options->max_recipients && envelope.recipients.size() > options->max_recipients) {
    spdlog::warn("reception: refused from=<{}>: {} recipients, over the limit of {}", from,
                 envelope.recipients.size(), options->max_recipients);
    return refused("550 5.5.3 Too many recipients: at most " +
                   std::to_string(options->max_recipients) + " a message");
  }
  for (const std::string& r : envelope.recipients) {
    if (bad_address(r, /*recipient=*/true)) {
      spdlog::warn("reception: refused from=<{}>: a bad recipient address <{}>", from,
                   printable(r));
      return refused("501 5.1.3 Bad recipient address syntax");
    }
  }
  if (size_t size = envelope.message_size();
      options->max_message_size && size > options->max_message_size) {
    return refused("552 5.3.4 Message size exceeds the limit of " +
                   std::to_string(options->max_message_size) + " octets");
  }
  if (size_t hops = envelope.headers.count("Received");
      options->max_hops && hops >= options->max_hops) {
    spdlog::warn("reception: refused from=<{}>: {} hops, a mail loop", from, hops);
    return refused("554 5.4.6 Too many hops: a mail loop");
  }
  envelope.timestamp = clock_.now();
  envelope.receiver = options->hostname;
  try {
    envelope.headers.prepend("Received", received_field(envelope, options->hostname));
  } catch (const QueueError&) {  // a HELO name or address with a control character
    return refused("501 5.5.4 Bad HELO/EHLO name");
  }
  for (const auto& stage : options->stages) {
    StageVerdict v;
    try {
      v = stage->inspect(envelope);
    } catch (const std::exception& e) {
      spdlog::error("reception: stage {} failed from=<{}>: {}", stage->name(), from, e.what());
      return deferred("451 4.3.0 Error: local error in processing, try again later");
    }
    if (v.kind == StageVerdict::Kind::accept) continue;
    std::string reply = reply_of(v);
    spdlog::info("reception: stage {} {} from=<{}>: {}", stage->name(),
                 v.kind == StageVerdict::Kind::refuse ? "refused" : "deferred", from, reply);
    return v.kind == StageVerdict::Kind::refuse ? refused(reply) : deferred(reply);
  }
  EnqueueResult r = store_(std::move(envelope));
  if (r.ok()) return {ReceptionResult::Outcome::queued, r.id, "250 2.0.0 Ok: queued as " + r.id};
  // The error itself is logged by the store: it may name hosts, ports and paths.
  if (r.storage_full) return deferred(kNoRoom);
  if (r.retryable) return deferred("451 4.3.0 Error: queue file write error, try again later");
  return refused("554 5.6.0 Error: message not accepted");
}

}  // namespace slimta
