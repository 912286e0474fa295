#include "support/smtp_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

#include "smtp/sasl.h"

namespace slimta::testing {

SmtpClient::SmtpClient(int port, const std::string& source) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (!source.empty()) {
    sockaddr_in from{};
    from.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source.c_str(), &from.sin_addr) != 1 ||
        ::bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) {
      ::close(fd_);
      throw std::runtime_error("cannot bind to " + source);
    }
  }
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

void SmtpClient::SslFree::operator()(ssl_st* s) const { SSL_free(s); }
void SmtpClient::SslFree::operator()(ssl_ctx_st* c) const { SSL_CTX_free(c); }

// One read or write, through TLS once it is on.
long SmtpClient::io(bool write, char* data, size_t n) {
  if (ssl_) {
    int r = write ? SSL_write(ssl_.get(), data, static_cast<int>(n))
                  : SSL_read(ssl_.get(), data, static_cast<int>(n));
    return r;
  }
  return write ? ::send(fd_, data, n, MSG_NOSIGNAL) : ::recv(fd_, data, n, 0);
}

bool SmtpClient::start_tls() {
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);
  ssl_.reset(SSL_new(ctx_.get()));
  SSL_set_fd(ssl_.get(), fd_);
  buf_.clear();
  return SSL_connect(ssl_.get()) == 1;
}

bool SmtpClient::starttls() { return exchange("STARTTLS\r\n") == 220 && start_tls(); }

int SmtpClient::auth_plain(const std::string& user, const std::string& password) {
  return exchange(
      "AUTH PLAIN " +
      smtp::base64_encode(std::string(1, '\0') + user + std::string(1, '\0') + password) + "\r\n");
}

void SmtpClient::send(const std::string& data) {
  for (size_t done = 0; done < data.size();) {
    long n = io(true, const_cast<char*>(data.data()) + done, data.size() - done);
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
      long n = io(false, chunk, sizeof(chunk));
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
  return io(false, &c, 1) == 0;
}

int send_message(int port, const std::string& rcpt) {
  SmtpClient c(port);
  if (int greeting = c.code(); greeting != 220) return greeting;
  c.exchange("EHLO client.example\r\n");
  c.exchange("MAIL FROM:<a@example.com>\r\n");
  if (int code = c.exchange("RCPT TO:<" + rcpt + ">\r\n"); code != 250) return code;
  c.exchange("DATA\r\n");
  return c.exchange("Subject: t\r\n\r\nhi\r\n.\r\n");
}

}  // namespace slimta::testing
