// Hand-written: no Debian package parses the PROXY protocol (HAProxy's own parser is
// part of its event loop), and the format is two small fixed layouts.
#include "smtp/proxy_header.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace slimta::smtp {
namespace {

constexpr std::string_view kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr std::string_view kV1Prefix = "PROXY ";
constexpr size_t kV1Max = 107;  // including CRLF

bool is_prefix_of(std::string_view data, std::string_view whole) {
  size_t n = std::min(data.size(), whole.size());
  return data.substr(0, n) == whole.substr(0, n);
}

ProxyHeader invalid(std::string error) {
  ProxyHeader h;
  h.status = ProxyHeader::Status::invalid;
  h.error = std::move(error);
  return h;
}

// A decimal port as v1 writes it: 1-5 digits, no sign, no leading zero, <= 65535.
bool parse_port(std::string_view s, uint16_t& port) {
  if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string_view::npos)
    return false;
  if (s.size() > 1 && s.front() == '0') return false;
  unsigned long v = std::stoul(std::string(s));
  if (v > 65535) return false;
  port = static_cast<uint16_t>(v);
  return true;
}

ProxyHeader parse_v1(std::string_view data) {
  size_t end = data.substr(0, kV1Max).find("\r\n");
  if (end == std::string_view::npos) {
    if (data.size() >= kV1Max) return invalid("v1 header without CRLF in 107 bytes");
    if (data.find('\n') != std::string_view::npos) return invalid("v1 header ends in bare LF");
    return {};
  }
  std::string_view line = data.substr(kV1Prefix.size(), end - kV1Prefix.size());
  std::vector<std::string_view> fields;
  for (size_t start = 0; fields.size() <= 5;) {
    size_t sp = line.find(' ', start);
    fields.push_back(line.substr(start, sp == std::string_view::npos ? sp : sp - start));
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  ProxyHeader h;
  h.length = end + 2;
  if (fields[0] == "UNKNOWN") {  // the rest of the line is ignored (spec 2.1)
    h.status = ProxyHeader::Status::ok;
    return h;
  }
  if (fields[0] != "TCP4" && fields[0] != "TCP6") return invalid("v1 header: unknown protocol");
  if (fields.size() != 5) return invalid("v1 header: wrong number of fields");
  int family = fields[0] == "TCP4" ? AF_INET : AF_INET6;
  unsigned char buf[16];
  for (int i = 1; i <= 2; ++i) {
    if (fields[i].empty() || fields[i].size() > 45 ||
        inet_pton(family, std::string(fields[i]).c_str(), buf) != 1)
      return invalid("v1 header: bad address");
  }
  uint16_t dport = 0;
  if (!parse_port(fields[3], h.source_port) || !parse_port(fields[4], dport))
    return invalid("v1 header: bad port");
  h.source = std::string(fields[1]);
  h.status = ProxyHeader::Status::ok;
  return h;
}

ProxyHeader parse_v2(std::string_view data) {
  if (data.size() < 16) return {};
  auto byte = [&](size_t i) { return static_cast<uint8_t>(data[i]); };
  if ((byte(12) >> 4) != 2) return invalid("v2 header: unknown version");
  unsigned command = byte(12) & 0x0f;
  if (command > 1) return invalid("v2 header: unknown command");
  size_t payload = (size_t{byte(14)} << 8) | byte(15);
  if (payload > kMaxProxyV2Payload) return invalid("v2 header: too long");
  if (data.size() < 16 + payload) return {};
  ProxyHeader h;
  h.status = ProxyHeader::Status::ok;
  h.length = 16 + payload;
  if (command == 0) return h;  // LOCAL: the proxy's own connection (a health check)
  unsigned family = byte(13) >> 4, transport = byte(13) & 0x0f;
  if (family > 3 || transport > 2) return invalid("v2 header: unknown address family");
  if (family == 0 || transport != 1 || family == 3) return h;  // UNSPEC, UDP, UNIX: no address
  size_t need = family == 1 ? 12 : 36, alen = family == 1 ? 4 : 16;
  if (payload < need) return invalid("v2 header: addresses truncated");
  char text[INET6_ADDRSTRLEN];
  if (!inet_ntop(family == 1 ? AF_INET : AF_INET6, data.data() + 16, text, sizeof text))
    return invalid("v2 header: bad address");
  h.source = text;
  h.source_port = static_cast<uint16_t>((byte(16 + 2 * alen) << 8) | byte(17 + 2 * alen));
  return h;
}

}  // namespace

bool looks_like_proxy_header(std::string_view data) {
  return data.starts_with(kV1Prefix) || data.starts_with(kV2Signature);
}

ProxyHeader parse_proxy_header(std::string_view data) {
  if (data.empty()) return {};
  if (is_prefix_of(data, kV2Signature)) {
    if (data.size() < kV2Signature.size()) return {};
    return parse_v2(data);
  }
  if (is_prefix_of(data, kV1Prefix)) {
    if (data.size() < kV1Prefix.size()) return {};
    return parse_v1(data);
  }
  return invalid("no PROXY header");
}

}  // namespace slimta::smtp
