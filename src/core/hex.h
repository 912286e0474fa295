// Lowercase hex encoding, shared by ids, script digests and tests.
#pragma once

#include <string>
#include <string_view>

namespace slimta {

inline std::string to_hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

}  // namespace slimta
