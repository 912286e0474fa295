#include "support/log_capture.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <mutex>

namespace slimta::testing {
namespace {

class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  void capture(bool on) {
    std::lock_guard lock(mutex_);
    on_ = on;
    text_.clear();
  }
  std::string text() {
    std::lock_guard lock(mutex_);
    return text_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!on_) return;
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    text_.append(formatted.data(), formatted.size());
  }
  void flush_() override {}

 private:
  bool on_ = false;
  std::string text_;
};

CaptureSink& sink() {
  static std::shared_ptr<CaptureSink> installed = [] {
    auto s = std::make_shared<CaptureSink>();
    spdlog::default_logger()->sinks().push_back(s);
    return s;
  }();
  return *installed;
}

}  // namespace

LogCapture::LogCapture() { sink().capture(true); }

LogCapture::~LogCapture() { sink().capture(false); }

std::string LogCapture::text() const { return sink().text(); }

}  // namespace slimta::testing
