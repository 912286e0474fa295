// An EntryStream that a backend fills a page at a time (a SCAN step, a ListObjectsV2
// page, or everything at once), so only one page is in memory.
#pragma once

#include <optional>
#include <vector>

#include "slimta/storage.h"

namespace slimta {

class PagedStream : public EntryStream {
 public:
  std::optional<QueueEntry> next() final {
    while (pos_ == page_.size()) {
      if (done_) return std::nullopt;
      page_.clear();
      pos_ = 0;
      done_ = !fetch(page_);
    }
    return std::move(page_[pos_++]);
  }

 protected:
  // Appends the next page to `out` (it may be empty); returns false after the last one.
  virtual bool fetch(std::vector<QueueEntry>& out) = 0;

 private:
  std::vector<QueueEntry> page_;
  size_t pos_ = 0;
  bool done_ = false;
};

}  // namespace slimta
