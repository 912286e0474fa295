// Splitting text into lines the way mail text is read here: CRLF, a bare LF and a bare
// CR each end a line. Shared by the SMTP client's DATA encoding and the bounce's copy
// of the original headers, so both agree on what a line is.
#pragma once

#include <cstring>
#include <string_view>

namespace slimta {

// Calls fn(line) for each line of `text`, without its ending; a last line without an
// ending counts too. Nothing for empty text.
template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  const size_t n = text.size();
  for (size_t pos = 0; pos < n;) {
    // The line ends at the first CR or LF.
    const char* at = text.data() + pos;
    const void* lf = std::memchr(at, '\n', n - pos);
    size_t lf_at = lf ? static_cast<size_t>(static_cast<const char*>(lf) - text.data()) : n;
    const void* cr = std::memchr(at, '\r', lf_at - pos);
    size_t end = cr ? static_cast<size_t>(static_cast<const char*>(cr) - text.data()) : lf_at;
    size_t next = end + 1;
    if (cr && next < n && text[next] == '\n') ++next;
    fn(text.substr(pos, end - pos));
    pos = next;
  }
}

}  // namespace slimta
