// A blocking SMTP client for the tests and benchmarks: raw bytes out, whole replies in,
// so that tests can send anything (pipelined batches, garbage) and read what comes back.
#pragma once

#include <memory>
#include <string>

struct ssl_st;
struct ssl_ctx_st;

namespace slimta::testing {

class SmtpClient {
 public:
  // Connects to 127.0.0.1:port, from `source` (a loopback address) when given; reads
  // wait at most 10 s. Throws if it cannot connect.
  explicit SmtpClient(int port, const std::string& source = "");
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

  // STARTTLS (true once the handshake is done), or TLS at once on an implicit-TLS
  // port (start_tls()). The server's certificate is not checked: a load generator.
  bool starttls();
  bool start_tls();
  // AUTH PLAIN with an initial response; the reply code.
  int auth_plain(const std::string& user, const std::string& password);

 private:
  struct SslFree {
    void operator()(ssl_st* s) const;
    void operator()(ssl_ctx_st* c) const;
  };
  long io(bool write, char* data, size_t n);

  int fd_;
  std::string buf_;
  std::unique_ptr<ssl_ctx_st, SslFree> ctx_;
  std::unique_ptr<ssl_st, SslFree> ssl_;
};

// One short message from a@example.com to `rcpt` on a new connection to 127.0.0.1:port:
// the code of the reply that ends its DATA, or of the greeting or RCPT that refused it.
int send_message(int port, const std::string& rcpt = "b@example.org");

}  // namespace slimta::testing
