#include "slimta/envelope.h"

#include <netdb.h>

#include <cstring>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>

#include "slimta/ascii.h"
#include "slimta/errors.h"

namespace slimta {
namespace {

constexpr size_t kFoldColumn = 78;

bool is_wsp(char c) { return c == ' ' || c == '\t'; }

// RFC 5322 field-name: printable US-ASCII except ':'.
bool valid_field_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return c >= 33 && c <= 126 && c != ':'; });
}

// Unfold (drop each line break that precedes whitespace), drop the final line
// ending, trim surrounding whitespace.
std::string unfold(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '\r' || c == '\n') continue;
    out.push_back(c);
  }
  size_t b = 0, e = out.size();
  while (b < e && is_wsp(out[b])) ++b;
  while (e > b && is_wsp(out[e - 1])) --e;
  return out.substr(b, e - b);
}

// " value" folded so that no line exceeds kFoldColumn where whitespace allows;
// each fold puts the line ending before an existing whitespace character, so
// unfolding restores the value exactly. A Received field's date-time (after its
// last ';', RFC 5322 section 3.6.7) is kept whole on one line.
std::string fold(std::string_view name, std::string_view value, const std::string& eol) {
  std::string out = " ";
  size_t column = name.size() + 2;
  size_t whole_from = iequals(name, "Received") ? value.rfind(';') : std::string_view::npos;
  size_t i = 0;
  while (i < value.size()) {
    // The next word is its leading whitespace plus the non-whitespace run after it.
    size_t j = i;
    while (j < value.size() && is_wsp(value[j])) ++j;
    while (j < value.size() && !is_wsp(value[j])) ++j;
    if (whole_from != std::string_view::npos && i > whole_from) j = value.size();
    std::string_view word = value.substr(i, j - i);
    if (column + word.size() > kFoldColumn && i > 0 && is_wsp(word.front())) {
      out += eol;
      column = 0;
    }
    out += word;
    column += word.size();
    i = j;
  }
  out += eol;
  return out;
}

}  // namespace

std::string Headers::Field::value() const { return unfold(raw); }

namespace {
// Whether field `f` is `name`: case aside, and with the blanks an obsolete field may have
// before its colon (RFC 5322 4.5: "Received :" is a Received field, and a hop).
bool named(const Headers::Field& f, std::string_view name) {
  std::string_view n = f.name;
  while (!n.empty() && (n.back() == ' ' || n.back() == '\t')) n.remove_suffix(1);
  return iequals(n, name);
}
}  // namespace

std::optional<std::string> Headers::get(std::string_view name) const {
  for (const auto& f : fields_) {
    if (named(f, name)) return f.value();
  }
  return std::nullopt;
}

std::vector<std::string> Headers::get_all(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& f : fields_) {
    if (named(f, name)) out.push_back(f.value());
  }
  return out;
}

size_t Headers::count(std::string_view name) const {
  return std::count_if(fields_.begin(), fields_.end(),
                       [&](const Field& f) { return named(f, name); });
}

Headers::Field Headers::make_field(std::string_view name, std::string_view value) const {
  if (!valid_field_name(name)) {
    throw InvalidArgument("invalid header field name '" + std::string(name) +
                          "': must be printable ASCII without ':' or spaces");
  }
  if (value.find_first_of("\r\n") != std::string_view::npos) {
    throw InvalidArgument("header field '" + std::string(name) +
                          "' value contains a line break (CR or LF)");
  }
  return Field{std::string(name), fold(name, value, eol_)};
}

void Headers::add(std::string_view name, std::string_view value) {
  Field field = make_field(name, value);
  // A parsed message may end in a field without a line ending; terminate it so the
  // new field starts on a line of its own.
  if (!fields_.empty() && !fields_.back().raw.ends_with('\n')) fields_.back().raw += eol_;
  fields_.push_back(std::move(field));
}

void Headers::prepend(std::string_view name, std::string_view value) {
  fields_.insert(fields_.begin(), make_field(name, value));
}

