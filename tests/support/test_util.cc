#include "support/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace slimta {

void PrintTo(const RecipientFailure& f, std::ostream* os) {
  *os << "{" << f.index << ", \"" << f.reply << "\"" << (f.bounced ? ", bounced}" : "}");
}

void PrintTo(const RecipientReply& r, std::ostream* os) {
  *os << "{" << r.index << ", \"" << r.reply << "\"}";
}

}  // namespace slimta

namespace slimta::testing {

TempDir::TempDir(const std::string& under) {
  const char* env = std::getenv("TMPDIR");
  std::string base = !under.empty() ? under : env && *env ? env : "/tmp";
  std::string tmpl = base + "/slimta-test-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::optional<nlohmann::json> test_server(const std::string& name) {
  const char* file = std::getenv("SLIMTA_TEST_SERVERS");
  if (!file || !*file) return std::nullopt;
  nlohmann::json all = nlohmann::json::parse(read_file(file));  // throws if unreadable
  if (!all.contains(name)) throw std::runtime_error(std::string(file) + " has no " + name);
  return all.at(name);
}

Envelope sample_envelope(size_t recipients, size_t body_size, unsigned seed) {
  Envelope env;
  env.sender = "sender" + std::to_string(seed) + "@example.com";
  for (size_t i = 0; i < recipients; ++i) {
    env.recipients.push_back("rcpt" + std::to_string(i) + "@example.org");
  }
  env.client = ClientInfo{"192.0.2.7", "mail.example.com", "mail.example.com", "ESMTPS", "alice"};
  env.receiver = "mx.example.net";
  env.timestamp = 1700000000.25 + seed;
  env.headers.add("From", "Sender <" + env.sender + ">");
  env.headers.add("To", "rcpt0@example.org");
  env.headers.add("Subject", "test message " + std::to_string(seed));
  std::string body;
  body.reserve(body_size);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < body_size; ++i) {
    x = x * 1103515245u + 12345u;
    body.push_back(static_cast<char>((x >> 16) & 0xFF));
  }
  if (body_size >= 4) body.replace(0, 4, std::string("\0\r\n\xff", 4));
  env.body = std::move(body);
  return env;
}

size_t peak_rss(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("VmHWM:")) return std::stoul(line.substr(6)) * 1024;
  }
  return 0;
}

int port_after(const std::string& marker, const std::string& text) {
  size_t at = text.find(marker);
  int port = at == std::string::npos ? 0 : std::atoi(text.c_str() + at + marker.size());
  if (port <= 0) throw std::runtime_error("no port after '" + marker + "' in: " + text);
  return port;
}

int http_port(const std::string& output) {
  size_t at = output.find(" (http)");
  if (at == std::string::npos) return -1;
  size_t colon = output.rfind(':', at);
  return std::stoi(output.substr(colon + 1, at - colon - 1));
}

std::vector<int> listening_ports(const std::string& output) {
  std::string line = output.substr(output.find("listening on "));
  line = line.substr(0, line.find('\n'));
  std::vector<int> ports;
  for (size_t at = line.find(':'); at != std::string::npos; at = line.find(':', at + 1)) {
    int port = std::atoi(line.c_str() + at + 1);
    if (port > 0) ports.push_back(port);
  }
  if (ports.empty()) throw std::runtime_error("no listening port in: " + output);
  return ports;
}

LoopbackListener listen_on_loopback(const std::string& who, int backlog) {
  LoopbackListener l;
  l.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (l.fd < 0 || ::bind(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(l.fd, backlog) != 0 ||
      ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (l.fd >= 0) ::close(l.fd);
    throw std::runtime_error(who + ": cannot listen on 127.0.0.1");
  }
  l.port = ntohs(a.sin_port);
  return l;
}

std::thread accept_until(int listen_fd, const std::atomic<bool>& stop,
                         std::function<void(int fd)> on_client) {
  return std::thread([listen_fd, &stop, on_client = std::move(on_client)] {
    while (!stop) {
      pollfd p{listen_fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) on_client(fd);
    }
  });
}

ClosedPort::ClosedPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot bind a port on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
}

ClosedPort::~ClosedPort() {
  if (fd_ >= 0) ::close(fd_);
}

const ClosedPort& closed_port() {
  static ClosedPort port;
  return port;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path);
}

