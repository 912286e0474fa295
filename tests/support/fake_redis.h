// A Redis node that answers what a test tells it to: a RESP server on 127.0.0.1 (a free
// port) whose replies come from a function of each command. For what a real
// redis-server never sends: a hostile or broken node.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace slimta::testing {

class FakeRedis {
 public:
  // The raw RESP reply to a command (its arguments); e.g. "+OK\r\n".
  using Answer = std::function<std::string(const std::vector<std::string>& command)>;

  explicit FakeRedis(Answer answer);
  ~FakeRedis();
  FakeRedis(const FakeRedis&) = delete;
  FakeRedis& operator=(const FakeRedis&) = delete;

  int port() const { return port_; }
  // Connections accepted so far, and every command received ("AUTH secret", ...).
  size_t connections() const { return connections_; }
  std::vector<std::string> commands() const;

  // RESP helpers.
  static std::string bulk(const std::string& s);
  static std::string array(const std::vector<std::string>& items);  // items: raw RESP
  static std::string integer(long long n);

 private:
  void serve(int fd);
  Answer answer_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> connections_{0};
  mutable std::mutex mu_;
  std::vector<std::string> commands_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace slimta::testing