size_t Headers::remove(std::string_view name) {
  return std::erase_if(fields_, [&](const Field& f) { return named(f, name); });
}

void Headers::set_line_ending(std::string eol) {
  if (eol != "\r\n" && eol != "\n") throw InvalidArgument("line ending must be CRLF or LF");
  eol_ = std::move(eol);
}

void Envelope::parse(std::string message) {
  std::string_view data = message;
  Headers parsed;
  size_t first_lf = data.find('\n');
  if (first_lf != std::string_view::npos && (first_lf == 0 || data[first_lf - 1] != '\r')) {
    parsed.eol_ = "\n";
  }
  separator.clear();
  size_t pos = 0;
  while (pos < data.size()) {
    size_t lf = data.find('\n', pos);
    size_t next = lf == std::string_view::npos ? data.size() : lf + 1;
    std::string_view line = data.substr(pos, next - pos);
    std::string_view content = line;
    if (!content.empty() && content.back() == '\n') content.remove_suffix(1);
    if (!content.empty() && content.back() == '\r') content.remove_suffix(1);

    if (content.empty() && line.size() > 0 && line.back() == '\n') {
      separator = std::string(line);
      pos = next;
      break;
    }
    if (is_wsp(line.front()) && !parsed.fields_.empty()) {
      parsed.fields_.back().raw.append(line);
      pos = next;
      continue;
    }
    size_t colon = content.find(':');
    // The name, and the blanks RFC 5322's obsolete syntax allows before the colon
    // ("Received :"): kept in the field's name as they came (flatten() is byte-exact),
    // and passed over when a field is looked up by name.
    std::string_view name =
        colon == std::string_view::npos ? std::string_view() : content.substr(0, colon);
    while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
    if (colon == std::string_view::npos || !valid_field_name(name)) {
      break;  // not a header field: the body starts here, without a separator
    }
    parsed.fields_.push_back(
        Headers::Field{std::string(line.substr(0, colon)), std::string(line.substr(colon + 1))});
    pos = next;
  }
  headers = std::move(parsed);
  message.erase(0, pos);  // in place: the body keeps the buffer
  body = std::move(message);
}

size_t Envelope::message_size() const {
  size_t n = separator.size() + body.size();
  for (const auto& f : headers.fields()) n += f.name.size() + 1 + f.raw.size();
  return n;
}

std::string Envelope::flatten() const {
  std::string out;
  out.reserve(message_size());
  for (const auto& f : headers.fields()) {
    out += f.name;
    out += ':';
    out += f.raw;
  }
  out += separator;
  out += body;
  return out;
}

std::string host_name() {
  static const std::string name = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return std::string("localhost");
    std::string found = buf;
    if (found.find('.') != std::string::npos) return found;
    // A short name: its canonical name (/etc/hosts or DNS), as `hostname -f` gives.
    addrinfo hints{};
    hints.ai_flags = AI_CANONNAME;
    addrinfo* res = nullptr;
    if (::getaddrinfo(buf, nullptr, &hints, &res) == 0) {
      if (res && res->ai_canonname && std::strchr(res->ai_canonname, '.'))
        found = res->ai_canonname;
      ::freeaddrinfo(res);
    }
    return found;
  }();
  return name;
}

std::string utc_time(double seconds, const char* format) {
  // Beyond 30 million years (or NaN) no calendar applies, and the cast would overflow.
  if (!(std::abs(seconds) < 1e15)) return std::to_string(seconds);
  std::time_t t = static_cast<std::time_t>(std::floor(seconds));
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) return std::to_string(seconds);
  char buf[64];
  std::strftime(buf, sizeof(buf), format, &tm);
  return buf;
}

std::string rfc5322_date(double seconds) {
  return utc_time(seconds, "%a, %d %b %Y %H:%M:%S +0000");
}

std::string iso8601_time(double seconds) { return utc_time(seconds, "%Y-%m-%dT%H:%M:%SZ"); }

}  // namespace slimta
