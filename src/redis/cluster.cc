#include "redis/cluster.h"

#include <hiredis.h>

#include <algorithm>
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

SlotMap parse_cluster_slots(const redisReply* reply, std::string_view asked_host,
                            const std::string& where) {
  auto bad = [&](const std::string& what) {
    return QueueError(where + ": CLUSTER SLOTS: " + what + " (not a cluster's slot map)", true);
  };
  auto integer = [&](const redisReply* r, long long low, long long high, const char* what) {
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer < low || r->integer > high)
      throw bad(std::string(what) + " is not an integer from " + std::to_string(low) + " to " +
                std::to_string(high));
    return r->integer;
  };
  if (!reply || reply->type != REDIS_REPLY_ARRAY) throw bad("the reply is not an array");
  SlotMap map;
  map.slots.resize(kClusterSlots);
  for (size_t i = 0; i < reply->elements; ++i) {
    const redisReply* range = reply->element[i];
    if (!range || range->type != REDIS_REPLY_ARRAY || range->elements < 3)
      throw bad("range " + std::to_string(i) + " is not [start, end, master, ...]");
    long long start = integer(range->element[0], 0, kClusterSlots - 1, "a range's start");
    long long end = integer(range->element[1], start, kClusterSlots - 1, "a range's end");
    const redisReply* node = range->element[2];
    if (!node || node->type != REDIS_REPLY_ARRAY || node->elements < 2)
      throw bad("a range's master is not [host, port, ...]");
    const redisReply* h = node->element[0];
    if (!h || (h->type != REDIS_REPLY_STRING && h->type != REDIS_REPLY_STATUS) || h->len > 255)
      throw bad("a master's host is not a string of at most 255 characters");
    std::string host(h->str, h->len);
    if (!std::all_of(host.begin(), host.end(),
                     [](char c) { return c > ' ' && c < 0x7f && c != ','; }))
      throw bad("a master's host has a character no host name or address has");
    // An empty host is the node asked (cluster-announce-hostname unset, Redis 7).
    if (host.empty()) host = std::string(asked_host);
    long long port = integer(node->element[1], 1, 65535, "a master's port");
    std::string name = host + ":" + std::to_string(port);
    for (long long slot = start; slot <= end; ++slot) map.slots[static_cast<size_t>(slot)] = name;
    if (std::find(map.masters.begin(), map.masters.end(), name) == map.masters.end())
      map.masters.push_back(name);
  }
  std::sort(map.masters.begin(), map.masters.end());
  return map;
}

}  // namespace slimta::redis
