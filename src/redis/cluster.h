// Redis Cluster: which hash slot a key is in, and the redirections a node answers with
// when a slot is served elsewhere (MOVED) or being moved (ASK). Pool (connection.h)
// routes calls by these.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "slimta/errors.h"

namespace slimta::redis {

constexpr uint16_t kClusterSlots = 16384;

// The hash slot of `key`: CRC16 (XMODEM) of its hash tag, the part between the first
// '{' and the next '}' when that is not empty, else of the whole key; mod 16384. The
// cluster specification's algorithm; hiredis 0.14 has no cluster support, so it is
// written here (a few lines).
uint16_t key_slot(std::string_view key);
// CRC16 (XMODEM) of `data`, continuing from `crc` (the CRC of what came before it).
uint16_t crc16(std::string_view data, uint16_t crc = 0);
// Whether `key` carries a hash tag (key_slot() then hashes that part only).
bool has_hash_tag(std::string_view key);

// "-MOVED SLOT HOST:PORT" or "-ASK SLOT HOST:PORT": the command did nothing; send it to
// `node` (after ASKING, for ASK).
class Redirect : public QueueError {
 public:
  Redirect(const std::string& what, bool ask, std::string node)
      : QueueError(what, true), ask(ask), node(std::move(node)) {}
  bool ask;
  std::string node;  // HOST:PORT
};

// "-TRYAGAIN": the slot of a command's keys is being moved and they are split between
// two nodes for now; the command did nothing.
class TryAgain : public QueueError {
 public:
  explicit TryAgain(const std::string& what) : QueueError(what, true) {}
};

// Parses a MOVED or ASK error reply; false if it is neither.
bool parse_redirect(std::string_view error, bool& ask, std::string& node);

}  // namespace slimta::redis
