#include "cloud/stats_marks.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/decimal.h"

namespace slimta::cloud {

namespace {

constexpr std::string_view kMarks = "~stats~";

// An id as its marks write it: '-' as '.', keeping the order of ids.
std::string mark_id(std::string_view id) {
  std::string out(id);
  std::replace(out.begin(), out.end(), '-', '.');
  return out;
}

struct Mark {
  std::string id;
  bool held = false;
  Timestamp received = 0;  // of a receipt mark
};
// The mark that `name` (the key after PREFIX~stats~) names; nullopt if none.
std::optional<Mark> parse(std::string_view name) {
  size_t dash = name.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::string id(name.substr(0, dash));
  std::replace(id.begin(), id.end(), '.', '-');
  if (!is_valid_id(id)) return std::nullopt;
  std::string_view kind = name.substr(dash + 1);
  Mark mark{std::move(id), kind == "h", 0};
  if (mark.held) return mark;
  if (!kind.starts_with("r")) return std::nullopt;
  auto t = parse_decimal(kind.substr(1));
  if (!t) return std::nullopt;
  mark.received = *t;
  return mark;
}

std::optional<Mark> parse_key(std::string_view key, const std::string& first) {
  if (!key.starts_with(first)) return std::nullopt;
  return parse(key.substr(first.size()));
}

}  // namespace

StatsMarks::StatsMarks(SimpleStorageService& s3)
    : s3_(s3), first_(s3.prefix() + std::string(kMarks)) {}

std::string StatsMarks::received(std::string_view id, Timestamp received) const {
  return first() + mark_id(id) + "-r" + decimal_text(received);
}

std::string StatsMarks::held(std::string_view id) const { return first() + mark_id(id) + "-h"; }

void StatsMarks::put(const std::string& key) {
  try {
    s3_.put(key, "", "");
  } catch (const QueueError& e) {
    spdlog::warn("cloud: could not store the mark {} (the sweep will): {}", key, e.what());
  }
}

void StatsMarks::remove(const std::string& key) {
  try {
    s3_.remove(key);
  } catch (const QueueError& e) {
    spdlog::warn("cloud: could not delete the mark {} (the sweep will): {}", key, e.what());
  }
}

void StatsMarks::remove_all(std::string_view id) {
  try {
    auto page = s3_.list("", std::string(kMarks) + mark_id(id) + "-");
    for (const auto& k : page.keys) remove(k);
  } catch (const QueueError& e) {
    spdlog::warn("cloud: {}: could not list its marks (the sweep will): {}", id, e.what());
  }
}

StatsMarks::Listed StatsMarks::between(const std::string& after,
                                       const std::optional<std::string>& last) {
  Listed found;
  // Past every mark of `after` ('~' sorts after both kinds), so from the next id's.
  std::string from = after.empty() ? "" : first() + mark_id(after) + "-~";
  std::string token;
  do {
    auto page = s3_.list(token, std::string(kMarks), from);
    token = page.next;
    for (size_t i = 0; i < page.keys.size(); ++i) {
      auto mark = parse_key(page.keys[i], first());
      if (!mark) continue;
      if (last && mark->id > *last) return found;
      found.keys.emplace_back(page.keys[i], page.modified[i]);
      Of& of = found.by_id[mark->id];
      if (mark->held) {
        of.held = true;
      } else {
        of.received = page.keys[i];
      }
    }
  } while (!token.empty());
  return found;
}

std::optional<std::string> StatsMarks::id_of(std::string_view key) const {
  auto mark = parse_key(key, first());
  if (!mark) return std::nullopt;
  return std::move(mark->id);
}

QueueStats StatsMarks::count() {
  QueueStats out;
  std::string token;
  do {
    auto page = s3_.list(token, std::string(kMarks));
    token = page.next;
    for (const auto& k : page.keys) {
      auto mark = parse_key(k, first());
      if (!mark) continue;
      if (mark->held) {
        ++out.held;
      } else {
        ++out.messages;
        if (mark->received > 0 && (out.oldest == 0 || mark->received < out.oldest))
          out.oldest = mark->received;
      }
    }
  } while (!token.empty());
  return out;
}

}  // namespace slimta::cloud
