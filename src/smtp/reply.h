// A destination's SMTP reply (RFC 5321 4.2), read one line at a time within bounds: a
// hostile or broken server may send endless continuation lines ("250-..."), and what
// it sends is kept, logged and stored with the message, so the reader takes at most
// max_lines lines and max_bytes octets in all, and keeps an excerpt as the text.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace slimta::smtp {

struct Reply {
  int code = 0;
  // "250 first line / second line", as the log and bounces show it: at most
  // ReplyLimits::max_text octets, cut with "..." (the whole reply is in `lines`).
  std::string text;
  std::vector<std::string> lines;  // each line's text after the code
  bool ok() const { return code >= 200 && code < 400; }
  bool permanent() const { return code >= 500; }
};

struct ReplyLimits {
  size_t max_lines = 100;        // lines of one reply (an EHLO names ~15 extensions)
  size_t max_bytes = 64 * 1024;  // octets of one reply, its line ends included
  size_t max_text = 1000;        // octets of Reply::text
};

// What is wrong with a reply: not a reply line, or past a limit. what() names it.
class BadReply : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ReplyReader {
 public:
  explicit ReplyReader(ReplyLimits limits = {}) : limits_(limits) {}

  // Octets a reply may still take (for the caller's read buffer).
  size_t room() const { return limits_.max_bytes - bytes_; }

  // One line as received, its LF taken off (a CR before it is dropped here). Returns
  // whether the reply is complete. Throws BadReply for a line that is not "NNN" or
  // "NNN-..."/"NNN ...", or a reply past the limits.
  bool add(std::string_view line);

  // The reply read (once add() returned true).
  Reply take();

 private:
  ReplyLimits limits_;
  size_t bytes_ = 0;
  Reply reply_;
};

}  // namespace slimta::smtp
