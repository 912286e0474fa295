#include "queue/bounce.h"

#include "core/lines.h"
#include "slimta/clock.h"
#include "slimta/queue.h"

namespace slimta::bounce {
namespace {

// One line: each line break (of a multi-line SMTP reply) becomes one space.
std::string one_line(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;
    out += (s[i] == '\r' || s[i] == '\n') ? ' ' : s[i];
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// `text` with every line ending made CRLF, ended by one.
std::string crlf(std::string_view text) {
  std::string out;
  for_each_line(text, [&](std::string_view line) {
    out.append(line);
    out += "\r\n";
  });
  if (out.empty()) out = "\r\n";
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::string status_of(std::string_view reply) {
  char cls = !reply.empty() && (reply[0] == '4' || reply[0] == '5') ? reply[0] : '4';
  // After the three-digit code and its separator: class.subject.detail
  size_t pos = 4;
  if (reply.size() > pos && reply[pos] == cls && reply.size() > pos + 1 && reply[pos + 1] == '.') {
    size_t end = pos + 2;
    while (end < reply.size() && is_digit(reply[end])) ++end;
    if (end < reply.size() && reply[end] == '.' && end > pos + 2) {
      size_t detail = end + 1;
      size_t stop = detail;
      while (stop < reply.size() && is_digit(reply[stop])) ++stop;
      if (stop > detail) return std::string(reply.substr(pos, stop - pos));
    }
  }
  return std::string(1, cls) + ".0.0";
}

Envelope make(const Envelope& original, std::string_view id, std::span<const Failure> failures,
              std::string_view reporting_mta, Timestamp now, std::optional<Timestamp> retry_until) {
  const bool delayed = retry_until.has_value();
  std::string mta(reporting_mta);
  std::string boundary = "=_slimta_" + random_hex(12);
  std::string m;
  m += "From: Mail Delivery System <MAILER-DAEMON@" + mta + ">\r\n";
  m += "To: <" + original.sender + ">\r\n";
  m += delayed ? "Subject: Delayed Mail (still being retried)\r\n"
               : "Subject: Undelivered Mail Returned to Sender\r\n";
  m += "Date: " + rfc5322_date(now) + "\r\n";
  m += "Message-ID: <" + new_message_id() + "@" + mta + ">\r\n";
  m += "Auto-Submitted: auto-replied\r\n";
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: multipart/report; report-type=delivery-status;\r\n";
  m += "\tboundary=\"" + boundary + "\"\r\n";
  m += "\r\n";
  m += "This is a MIME-encapsulated delivery status notification.\r\n";

  m += "\r\n--" + boundary + "\r\n";
  m += "Content-Type: text/plain; charset=utf-8\r\n\r\n";
  m += "This is the mail system at " + mta + ".\r\n\r\n";
  if (delayed) {
    m += "Your message could not be delivered yet to the following recipients. The mail\r\n"
         "system keeps trying until " +
         rfc5322_date(*retry_until) +
         "; you need not send it again.\r\nThis is a warning only.\r\n\r\n";
  } else {
    m += "Your message could not be delivered to the following recipients:\r\n\r\n";
  }
  for (const auto& f : failures) m += "<" + f.recipient + ">: " + one_line(f.reply) + "\r\n";

  m += "\r\n--" + boundary + "\r\n";
  m += "Content-Type: message/delivery-status\r\n\r\n";
  m += "Reporting-MTA: dns; " + mta + "\r\n";
  m += "X-Slimta-Queue-ID: " + std::string(id) + "\r\n";
  if (original.timestamp > 0) m += "Arrival-Date: " + rfc5322_date(original.timestamp) + "\r\n";
  for (const auto& f : failures) {
    m += "\r\n";
    m += "Final-Recipient: rfc822; " + f.recipient + "\r\n";
    m += delayed ? "Action: delayed\r\n" : "Action: failed\r\n";
    std::string status = status_of(f.reply);
    if (delayed) status[0] = '4';  // still being tried: a temporary status
    m += "Status: " + status + "\r\n";
    m += "Diagnostic-Code: smtp; " + one_line(f.reply) + "\r\n";
    if (delayed) m += "Will-Retry-Until: " + rfc5322_date(*retry_until) + "\r\n";
  }

  m += "\r\n--" + boundary + "\r\n";
  m += "Content-Type: text/rfc822-headers\r\n\r\n";
  std::string headers;
  for (const auto& field : original.headers.fields()) headers += field.name + ":" + field.raw;
  m += crlf(headers);
  m += "\r\n--" + boundary + "--\r\n";

  Envelope out;
  out.sender = "";
  out.recipients = {original.sender};
  out.receiver = mta;
  out.timestamp = now;
  out.parse(std::move(m));
  return out;
}

}  // namespace slimta::bounce

namespace slimta {

std::string bounce_now(QueueStorage& storage, const std::string& id, std::string_view reason,
                       std::string_view reporting_mta) {
  QueuedMessage msg = storage.get(id);
  std::string dsn_id;
  if (!msg.envelope.sender.empty() && !msg.envelope.recipients.empty()) {
    std::vector<bounce::Failure> failures;
    for (const auto& r : msg.envelope.recipients)
      failures.push_back({r, "550 5.0.0 " + std::string(reason)});
    Timestamp now = system_clock().now();
    Envelope dsn = bounce::make(msg.envelope, id, failures,
                                reporting_mta.empty() ? host_name() : reporting_mta, now);
    dsn_id = storage.write(dsn, now);
    storage.announce(dsn_id, now);
  }
  storage.remove(id);
  return dsn_id;
}

}  // namespace slimta
