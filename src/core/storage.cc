#include "slimta/storage.h"

namespace slimta {

std::vector<size_t> QueuedMessage::remaining_indexes() const {
  std::vector<size_t> out;
  out.reserve(envelope.recipients.size());
  size_t d = 0;
  for (size_t i = 0; i < original_recipients; ++i) {
    if (d < delivered.size() && delivered[d] == i) {
      ++d;
      continue;
    }
    out.push_back(i);
  }
  return out;
}

std::vector<QueueEntry> QueueStorage::do_wait(std::chrono::milliseconds) {
  throw NotSupported("this storage cannot notify of new messages: wait() is not supported");
}

std::vector<QueueEntry> QueueStorage::wait() {
  while (true) {
    auto entries = wait(std::chrono::hours(24));
    if (!entries.empty()) return entries;
  }
}

std::vector<QueueEntry> QueueStorage::load_all() {
  std::vector<QueueEntry> out;
  auto stream = load();
  while (auto entry = stream->next()) out.push_back(std::move(*entry));
  return out;
}

}  // namespace slimta
