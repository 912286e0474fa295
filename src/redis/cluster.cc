#include "redis/cluster.h"

namespace slimta::redis {

uint16_t key_slot(std::string_view key) {
  size_t open = key.find('{');
  if (open != std::string_view::npos) {
    size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  uint16_t crc = 0;
  for (unsigned char byte : key) {
    crc ^= static_cast<uint16_t>(byte << 8);
    for (int bit = 0; bit < 8; ++bit)
      crc = static_cast<uint16_t>(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
  }
  return crc % kClusterSlots;
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
