// What the process logs while a LogCapture lives, for tests that check a log line.
// spdlog's sink list is not safe to change while another thread logs, so the capturing
// sink is added to the default logger once, by the first LogCapture of the process
// (create it before the test starts threads that log), and stays; a LogCapture only
// switches it on and off under the sink's own lock.
#pragma once

#include <string>

namespace slimta::testing {

class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // What was logged since this capture began.
  std::string text() const;
};

}  // namespace slimta::testing
