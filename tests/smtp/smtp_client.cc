#include "smtp/smtp_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace slimta::testing {

SmtpClient::SmtpClient(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd_);
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  }
}

SmtpClient::~SmtpClient() { ::close(fd_); }

void SmtpClient::send(const std::string& data) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

std::string SmtpClient::reply() {
  std::string out;
  while (true) {
    size_t nl = buf_.find('\n');
    if (nl == std::string::npos) {
      char chunk[4096];
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return out;
      buf_.append(chunk, static_cast<size_t>(n));
      continue;
    }
    std::string line = buf_.substr(0, nl + 1);
    buf_.erase(0, nl + 1);
    out += line;
    if (line.size() < 4 || line[3] != '-') return out;
  }
}

int SmtpClient::code() {
  std::string r = reply();
  return r.size() >= 3 ? std::stoi(r.substr(0, 3)) : -1;
}

int SmtpClient::exchange(const std::string& data) {
  send(data);
  return code();
}

bool SmtpClient::closed() {
  char c;
  return ::recv(fd_, &c, 1, 0) == 0;
}

}  // namespace slimta::testing
