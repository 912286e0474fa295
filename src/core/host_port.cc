#include "slimta/host_port.h"

#include <algorithm>

#include "slimta/ascii.h"
#include "slimta/errors.h"

namespace slimta {

HostPort parse_host_port(std::string_view text, std::string_view what,
                         std::optional<uint16_t> default_port, bool port_zero) {
  auto bad = [&] {
    return InvalidArgument(std::string(what) + " '" + std::string(text) + "' is not " +
                           (default_port ? "HOST[:PORT]" : "HOST:PORT"));
  };
  std::string_view host = text, port;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) throw bad();
    host = text.substr(1, close - 1);
    std::string_view after = text.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(":")) throw bad();
      port = after.substr(1);
      if (port.empty()) throw bad();
    }
  } else if (size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    // Two colons and no brackets: a bare IPv6 address, which has no port.
    bool bare_v6 = default_port && std::count(text.begin(), text.end(), ':') > 1;
    if (!bare_v6) {
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
      // An IPv6 address with a port needs its brackets.
      if (port.empty() || host.find(':') != std::string_view::npos) throw bad();
    }
  }
  if (host.empty() || std::any_of(host.begin(), host.end(), [](char c) {
        return is_control(c) || c == ' ' || c == '/' || c == '[' || c == ']';
      }))
    throw bad();
  HostPort out{std::string(host), 0};
  if (port.empty()) {
    if (!default_port) throw bad();
    out.port = *default_port;
    return out;
  }
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos)
    throw bad();
  unsigned long p = std::stoul(std::string(port));
  if ((p == 0 && !port_zero) || p > 65535) throw bad();
  out.port = static_cast<uint16_t>(p);
  return out;
}

}  // namespace slimta
