// What serve's HTTP listener decides from a request's head, before it reads a byte of
// the body: the Host it was sent to, its framing, and the size of its body. A pure
// function of the head (the fuzz target http_head takes it as it is), kept apart from
// the server that reads the bytes (libmicrohttpd, http_server.cc).
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slimta::daemon {

// The listener's limits: what a client may cost before it is refused or cut off.
struct HttpLimits {
  size_t max_connections = 128;      // at once, over every client; beyond: closed at once
  size_t max_per_client = 32;        // at once from one address
  size_t header_memory = 32 * 1024;  // a connection's request line and headers, in bytes
  // A request must arrive whole (line, headers and body) within this; then the
  // connection is cut, however it trickles in.
  std::chrono::seconds request_deadline{30};
  std::chrono::seconds idle_timeout{30};  // a connection silent this long is closed
  size_t workers = 2;                     // threads that run the API's routes and the page
  size_t waiting = 64;                    // requests queued for a worker; beyond: 503, Retry-After
};

// The head of a request: what libmicrohttpd parsed, unread beyond it.
struct RequestHead {
  std::string_view method;
  std::string_view path;
  std::optional<std::string_view> host;
  std::optional<std::string_view> content_length;
  std::optional<std::string_view> transfer_encoding;
  std::optional<std::string_view> content_encoding;
};

// The names a listener answers to (the Host header): what guards a loopback listener
// from a DNS-rebinding page, whose requests name the attacker's host.
struct ListenerNames {
  std::string bound;               // the address bound: "127.0.0.1", "::1", "0.0.0.0", "192.0.2.1"
  std::vector<std::string> names;  // the host names it is reached by (lower case)
};

// Whether `host` (a Host header: name or IP literal, with or without a port) names
// this listener: "localhost" and loopback addresses always; on a wildcard bind any IP
// literal; else the bound address or one of the names.
bool host_allowed(std::string_view host, const ListenerNames& listener);

// Why the request may not be read further: an HTTP status and a message; status 0
// when it may, with the body's size (0: none).
struct HeadVerdict {
  int status = 0;
  std::string message;
  size_t body = 0;
};

// The framing rules: no chunked or other transfer coding (411: Content-Length only),
// no content coding (415: nothing is inflated), a Content-Length of digits only (400),
// a body only where `max_body` allows one (0: the route takes none; 413 beyond it).
HeadVerdict check_framing(const RequestHead& head, size_t max_body);

}  // namespace slimta::daemon
