#include "support/fake_redis.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

#include "support/test_util.h"

namespace slimta::testing {

namespace {

// Reads one RESP array of bulk strings (a command) from `fd`, buffered in `buf`;
// false at end of stream or on anything else.
bool read_command(int fd, std::string& buf, std::vector<std::string>& out,
                  const std::atomic<bool>& stop) {
  auto fill = [&] {
    while (!stop) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char chunk[4096];
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return false;
      buf.append(chunk, static_cast<size_t>(n));
      return true;
    }
    return false;
  };
  auto line = [&](std::string& l) {
    size_t end;
    while ((end = buf.find("\r\n")) == std::string::npos)
      if (!fill()) return false;
    l = buf.substr(0, end);
    buf.erase(0, end + 2);
    return true;
  };
  std::string l;
  if (!line(l) || l.empty() || l[0] != '*') return false;
  int n = std::stoi(l.substr(1));
  out.clear();
  for (int i = 0; i < n; ++i) {
    if (!line(l) || l.empty() || l[0] != '$') return false;
    size_t len = std::stoul(l.substr(1));
    while (buf.size() < len + 2)
      if (!fill()) return false;
    out.push_back(buf.substr(0, len));
    buf.erase(0, len + 2);
  }
  return true;
}

}  // namespace

FakeRedis::FakeRedis(Answer answer) : answer_(std::move(answer)) {
  LoopbackListener listener = listen_on_loopback("FakeRedis", 16);
  listen_fd_ = listener.fd;
  port_ = listener.port;
  acceptor_ = accept_until(listen_fd_, stop_, [this](int fd) {
    ++connections_;
    std::lock_guard lock(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  });
}

FakeRedis::~FakeRedis() {
  stop_ = true;
  acceptor_.join();
  for (auto& t : threads_) t.join();
  for (int fd : fds_) ::close(fd);
  ::close(listen_fd_);
}

void FakeRedis::serve(int fd) {
  std::string buf;
  std::vector<std::string> command;
  while (read_command(fd, buf, command, stop_)) {
    std::string text;
    for (const auto& a : command) text += (text.empty() ? "" : " ") + a;
    {
      std::lock_guard lock(mu_);
      commands_.push_back(text);
    }
    std::string reply = answer_(command);
    if (::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) < 0) return;
  }
}

std::vector<std::string> FakeRedis::commands() const {
  std::lock_guard lock(mu_);
  return commands_;
}

std::string FakeRedis::bulk(const std::string& s) {
  return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}

std::string FakeRedis::array(const std::vector<std::string>& items) {
  std::string out = "*" + std::to_string(items.size()) + "\r\n";
  for (const auto& i : items) out += i;
  return out;
}

std::string FakeRedis::integer(long long n) { return ":" + std::to_string(n) + "\r\n"; }

}  // namespace slimta::testing
