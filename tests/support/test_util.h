// Helpers shared by the tests.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimta/envelope.h"
#include "slimta/storage.h"

namespace slimta {
// How GoogleTest prints a recipient's stored reply in a failed expectation.
void PrintTo(const RecipientFailure& f, std::ostream* os);
void PrintTo(const RecipientReply& r, std::ostream* os);
}  // namespace slimta

namespace slimta::testing {

// A fresh directory under `under`, else $TMPDIR (or /tmp), removed with its contents on
// destruction.
// The bearer token tests give serve --http (/api/ needs one), and the file that holds
// it: write_http_token(dir) writes dir/http-token and returns its path.
inline constexpr const char* kHttpToken = "test-token-0123456789abcdef";
class TempDir;
std::string write_http_token(const TempDir& dir);

class TempDir {
 public:
  explicit TempDir(const std::string& under = "");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }
  // Leaves the directory in place at destruction (its new owner removes it).
  void keep() { keep_ = true; }

 private:
  std::string path_;
  bool keep_ = false;
};

// The server `name` ("redis", "redis_password", "moto") that ctest's test_servers
// fixture started for the whole run, as the fixture described it (port, pid, dir), when
// $SLIMTA_TEST_SERVERS names its file; nullopt outside ctest.
std::optional<nlohmann::json> test_server(const std::string& name);

// An envelope with every field set, recipients "rcpt0@example.org".."rcpt{n-1}@...",
// and a body of `body_size` bytes that includes NUL, CR, LF and 8-bit bytes.
Envelope sample_envelope(size_t recipients = 3, size_t body_size = 1024, unsigned seed = 1);

// Polls `pred` every 50 ms until it holds or `limit` passes; its last answer.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  for (auto end = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < end;
       std::this_thread::sleep_for(std::chrono::milliseconds(50))) {
    if (pred()) return true;
  }
  return pred();
}

// Peak resident memory (VmHWM, /proc) of a process, in bytes; 0 if it is gone.
size_t peak_rss(int pid);

// A TCP port on 127.0.0.1 that was free a moment ago. Racy (another process may take
// it before it is bound): servers the tests start bind port 0 and report the port they
// got, read back with port_after() / listening_ports(); HAProxy takes over sockets the
// test bound. Left: RedisServer (which retries when it loses the race) and the tests of
// a relay routed to its own port, which must be known before serve binds it.
int free_port();

// The number after the first `marker` in `text` (e.g. "ready 41234"); throws if none.
int port_after(const std::string& marker, const std::string& text);
// The ports of "slimta-queue serve: listening on 127.0.0.1:P (smtp), ..." in `output`,
// in the order of the listeners (serve was given port 0).
std::vector<int> listening_ports(const std::string& output);
// The port of serve's "HOST:PORT (http)" listener in `output`, or -1.
int http_port(const std::string& output);

// A socket listening on 127.0.0.1 on a free port (close `fd` when done); throws
// std::runtime_error naming `who` if it cannot.
struct LoopbackListener {
  int fd = -1;
  int port = 0;
};
LoopbackListener listen_on_loopback(const std::string& who, int backlog = 64);
// A thread that accepts the connections of `listen_fd` and hands each one's socket to
// `on_client`, until `stop` (checked every 50 ms).
std::thread accept_until(int listen_fd, const std::atomic<bool>& stop,
                         std::function<void(int fd)> on_client);

// A TCP port on 127.0.0.1 where nothing listens, for as long as this object lives: its
// socket is bound but not listening, so every connection is refused and no other
// process can take the port meanwhile.
class ClosedPort {
 public:
  ClosedPort();
  ~ClosedPort();
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};
// One ClosedPort for the whole test process.
const ClosedPort& closed_port();

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);

// What write_in_child_and_wait() saw.
struct CrossProcessWait {
  std::set<std::string> written;    // ids the child's write() returned
  std::map<std::string, int> seen;  // how many times wait() reported each id
  bool child_ok = false;            // the child wrote everything and exited 0
  size_t wrong_timestamps = 0;      // reports whose timestamp was not one written
};
// Forks a child that opens its own storage with `open_writer` and writes `count`
// messages (timestamps 100 + i); meanwhile calls waiter.wait(poll) until every id was
// seen or `limit` passed.
CrossProcessWait write_in_child_and_wait(
    QueueStorage& waiter, const std::function<std::unique_ptr<QueueStorage>()>& open_writer,
    int count, std::chrono::milliseconds poll, std::chrono::seconds limit);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Variables added to (or replacing those of) a child's environment; the tests' own
// environment is never changed.
using Environment = std::map<std::string, std::string>;

// argv (no shell) and the environment plus `env`, made ready for execvpe() before
// fork(): the child of a process with threads must not allocate (another thread may have
// held the allocator's lock at the fork, and the child would wait for it forever).
class Exec {
 public:
  Exec(const std::vector<std::string>& argv, const Environment& env = {});
  Exec(const Exec&) = delete;
  Exec& operator=(const Exec&) = delete;
  // In the child: becomes argv, or exits 127 if it cannot be run.
  [[noreturn]] void run() const;

 private:
  std::vector<std::string> argv_, vars_;
  std::vector<char*> args_, envp_;
};

// Runs argv (no shell) with `input` on stdin; waits for it.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& input = "",
                          const Environment& env = {});

// A program running beside the test (a server). Its stdout is read up to a line
// containing `ready` (when not empty): the constructor throws, naming the program and
// what it printed, if the program ends first. Stderr is inherited. The destructor
// SIGTERMs and reaps it if the test did not.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& argv, const std::string& ready = "",
                        const Environment& env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  int pid() const { return pid_; }
  // Sends `sig` and waits; returns the wait status (WIFEXITED/WEXITSTATUS apply).
  int stop(int sig);
  // Waits for it to end by itself; returns the wait status.
  int wait() { return stop(0); }
  // What stdout said up to the end of the ready line.
  const std::string& output() const { return output_; }

 private:
  int pid_ = -1;
  std::string output_;
  std::thread drain_;
};

}  // namespace slimta::testing
