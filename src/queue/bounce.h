// Delivery status notifications (RFC 3464): the message a queue sends back to the
// sender of a message it could not deliver.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "slimta/envelope.h"
#include "slimta/storage.h"

namespace slimta::bounce {

struct Failure {
  std::string recipient;
  std::string reply;  // the last reply for it, e.g. "550 5.1.1 no such user"
};

// The RFC 3463 status code of an SMTP reply: its enhanced code when it has one
// ("550 5.1.1 ..." -> "5.1.1"), otherwise the reply's class ("4.0.0" / "5.0.0").
std::string status_of(std::string_view reply);

// The bounce for `original` (stored as `id`), failed for `failures`: from the null
// sender to original.sender, a multipart/report (report-type=delivery-status) with a
// text/plain explanation, a message/delivery-status part (one block per failed
// recipient: Final-Recipient, Action: failed, Status, Diagnostic-Code) and the
// original's header section as text/rfc822-headers. With `retry_until` (a delay
// warning), the same for recipients still being tried: Action: delayed, a 4.x.x
// Status and Will-Retry-Until.
// REQUIRES: original.sender is not empty (a bounce is never bounced).
Envelope make(const Envelope& original, std::string_view id, std::span<const Failure> failures,
              std::string_view reporting_mta, Timestamp now,
              std::optional<Timestamp> retry_until = std::nullopt);

}  // namespace slimta::bounce
