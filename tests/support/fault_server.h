// An in-process HTTP server that plays a minimal S3 (PUT/GET/DELETE of objects, with
// ETags and If-None-Match / If-Match) and SQS SendMessage, and misbehaves on request: scripted
// faults are served first, in order, one per request. For the error-handling tests; the real API
// tests run against moto_server.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace slimta::testing {

class FaultServer {
 public:
  struct Fault {
    enum Kind { kStatus, kSlow, kDrop, kTruncate, kPass } kind = kStatus;
    int status = 500;
    std::string body;                    // for kStatus
    std::chrono::milliseconds delay{0};  // for kSlow: then it answers normally

    static Fault status_code(int code, std::string body) {
      Fault f;
      f.status = code;
      f.body = std::move(body);
      return f;
    }
    static Fault slow(std::chrono::milliseconds delay) {
      Fault f;
      f.kind = kSlow;
      f.delay = delay;
      return f;
    }
    static Fault pass() {  // answer this request normally
      Fault f;
      f.kind = kPass;
      return f;
    }
    static Fault drop() {
      Fault f;
      f.kind = kDrop;
      return f;
    }
    static Fault truncate() {
      Fault f;
      f.kind = kTruncate;
      return f;
    }
  };
  struct Seen {
    std::string method, path;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
  };

  FaultServer();
  ~FaultServer();
  FaultServer(const FaultServer&) = delete;
  FaultServer& operator=(const FaultServer&) = delete;

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void add_fault(Fault f);
  std::vector<Seen> requests();
  std::map<std::string, std::string> objects();  // path -> body

 private:
  void serve();
  void handle(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::deque<Fault> faults_;
  std::vector<Seen> seen_;
  std::map<std::string, std::string> objects_;
  int etag_counter_ = 0;
  std::map<std::string, std::string> etags_;
};

}  // namespace slimta::testing
