// Redis Cluster: which hash slot a key is in, and the redirections a node answers with
// when a slot is served elsewhere (MOVED) or being moved (ASK). Pool (connection.h)
// routes calls by these.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "slimta/errors.h"

struct redisReply;

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

// Parses a MOVED or ASK error reply; false if it is neither. `node` is then
// "HOST:PORT", or ":PORT" (Redis 7 leaves out the host of the node asked).
bool parse_redirect(std::string_view error, bool& ask, std::string& node);

// What a node's CLUSTER SLOTS says: each slot's master ("HOST:PORT"; empty where none
// serves it), and the masters, sorted.
struct SlotMap {
  std::vector<std::string> slots;  // kClusterSlots of them
  std::vector<std::string> masters;
};

// Reads a CLUSTER SLOTS reply of the node at `asked_host` (for a master given with an
// empty host), every part checked: an array of ranges, each [start, end, [host, port,
// ...], replicas...] with 0 <= start <= end < 16384, a host of at most 255 printable
// characters, a port 1-65535. Whatever a node sends, a reply of another shape is a
// retryable QueueError naming `where` and what was wrong, never a slot out of range.
SlotMap parse_cluster_slots(const redisReply* reply, std::string_view asked_host,
                            const std::string& where);

}  // namespace slimta::redis
