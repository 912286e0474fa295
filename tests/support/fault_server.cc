#include "support/fault_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <stdexcept>

namespace slimta::testing {
namespace {

void send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

std::string response(int status, const std::string& body, const std::string& extra_headers = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         extra_headers + "\r\n" + body;
}

}  // namespace

FaultServer::FaultServer() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("fault server: cannot listen");
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

FaultServer::~FaultServer() {
  stop_ = true;
  thread_.join();
  ::close(listen_fd_);
}

void FaultServer::add_fault(Fault f) {
  std::lock_guard lock(mu_);
  faults_.push_back(std::move(f));
}

std::vector<FaultServer::Seen> FaultServer::requests() {
  std::lock_guard lock(mu_);
  return seen_;
}

std::map<std::string, std::string> FaultServer::objects() {
  std::lock_guard lock(mu_);
  return objects_;
}

// One connection at a time, one request per connection (Connection: close), which is
// all the error tests need.
void FaultServer::serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    handle(fd);
    ::close(fd);
  }
}

void FaultServer::handle(int fd) {
  std::string data;
  char buf[65536];
  size_t header_end = std::string::npos;
  size_t need = 0;
  while (true) {
    if (header_end == std::string::npos) {
      header_end = data.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        std::string lower = data.substr(0, header_end);
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        size_t cl = lower.find("content-length:");
        need = cl == std::string::npos ? 0 : std::stoul(data.substr(cl + 15));
      }
    }
    if (header_end != std::string::npos && data.size() >= header_end + 4 + need) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return;
    data.append(buf, static_cast<size_t>(n));
  }
  Seen req;
  size_t sp1 = data.find(' '), sp2 = data.find(' ', sp1 + 1);
  req.method = data.substr(0, sp1);
  req.path = data.substr(sp1 + 1, sp2 - sp1 - 1);
  size_t line = data.find("\r\n") + 2;
  while (line < header_end) {
    size_t eol = data.find("\r\n", line);
    std::string h = data.substr(line, eol - line);
    size_t colon = h.find(':');
    std::string name = h.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    size_t v = h.find_first_not_of(' ', colon + 1);
    req.headers[name] = v == std::string::npos ? "" : h.substr(v);
    line = eol + 2;
  }
  req.body = data.substr(header_end + 4, need);

  std::optional<Fault> fault;
  {
    std::lock_guard lock(mu_);
    seen_.push_back(req);
    if (!faults_.empty()) {
      fault = faults_.front();
      faults_.pop_front();
    }
  }
  if (fault) {
    switch (fault->kind) {
      case Fault::kStatus:
        send_all(fd, response(fault->status, fault->body));
        return;
      case Fault::kDrop:
        return;
      case Fault::kTruncate:
        send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nETag: \"t\"\r\n\r\npartial");
        return;
      case Fault::kSlow:
        std::this_thread::sleep_for(fault->delay);
        break;  // then answer normally
      case Fault::kPass:
        break;
    }
  }
  std::lock_guard lock(mu_);
  const std::string& path = req.path;
  if (req.method == "PUT") {
    bool exists = objects_.count(path) > 0;
    auto inm = req.headers.find("if-none-match");
    auto im = req.headers.find("if-match");
    if ((inm != req.headers.end() && exists) ||
        (im != req.headers.end() && (!exists || etags_[path] != im->second))) {
      send_all(fd, response(412, "<Error><Code>PreconditionFailed</Code></Error>"));
      return;
    }
    objects_[path] = req.body;
    etags_[path] = "\"e" + std::to_string(++etag_counter_) + "\"";
    send_all(fd, response(200, "", "ETag: " + etags_[path] + "\r\n"));
  } else if (req.method == "GET") {
    auto it = objects_.find(path);
    if (it == objects_.end()) {
      send_all(fd, response(404, "<Error><Code>NoSuchKey</Code></Error>"));
    } else {
      send_all(fd, response(200, it->second, "ETag: " + etags_[path] + "\r\n"));
    }
  } else if (req.method == "POST" && req.headers["x-amz-target"] == "AmazonSQS.SendMessage") {
    send_all(fd, response(200, R"({"MessageId":"m1"})"));
  } else if (req.method == "DELETE") {
    objects_.erase(path);
    send_all(fd, response(204, ""));
  } else {
    send_all(fd, response(400, "<Error><Code>Unsupported</Code></Error>"));
  }
}

}  // namespace slimta::testing