CrossProcessWait write_in_child_and_wait(
    QueueStorage& waiter, const std::function<std::unique_ptr<QueueStorage>()>& open_writer,
    int count, std::chrono::milliseconds poll, std::chrono::seconds limit) {
  int ids_pipe[2];
  if (::pipe(ids_pipe) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ids_pipe[0]);
    int rc = 0;
    try {
      auto storage = open_writer();
      for (int i = 0; i < count; ++i) {
        std::string line =
            storage->write(sample_envelope(1, 100, static_cast<unsigned>(i)), 100 + i) + "\n";
        if (::write(ids_pipe[1], line.data(), line.size()) != static_cast<ssize_t>(line.size()))
          rc = 2;
      }
    } catch (...) {
      rc = 1;
    }
    ::_exit(rc);
  }
  ::close(ids_pipe[1]);
  std::string all;
  std::thread reader([&] {  // the child must never block on a full pipe
    char buf[65536];
    for (ssize_t n; (n = ::read(ids_pipe[0], buf, sizeof(buf))) > 0;)
      all.append(buf, static_cast<size_t>(n));
  });
  CrossProcessWait result;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (result.seen.size() < static_cast<size_t>(count) &&
         std::chrono::steady_clock::now() < deadline) {
    for (const auto& e : waiter.wait(poll)) {
      if (e.timestamp < 100) ++result.wrong_timestamps;
      ++result.seen[e.id];
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  reader.join();
  ::close(ids_pipe[0]);
  result.child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  for (size_t pos = 0, nl; (nl = all.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    result.written.insert(all.substr(pos, nl - pos));
  }
  return result;
}

Exec::Exec(const std::vector<std::string>& argv, const Environment& env) : argv_(argv) {
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (!env.count(kv.substr(0, kv.find('=')))) vars_.push_back(std::move(kv));
  }
  for (const auto& [k, v] : env) vars_.push_back(k + "=" + v);
  for (auto& a : argv_) args_.push_back(a.data());
  args_.push_back(nullptr);
  for (auto& kv : vars_) envp_.push_back(kv.data());
  envp_.push_back(nullptr);
}

void Exec::run() const {
  ::execvpe(args_[0], args_.data(), envp_.data());
  ::_exit(127);
}

CommandResult run_command(const std::vector<std::string>& argv, const std::string& input,
                          const Environment& env) {
  ::signal(SIGPIPE, SIG_IGN);  // a child that exits early must not kill the test
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) || ::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC)) {
    throw std::runtime_error("pipe failed");
  }
  Exec exec(argv, env);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    exec.run();
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  CommandResult result;
  size_t written = 0;
  int in_fd = in_pipe[1];
  if (input.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  bool out_open = true, err_open = true;
  char buf[65536];
  while (out_open || err_open || in_fd >= 0) {
    pollfd fds[3] = {{out_open ? out_pipe[0] : -1, POLLIN, 0},
                     {err_open ? err_pipe[0] : -1, POLLIN, 0},
                     {in_fd, POLLOUT, 0}};
    if (::poll(fds, 3, -1) < 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents) {
        ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          (i == 0 ? out_open : err_open) = false;
        } else {
          (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
        }
      }
    }
    if (in_fd >= 0 && fds[2].revents) {
      ssize_t n = ::write(in_fd, input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 || written == input.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::string& ready,
                           const Environment& env) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  Exec exec(argv, env);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // Never outlive a crashed test: it would hold ctest's pipe open, and ctest wait.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!ready.empty()) ::dup2(out[1], 1);
    exec.run();
  }
  ::close(out[1]);
  if (!ready.empty()) {
    char c;
    // Up to the end of the line that holds `ready`.
    size_t at = std::string::npos;
    while ((at == std::string::npos || output_.find('\n', at) == std::string::npos) &&
           ::read(out[0], &c, 1) == 1) {
      output_ += c;
      if (at == std::string::npos) at = output_.find(ready);
    }
  }
  // The rest of stdout is drained (and dropped) until the program ends, so that it
  // never blocks on, or dies of, a full or closed pipe.
  int fd = out[0];
  drain_ = std::thread([fd] {
    char buf[4096];
    while (::read(fd, buf, sizeof(buf)) > 0) {
    }
    ::close(fd);
  });
  if (!ready.empty() && output_.find(ready) == std::string::npos) {
    int status = stop(SIGKILL);
    throw std::runtime_error(argv[0] + " ended (status " + std::to_string(status) +
                             ") before saying '" + ready + "'; it printed: " + output_);
  }
}

int ChildProcess::stop(int sig) {
  if (pid_ <= 0) return -1;
  if (sig != 0) ::kill(pid_, sig);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  if (drain_.joinable()) drain_.join();
  return status;
}

ChildProcess::~ChildProcess() { stop(SIGTERM); }

std::string write_http_token(const TempDir& dir) {
  std::string path = dir.sub("http-token");
  write_file(path, std::string(kHttpToken) + "\n");
  return path;
}

}  // namespace slimta::testing
