#include "support/stall_proxy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>

#include "support/test_util.h"

namespace slimta::testing {

struct StallProxy::Link {
  int client = -1, server = -1;
  bool client_gone = false;  // the client closed its side
  bool closed = false;       // the server closed, or the link ended
  bool deaf = false;
  std::string kept;  // what the client sent while held
};

StallProxy::StallProxy(std::string host, int port) : host_(std::move(host)), target_port_(port) {
  LoopbackListener listener = listen_on_loopback("StallProxy");
  listen_fd_ = listener.fd;
  port_ = listener.port;
  acceptor_ = accept_until(listen_fd_, stop_, [this](int fd) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    std::string port = std::to_string(target_port_);
    int server = -1;
    if (::getaddrinfo(host_ == "localhost" ? "127.0.0.1" : host_.c_str(), port.c_str(), &hints,
                      &res) == 0) {
      server = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (server >= 0 && ::connect(server, res->ai_addr, res->ai_addrlen) != 0) {
        ::close(server);
        server = -1;
      }
      ::freeaddrinfo(res);
    }
    if (server < 0) {
      ::close(fd);
      return;
    }
    auto link = std::make_shared<Link>();
    link->client = fd;
    link->server = server;
    std::lock_guard lock(mu_);
    links_.push_back(link);
    threads_.emplace_back([this, link] { pump(link); });
  });
}

StallProxy::~StallProxy() {
  stop_ = true;
  acceptor_.join();
  for (auto& t : threads_) t.join();
  ::close(listen_fd_);
}

void StallProxy::hold() { holding_ = true; }
void StallProxy::release() {
  holding_ = false;
  cv_.notify_all();
}
void StallProxy::deafen() { deafening_ = true; }
void StallProxy::hear() { deafening_ = false; }

size_t StallProxy::deaf_gone() {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& l : links_) n += l->deaf && l->client_gone;
  return n;
}

size_t StallProxy::gave_up() {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& l : links_) n += l->client_gone && !l->closed && !l->kept.empty();
  return n;
}

bool StallProxy::wait_drained(double seconds) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] {
    for (const auto& l : links_)
      if (l->client_gone && !l->closed) return false;
    return true;
  });
}

namespace {
bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}
}  // namespace

void StallProxy::pump(const std::shared_ptr<Link>& link) {
  char buf[65536];
  bool server_shut = false;  // our write side to the server is shut (client gone, all sent)
  while (!stop_) {
    // What was kept goes first once released.
    if (!holding_) {
      std::string kept;
      {
        std::lock_guard lock(mu_);
        kept.swap(link->kept);
      }
      if (!kept.empty() && !send_all(link->server, kept.data(), kept.size())) break;
      if (link->client_gone && !server_shut) {
        ::shutdown(link->server, SHUT_WR);
        server_shut = true;
      }
    }
    pollfd p[2] = {{link->client_gone ? -1 : link->client, POLLIN, 0}, {link->server, POLLIN, 0}};
    if (::poll(p, 2, 20) <= 0) continue;
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(link->client, buf, sizeof buf, 0);
      if (n <= 0) {
        std::lock_guard lock(mu_);
        link->client_gone = true;
      } else {
        std::lock_guard lock(mu_);
        if (deafening_) link->deaf = true;
        if (holding_ || !link->kept.empty()) {
          link->kept.append(buf, static_cast<size_t>(n));
          held_ += static_cast<size_t>(n);
        } else if (!send_all(link->server, buf, static_cast<size_t>(n))) {
          break;
        }
      }
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(link->server, buf, sizeof buf, 0);
      if (n <= 0) break;
      if (link->deaf) {
        dropped_ += static_cast<size_t>(n);
      } else if (!link->client_gone) {
        send_all(link->client, buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(link->server);
  ::close(link->client);
  {
    std::lock_guard lock(mu_);
    link->closed = true;
    link->client_gone = true;
  }
  cv_.notify_all();
}

}  // namespace slimta::testing
