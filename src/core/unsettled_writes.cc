#include "core/unsettled_writes.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "slimta/errors.h"

namespace slimta {

UnsettledWrites::UnsettledWrites(std::string what, Settle settle)
    : what_(std::move(what)), settle_(std::move(settle)) {}

UnsettledWrites::~UnsettledWrites() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  for (const auto& id : in_doubt_)
    spdlog::error(
        "{}: message {} was refused, and may yet be delivered: its write went "
        "unanswered and the server has not answered since",
        what_, id);
}

bool UnsettledWrites::resolve(const std::string& id, const std::string& why, double patience) {
  using namespace std::chrono;
  auto deadline =
      steady_clock::now() + duration_cast<steady_clock::duration>(duration<double>(patience));
  std::string last = why;
  for (milliseconds pause(50);; pause = std::min(pause * 2, milliseconds(1000))) {
    try {
      bool stored = settle_(id, false);
      spdlog::info("{}: the write of {} had no answer ({}); the server says it is {}", what_, id,
                   why, stored ? "stored" : "not stored, and never will be");
      return stored;
    } catch (const QueueError& e) {
      last = e.what();
    }
    auto left = deadline - steady_clock::now();
    if (left <= steady_clock::duration::zero()) break;
    std::this_thread::sleep_for(std::min<steady_clock::duration>(pause, left));
  }
  spdlog::error(
      "{}: whether message {} was stored is unknown ({}); it is refused, and taken back as soon "
      "as the server answers unless a delivery of it has begun",
      what_, id, last);
  {
    std::lock_guard lock(mu_);
    in_doubt_.push_back(id);
    if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token s) { run(s); });
  }
  cv_.notify_all();
  throw QueueError(what_ + ": message " + id + " could not be confirmed as stored (" + last + ")",
                   true);
}

bool UnsettledWrites::taken_back_if_in_doubt(std::string_view id) {
  {
    std::lock_guard lock(mu_);
    if (std::find(in_doubt_.begin(), in_doubt_.end(), id) == in_doubt_.end()) return false;
  }
  bool stored = settle_(id, true);
  report(id, stored);
  std::lock_guard lock(mu_);
  std::erase(in_doubt_, id);
  return !stored;
}

void UnsettledWrites::report(std::string_view id, bool stored) const {
  if (stored) {
    spdlog::error(
        "{}: message {}, refused because its write went unanswered, was stored and a delivery "
        "of it had begun: the sender's retry may be delivered twice",
        what_, id);
  } else {
    spdlog::info("{}: message {}, refused because its write went unanswered, is taken back", what_,
                 id);
  }
}

void UnsettledWrites::run(std::stop_token stop) {
  std::unique_lock lock(mu_);
  while (!stop.stop_requested()) {
    std::vector<std::string> ids = in_doubt_;
    lock.unlock();
    std::vector<std::string> settled;
    for (const auto& id : ids) {
      try {
        report(id, settle_(id, true));
        settled.push_back(id);
      } catch (const QueueError&) {  // still no answer: asked again shortly
      }
    }
    lock.lock();
    std::erase_if(in_doubt_, [&](const std::string& id) {
      return std::find(settled.begin(), settled.end(), id) != settled.end();
    });
    if (in_doubt_.empty()) {  // until the next refusal
      cv_.wait(lock, stop, [&] { return !in_doubt_.empty(); });
    } else {  // asked again shortly, or at once for a new one
      size_t left = ids.size() - settled.size();
      cv_.wait_for(lock, stop, std::chrono::milliseconds(200),
                   [&] { return in_doubt_.size() > left; });
    }
  }
}

}  // namespace slimta
