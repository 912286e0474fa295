// A blocking SMTP client for the tests and benchmarks: raw bytes out, whole replies in,
// so that tests can send anything (pipelined batches, garbage) and read what comes back.
#pragma once

#include <string>

namespace slimta::testing {

class SmtpClient {
 public:
  // Connects to 127.0.0.1:port; reads wait at most 10 s. Throws if it cannot connect.
  explicit SmtpClient(int port);
  ~SmtpClient();
  SmtpClient(const SmtpClient&) = delete;
  SmtpClient& operator=(const SmtpClient&) = delete;

  // Sends everything it can; a server that closed shows in the replies.
  void send(const std::string& data);
  // The next complete reply (all its lines), or "" at end of stream or timeout.
  std::string reply();
  // The next reply's code, or -1.
  int code();
  // send(data), then code().
  int exchange(const std::string& data);
  // Whether the server closed the connection.
  bool closed();

 private:
  int fd_;
  std::string buf_;
};

}  // namespace slimta::testing
