#include "queue/schedule.h"

#include <algorithm>

namespace slimta::engine {

bool Schedule::add(const std::string& id, Timestamp due, Timestamp now,
                   std::optional<std::string> line, bool owed) {
  if (taken_.contains(id)) return false;  // its attempt reschedules it
  if (limits_.pull && !owed &&
      (due > now + limits_.horizon || pending_.size() >= limits_.max_pending) &&
      !pending_.contains(id))
    return false;
  auto [it, inserted] = pending_.try_emplace(id, Pending{due, line});
  if (!inserted) {
    if (line && !it->second.line) it->second.line = std::move(line);
    if (it->second.due <= due) return false;
    it->second.due = due;
  }
  heap_.push(Item{due, seq_++, id});
  return true;
}

const std::string* Schedule::peek_due(Timestamp now) {
  while (!heap_.empty()) {
    const Item& top = heap_.top();
    auto it = pending_.find(top.id);
    if (it == pending_.end() || it->second.due != top.due) {
      heap_.pop();  // stale
      continue;
    }
    return top.due <= now ? &top.id : nullptr;
  }
  return nullptr;
}

std::optional<std::string> Schedule::pop_due(Timestamp now, bool& refill) {
  const std::string* top = peek_due(now);
  if (!top) return std::nullopt;
  std::string id = *top;
  heap_.pop();
  pending_.erase(id);
  taken_.emplace(id, Fence{});
  if (limits_.pull && pending_.size() == limits_.refill_at) refill = true;
  return id;
}

// Puts `id` (taken) in line `name`, first or last; with the due index, a line already
// max_line_waiting long leaves it to the index instead.
void Schedule::join_line(const std::string& name, std::string id, bool first) {
  Line& line = lines_[name];
  if (limits_.pull && line.ids.size() >= limits_.max_line_waiting) {
    taken_.erase(id);
    return;
  }
  taken_[id] = Fence{};  // waiting: nothing to renew
  if (first) {
    line.ids.push_front(std::move(id));
  } else {
    line.ids.push_back(std::move(id));
  }
}

std::optional<Timestamp> Schedule::next_due() {
  std::optional<Timestamp> next;
  while (!heap_.empty()) {
    auto it = pending_.find(heap_.top().id);
    if (it != pending_.end() && it->second.due == heap_.top().due) {
      next = heap_.top().due;
      break;
    }
    heap_.pop();
  }
  for (const auto& [name, line] : lines_) {
    if (line.ids.empty() || line.active >= limits_.max_connections(name)) continue;
    if (!next || line.blocked_until < *next) next = line.blocked_until;
  }
  return next;
}

std::optional<Job> Schedule::take(Timestamp now, bool& refill) {
  // Due messages of a known destination join its line, unread.
  while (const std::string* top = peek_due(now)) {
    auto known = pending_.find(*top);
    if (!known->second.line) break;
    std::string line = std::move(*known->second.line);
    join_line(line, *pop_due(now, refill), /*first=*/false);
  }
  // The lines in turn, from the one after the last served.
  for (size_t n = 0, total = lines_.size(); n < total; ++n) {
    auto it = lines_.upper_bound(last_line_);
    if (it == lines_.end()) it = lines_.begin();
    last_line_ = it->first;
    Line& line = it->second;
    if (line.ids.empty() && line.active == 0 && line.blocked_until <= now) {
      lines_.erase(it);
      continue;
    }
    if (line.ids.empty() || line.blocked_until > now ||
        line.active >= limits_.max_connections(it->first))
      continue;
    Job job{line.ids.front(), false, it->first};
    line.ids.pop_front();
    ++line.active;
    return job;
  }
  if (auto id = pop_due(now, refill)) return Job{*id, true, std::nullopt};
  return std::nullopt;
}

void Schedule::leave_line(const std::string& name, Timestamp now, Timestamp blocked_until) {
  auto it = lines_.find(name);
  if (it == lines_.end()) return;
  Line& line = it->second;
  if (line.active > 0) --line.active;
  line.blocked_until = std::max(line.blocked_until, blocked_until);
  // A blocked line stays, so that what joins it meanwhile waits too.
  if (line.ids.empty() && line.active == 0 && line.blocked_until <= now) lines_.erase(it);
}

bool Schedule::enter_line(const std::string& name, Timestamp now) {
  Line& line = lines_[name];
  if (line.blocked_until > now || line.active >= limits_.max_connections(name)) return false;
  ++line.active;
  return true;
}

void Schedule::block_line(const std::string& name, Timestamp until) {
  if (auto it = lines_.find(name); it != lines_.end())
    it->second.blocked_until = std::max(it->second.blocked_until, until);
}

void Schedule::finish(const Job& job, const Next& next, Timestamp now, bool owed) {
  const std::string& id = job.id;
  if (job.line) leave_line(*job.line, now);
  switch (next.kind) {
    case Next::Kind::done:
      taken_.erase(id);
      break;
    case Next::Kind::at:
      taken_.erase(id);
      add(id, next.at, now, next.line, owed);
      break;
    case Next::Kind::wait:  // first when the destination's turn comes
      join_line(*next.line, id, /*first=*/true);
      break;
  }
}

size_t Schedule::size() const {
  size_t n = pending_.size();
  for (const auto& [name, line] : lines_) n += line.ids.size();
  return n;
}

std::optional<Fence> Schedule::fence_of(const std::string& id) const {
  auto it = taken_.find(id);
  if (it == taken_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::pair<std::string, Fence>> Schedule::claimed() const {
  std::vector<std::pair<std::string, Fence>> out;
  for (const auto& [id, fence] : taken_)
    if (fence.token != 0) out.emplace_back(id, fence);
  return out;
}

}  // namespace slimta::engine
