#include "slimta/ip_networks.h"

#include <arpa/inet.h>

#include <cstring>
#include <optional>

#include "slimta/errors.h"

namespace slimta {
namespace {

// `text` as 16 bytes, IPv4 v4-mapped; with whether it was IPv4.
std::optional<std::pair<std::array<uint8_t, 16>, bool>> parse_address(std::string_view text) {
  std::string s(text);
  std::array<uint8_t, 16> a{};
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    a[10] = a[11] = 0xff;
    std::memcpy(a.data() + 12, &v4, 4);
    return std::make_pair(a, true);
  }
  if (s.size() > 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  if (inet_pton(AF_INET6, s.c_str(), a.data()) == 1) return std::make_pair(a, false);
  return std::nullopt;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool in_prefix(const std::array<uint8_t, 16>& a, const std::array<uint8_t, 16>& net,
               unsigned prefix) {
  unsigned whole = prefix / 8, bits = prefix % 8;
  if (std::memcmp(a.data(), net.data(), whole) != 0) return false;
  if (bits == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - bits));
  return (a[whole] & mask) == (net[whole] & mask);
}

}  // namespace

IpNetworks::IpNetworks(const std::vector<std::string>& networks) {
  for (const std::string& entry : networks) {
    std::string_view e = trim(entry);
    auto bad = [&](const std::string& why) {
      return InvalidArgument("network '" + std::string(e) + "' " + why);
    };
    size_t slash = e.find('/');
    auto parsed = parse_address(e.substr(0, slash));
    if (!parsed) throw bad("is not an IP address or CIDR network");
    auto [address, v4] = *parsed;
    unsigned width = v4 ? 32 : 128, prefix = width;
    if (slash != std::string_view::npos) {
      std::string_view p = e.substr(slash + 1);
      if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string_view::npos)
        throw bad("has a bad prefix length");
      prefix = static_cast<unsigned>(std::stoul(std::string(p)));
      if (prefix > width) throw bad("has a prefix longer than the address");
    }
    unsigned bits = prefix + (v4 ? 96 : 0);
    // Bits set past the prefix are almost always a typo (10.1.2.3/8 for 10.0.0.0/8).
    std::array<uint8_t, 16> masked{};
    for (unsigned i = 0; i < 16; ++i) {
      unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * i : 0;
      masked[i] = keep == 0 ? 0 : static_cast<uint8_t>(address[i] & (0xff << (8 - keep)));
    }
    if (masked != address) throw bad("has bits set past its prefix length");
    std::string text(e.substr(0, slash));
    networks_.push_back({address, bits, text + "/" + std::to_string(prefix)});
  }
}

IpNetworks IpNetworks::parse(std::string_view comma_separated) {
  std::vector<std::string> entries;
  while (!trim(comma_separated).empty()) {
    size_t comma = comma_separated.find(',');
    std::string_view entry = trim(comma_separated.substr(0, comma));
    if (entry.empty()) throw InvalidArgument("empty entry in network list");
    entries.emplace_back(entry);
    if (comma == std::string_view::npos) break;
    comma_separated.remove_prefix(comma + 1);
    if (trim(comma_separated).empty()) throw InvalidArgument("empty entry in network list");
  }
  return IpNetworks(entries);
}

bool IpNetworks::contains(std::string_view ip) const {
  auto parsed = parse_address(ip);
  if (!parsed) return false;
  for (const Network& n : networks_)
    if (in_prefix(parsed->first, n.address, n.prefix)) return true;
  return false;
}

std::string IpNetworks::to_string() const {
  std::string out;
  for (const Network& n : networks_) out += (out.empty() ? "" : ",") + n.text;
  return out;
}

}  // namespace slimta
