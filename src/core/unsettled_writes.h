// A write whose answer was lost or late (a timeout, a dropped connection after it was
// sent) may have been stored, or may still be. A shared backend (Redis, S3) settles it
// before write() answers, through one operation of its own, settle(id, take_back):
//  * it leaves the message stored and returns true when it is stored (and, with
//    `take_back`, already claimed: a delivery may have begun);
//  * otherwise it makes sure the message never will be (a tombstone beside which a late
//    copy of the write lands as no message), deletes it if it was stored, and returns
//    false.
// UnsettledWrites asks it until it answers, for up to `patience` seconds; after that the
// write is refused and the id kept "in doubt": a thread takes it back (take_back) as soon
// as the server answers, and so does the backend's claim() of it first.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace slimta {

class UnsettledWrites {
 public:
  using Settle = std::function<bool(std::string_view id, bool take_back)>;
  // `what` names the backend in the log ("redis", "s3").
  UnsettledWrites(std::string what, Settle settle);
  ~UnsettledWrites();

  // Settles the write of `id` whose answer was lost (`why`): true when it is stored.
  // After `patience` seconds without an answer: the id is left in doubt and a retryable
  // QueueError thrown (the message is refused).
  bool resolve(const std::string& id, const std::string& why, double patience);
  // For claim(): settles `id` first (take_back) if it is in doubt. True when it was
  // taken back (the claim then finds no message). QueueError if the server cannot say.
  bool taken_back_if_in_doubt(std::string_view id);

 private:
  void report(std::string_view id, bool stored) const;
  void run(std::stop_token stop);

  std::string what_;
  Settle settle_;
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::string> in_doubt_;
  std::jthread thread_;  // started with the first id in doubt; the last member
};

}  // namespace slimta
