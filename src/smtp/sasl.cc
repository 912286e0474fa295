#include "smtp/sasl.h"

#include <openssl/evp.h>

namespace slimta::smtp {

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  size_t pad = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '+' || c == '/';
    if (c == '=') {
      // Padding only in the last two places, and nothing but padding after it.
      if (i + 2 < text.size()) return std::nullopt;
      ++pad;
    } else if (!alpha || pad > 0) {
      return std::nullopt;
    }
  }
  // EVP_DecodeBlock checks the alphabet too, and counts padding as zero bytes.
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - pad);
  return out;
}

std::optional<PlainCredentials> parse_plain(std::string_view message) {
  size_t first = message.find('\0');
  if (first == std::string_view::npos) return std::nullopt;
  size_t second = message.find('\0', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  if (message.find('\0', second + 1) != std::string_view::npos) return std::nullopt;
  PlainCredentials c;
  c.authzid = std::string(message.substr(0, first));
  c.user = std::string(message.substr(first + 1, second - first - 1));
  c.password = std::string(message.substr(second + 1));
  if (c.user.empty() || c.password.empty()) return std::nullopt;
  return c;
}

}  // namespace slimta::smtp
