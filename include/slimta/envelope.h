// Envelope: one message with its SMTP envelope (python's slimta.envelope.Envelope).
//
// The message itself is kept as ordered header fields plus body bytes. Parsing keeps
// every byte as received (line endings, folding, 8-bit and binary data), so
// flatten() returns exactly what parse() was given, for any input. Header values read
// through Headers::get() are unfolded (RFC 5322 section 2.2.3).
//
// Thread safety: a const Envelope may be read from several threads; mutation needs
// external synchronisation.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slimta {

// Who handed us the message (python's Envelope.client dict).
struct ClientInfo {
  std::string ip;        // peer address, e.g. "192.0.2.1"
  std::string host;      // reverse-DNS name of the peer, if known
  std::string name;      // EHLO/HELO name the client gave
  std::string protocol;  // "SMTP", "ESMTP", "ESMTPS", ...
  std::string auth;      // authenticated identity, empty if none

  bool operator==(const ClientInfo&) const = default;
};

// An ordered list of header fields. Names may repeat; order is preserved.
class Headers {
 public:
  struct Field {
    std::string name;
    // Everything after the ':' up to and including the field's final line ending,
    // exactly as received (folded continuation lines included). Fields added through
    // add()/prepend() get " " + folded value + line_ending().
    std::string raw;

    // The value unfolded, without surrounding whitespace.
    std::string value() const;

    bool operator==(const Field&) const = default;
  };

  // Value of the first field called `name` (case-insensitive), unfolded and with
  // surrounding whitespace removed; nullopt if there is none.
  std::optional<std::string> get(std::string_view name) const;
  // Values of every field called `name`, in order, unfolded.
  std::vector<std::string> get_all(std::string_view name) const;
  // How many fields are called `name` (case-insensitive): "Received" counts hops.
  size_t count(std::string_view name) const;
  // Append a field, folding the value at whitespace to keep lines within 78 columns.
  // Throws InvalidArgument for a name that is not printable ASCII without ':' or
  // whitespace, or a value containing CR or LF (header injection).
  void add(std::string_view name, std::string_view value);
  // Same as add(), but the field goes first (trace fields such as Received:).
  void prepend(std::string_view name, std::string_view value);
  // Remove every field called `name`; returns how many were removed.
  size_t remove(std::string_view name);

  const std::vector<Field>& fields() const { return fields_; }
  bool empty() const { return fields_.empty(); }

  // Line ending used for fields added through the API: the one the parsed message
  // used ("\r\n" or "\n"), "\r\n" by default.
  const std::string& line_ending() const { return eol_; }
  void set_line_ending(std::string eol);

  bool operator==(const Headers&) const = default;

 private:
  friend class Envelope;
  Field make_field(std::string_view name, std::string_view value) const;

  std::vector<Field> fields_;
  std::string eol_ = "\r\n";
};

class Envelope {
 public:
  std::string sender;                   // reverse-path; empty for the null sender <>
  std::vector<std::string> recipients;  // forward-paths, in the order given
  ClientInfo client;
  std::string receiver;  // hostname of the server that received the message
  double timestamp = 0;  // when it was received, seconds since the Unix epoch

  Headers headers;
  // The blank line that ends the header section ("\r\n" or "\n"), or empty when the
  // message had none.
  std::string separator = "\r\n";
  std::string body;  // bytes after the separator, untouched

  // Replace headers, separator and body with those of the raw RFC 5322 message
  // `data`. Never fails: a line that is not a header field ends the header section.
  // Given an rvalue, its buffer becomes the body (no copy of a large message).
  void parse(std::string data);

  // The message as bytes: header fields, separator, body. Byte-exact with what
  // parse() was given.
  std::string flatten() const;
  // Size in bytes of flatten(), without building it.
  size_t message_size() const;

  bool operator==(const Envelope&) const = default;
};

// Addresses (local@domain) named in an address-list header value such as
// "A <a@example.com>, b@example.com (B), group: c@example.com;". Display names,
// comments and group syntax are dropped; order is kept.
std::vector<std::string> parse_address_list(std::string_view value);

// This host's fully-qualified name: gethostname(), and for a short name its canonical
// name (getaddrinfo's AI_CANONNAME, as `hostname -f`) when that has a domain; else the
// short name, or "localhost" if there is none. Looked up once per process. The default
// for Envelope::receiver, EHLO names, Received: headers and bounces: a receiving server
// may refuse a name that is not fully qualified (Postfix's
// reject_non_fqdn_helo_hostname).
std::string host_name();

// `seconds` since the epoch in UTC, as strftime's `format` writes it (at most 63
// characters); the number itself if it is out of the calendar's range.
std::string utc_time(double seconds, const char* format);
// An RFC 5322 date-time in UTC for `seconds` since the epoch, e.g.
// "Sun, 22 Nov 2026 21:50:44 +0000" (Date:, Received:, Arrival-Date:).
std::string rfc5322_date(double seconds);
// An ISO 8601 / RFC 3339 date-time in UTC, to the second, e.g. "2026-11-22T21:50:44Z"
// (logs, JSON).
std::string iso8601_time(double seconds);

}  // namespace slimta
