// The marks beside the messages from which CloudStorage::stats() counts the queue
// (doc/format.md, "S3 + SQS"): an empty object PREFIX~stats~MID-rTIME per message (MID
// the id with '-' written '.', TIME its receipt) and PREFIX~stats~MID-h per held one.
// S3 keeps no count and a LIST shows no object's metadata, so a LIST of the marks is the
// cheapest count there is: one request per 1,000 messages, none of them read.
//
// '~' sorts after every id character, so the marks list after every message; with '.'
// for '-', the '-' that ends MID sorts before any id character, so the marks list in the
// order of their ids, as the messages do: the sweep walks both side by side.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "slimta/cloud_storage.h"

namespace slimta::cloud {

class StatsMarks {
 public:
  explicit StatsMarks(SimpleStorageService& s3);

  // Where the marks begin: every key from here on is a mark.
  const std::string& first() const { return first_; }
  std::string received(std::string_view id, Timestamp received) const;
  std::string held(std::string_view id) const;

  // PUT (an empty object; already there is done) or DELETE a mark. A failure is logged,
  // not raised: the message's own change is made, and the sweep puts the mark right.
  void put(const std::string& key);
  void remove(const std::string& key);
  // Every mark of `id` (a LIST, then a DELETE each): for a removal that did not read the
  // message. Logged, not raised.
  void remove_all(std::string_view id);

  // What the marks say of one message.
  struct Of {
    std::string received;  // the receipt mark's key; "" if none
    bool held = false;
  };
  struct Listed {
    std::map<std::string, Of> by_id;
    std::vector<std::pair<std::string, Timestamp>> keys;  // every mark, its LastModified
  };
  // The marks of the ids after `after` ("": from the first) up to `last` (none: to the
  // end), a LIST page at a time.
  Listed between(const std::string& after, const std::optional<std::string>& last);
  // The id that the mark `key` is of; nullopt if `key` is no mark.
  std::optional<std::string> id_of(std::string_view key) const;

  // The whole queue: a LIST of every mark.
  QueueStats count();

 private:
  SimpleStorageService& s3_;
  const std::string first_;  // the prefix, then "~stats~"
};

}  // namespace slimta::cloud
