#include "http_limits.h"

#include <arpa/inet.h>

#include <algorithm>

#include "slimta/ascii.h"

namespace slimta::daemon {

namespace {

// The host part of a Host header: "[::1]:8080" -> "::1", "a.example:80" -> "a.example".
std::string host_part(std::string_view host) {
  if (host.starts_with("[")) {
    size_t end = host.find(']');
    return end == std::string_view::npos ? std::string() : std::string(host.substr(1, end - 1));
  }
  size_t colon = host.find(':');
  if (colon != std::string_view::npos) {
    std::string_view port = host.substr(colon + 1);
    if (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::string();
    host = host.substr(0, colon);
  }
  std::string out(host);
  while (!out.empty() && out.back() == '.') out.pop_back();  // "localhost." is localhost
  return to_lower(out);
}

bool is_ip(const std::string& s, bool* loopback) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) {
    *loopback = buf[0] == 127;
    return true;
  }
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    static const unsigned char one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    *loopback = std::equal(buf, buf + 16, one);
    return true;
  }
  return false;
}

}  // namespace

bool host_allowed(std::string_view header, const ListenerNames& listener) {
  std::string host = host_part(header);
  if (host.empty()) return false;
  if (host == "localhost") return true;
  bool loopback = false;
  if (is_ip(host, &loopback)) {
    if (loopback) return true;
    if (listener.bound == "0.0.0.0" || listener.bound == "::") return true;
    bool ignored;
    std::string bound = listener.bound;
    if (!is_ip(bound, &ignored)) return false;
    unsigned char a[16] = {}, b[16] = {};
    int family = host.find(':') == std::string::npos ? AF_INET : AF_INET6;
    return inet_pton(family, host.c_str(), a) == 1 && inet_pton(family, bound.c_str(), b) == 1 &&
           std::equal(a, a + 16, b);
  }
  return std::find(listener.names.begin(), listener.names.end(), host) != listener.names.end();
}

HeadVerdict check_framing(const RequestHead& head, size_t max_body) {
  if (head.transfer_encoding) {
    return {411, "a body must come with Content-Length (no Transfer-Encoding: " +
                     printable(head.transfer_encoding->substr(0, 40)) + ")"};
  }
  if (head.content_encoding && !iequals(*head.content_encoding, "identity")) {
    return {415, "a body must not be encoded (Content-Encoding: " +
                     printable(head.content_encoding->substr(0, 40)) + ")"};
  }
  if (!head.content_length) return {};
  std::string_view n = *head.content_length;
  if (n.empty() || n.size() > 19 ||
      !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return {400, "Content-Length must be a number"};
  size_t body = std::stoull(std::string(n));
  if (body == 0) return {};
  if (max_body == 0) return {413, "this resource takes no body"};
  if (body > max_body)
    return {413, "too large: the limit is " + std::to_string(max_body) + " octets"};
  return {0, "", body};
}

}  // namespace slimta::daemon
