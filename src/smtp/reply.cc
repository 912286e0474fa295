#include "smtp/reply.h"

#include "slimta/ascii.h"

namespace slimta::smtp {

bool ReplyReader::add(std::string_view line) {
  bytes_ += line.size() + 1;
  if (bytes_ > limits_.max_bytes)
    throw BadReply("reply longer than " + std::to_string(limits_.max_bytes) + " octets");
  if (reply_.lines.size() >= limits_.max_lines)
    throw BadReply("reply of more than " + std::to_string(limits_.max_lines) + " lines");
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (line.size() < 3 || !digit(line[0]) || !digit(line[1]) || !digit(line[2]) ||
      (line.size() > 3 && line[3] != '-' && line[3] != ' '))
    throw BadReply("bad reply line '" + printable(line.substr(0, 80)) + "'");
  int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  if (reply_.lines.empty()) reply_.code = code;  // the first line's code is the reply's
  reply_.lines.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view());
  return !(line.size() > 3 && line[3] == '-');
}

Reply ReplyReader::take() {
  Reply out = std::move(reply_);
  out.text = std::to_string(out.code);
  for (size_t i = 0; i < out.lines.size() && out.text.size() <= limits_.max_text; ++i)
    out.text += (i ? " / " : " ") + out.lines[i];
  if (out.text.size() > limits_.max_text) {
    out.text.resize(limits_.max_text - 3);
    out.text += "...";
  }
  reply_ = Reply{};
  bytes_ = 0;
  return out;
}

}  // namespace slimta::smtp
