// A QueueObserver that keeps every event it is told, for tests to look at.
#pragma once

#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "slimta/queue_events.h"

namespace slimta::testing {

class EventRecorder : public QueueObserver {
 public:
  void on_event(const QueueEvent& event) override {
    std::lock_guard lock(mu_);
    events_.push_back(event);
  }
  std::vector<QueueEvent> events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::vector<std::string> names() {
    std::vector<std::string> out;
    for (const auto& e : events()) out.push_back(event_name(e));
    return out;
  }
  template <class T>
  std::vector<T> all() {
    std::vector<T> out;
    for (const auto& e : events())
      if (const T* t = std::get_if<T>(&e)) out.push_back(*t);
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<QueueEvent> events_;
};

}  // namespace slimta::testing
