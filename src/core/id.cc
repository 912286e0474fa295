#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "core/hex.h"
#include "slimta/storage.h"

namespace slimta {

std::string random_hex(size_t count) {
  std::string bytes(count, '\0');
  size_t got = 0;
  while (got < count) {
    ssize_t n = getrandom(bytes.data() + got, count - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw QueueError(std::string("getrandom failed: ") + std::strerror(errno), true);
    }
    got += static_cast<size_t>(n);
  }
  return to_hex(bytes);
}

std::string new_message_id() { return random_hex(16); }

bool is_valid_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void check_id(std::string_view id) {
  if (!is_valid_id(id)) {
    std::string shown(id.substr(0, 80));
    throw InvalidArgument("invalid message id '" + shown +
                          "': ids are 1-64 characters from [A-Za-z0-9_-]");
  }
}

}  // namespace slimta
