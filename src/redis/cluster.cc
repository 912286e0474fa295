#include "redis/cluster.h"

#include <array>
#include <optional>

namespace slimta::redis {

namespace {

// The hash tag of `key`: between the first '{' and the next '}', when not empty.
std::optional<std::string_view> hash_tag(std::string_view key) {
  size_t open = key.find('{');
  if (open == std::string_view::npos) return std::nullopt;
  size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return std::nullopt;
  return key.substr(open + 1, close - open - 1);
}

// The CRC of each byte value, so that a byte costs one lookup (write() with due_slots
// computes hundreds of CRCs to pick an id).
constexpr std::array<uint16_t, 256> kCrcTable = [] {
  std::array<uint16_t, 256> table{};
  for (unsigned byte = 0; byte < 256; ++byte) {
    auto crc = static_cast<uint16_t>(byte << 8);
    for (int bit = 0; bit < 8; ++bit)
      crc = static_cast<uint16_t>(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    table[byte] = crc;
  }
  return table;
}();

}  // namespace

uint16_t crc16(std::string_view data, uint16_t crc) {
  for (unsigned char byte : data)
    crc = static_cast<uint16_t>((crc << 8) ^ kCrcTable[((crc >> 8) ^ byte) & 0xff]);
  return crc;
}

bool has_hash_tag(std::string_view key) { return hash_tag(key).has_value(); }

uint16_t key_slot(std::string_view key) {
  return crc16(hash_tag(key).value_or(key)) % kClusterSlots;
}

bool parse_redirect(std::string_view error, bool& ask, std::string& node) {
  if (error.starts_with("MOVED ")) {
    ask = false;
  } else if (error.starts_with("ASK ")) {
    ask = true;
  } else {
    return false;
  }
  size_t space = error.rfind(' ');
  node = std::string(error.substr(space + 1));
  // Redis 7 may leave the host out ("MOVED 3999 :6381"): it is then the one asked.
  return !node.empty();
}

}  // namespace slimta::redis
