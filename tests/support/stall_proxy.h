// A TCP proxy on loopback in front of a real server (redis-server, moto_server), for the
// tests of a write whose answer is lost or late. It forwards both ways, until told:
//  * hold(): what clients send is kept, not forwarded (the server hears nothing, as
//    when it is paused) until release() forwards it, in order, even for a client that
//    gave up and left meanwhile (as a paused server's kernel keeps what was sent);
//  * deafen(): each connection that sends anything from then on until hear() is cut
//    off from the server's answers for good (the server acts; its answer is lost).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace slimta::testing {

class StallProxy {
 public:
  StallProxy(std::string host, int port);
  ~StallProxy();
  StallProxy(const StallProxy&) = delete;
  StallProxy& operator=(const StallProxy&) = delete;

  int port() const { return port_; }

  void hold();
  void release();
  void deafen();
  void hear();

  // Bytes of answers thrown away since deafen() (the server answered a deaf connection).
  size_t dropped() const { return dropped_; }
  // Bytes kept by hold() so far (what the server has not heard).
  size_t held() const { return held_; }
  // Deaf connections whose client left (gave up waiting for an answer).
  size_t deaf_gone();
  // Connections whose client left while what it sent was held (a client that gave up).
  size_t gave_up();
  // Blocks until every connection whose client left has been forwarded all it sent and
  // closed by the server (which closes only after acting on all it read), at most
  // `seconds`; false if not by then.
  bool wait_drained(double seconds);

 private:
  struct Link;
  void pump(const std::shared_ptr<Link>& link);

  std::string host_;
  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> holding_{false};
  std::atomic<bool> deafening_{false};
  std::atomic<size_t> dropped_{0};
  std::atomic<size_t> held_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Link>> links_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace slimta::testing
