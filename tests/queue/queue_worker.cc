// A queue process for the multi-process tests: runs a Queue on a storage URL with a
// relay that appends "SEQ PID" to a log (one write() per line, O_APPEND) for each
// message it delivers, SEQ being the message's X-Test-Seq header. Stops cleanly on
// SIGTERM (Queue::stop()).
//
//   queue_worker STORAGE_URL LOG WORKERS LEASE_MS RELAY_DELAY_MS
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "slimta/open_storage.h"
#include "slimta/queue.h"

namespace {

class RecordingRelay : public slimta::Relay {
 public:
  RecordingRelay(int fd, std::chrono::milliseconds delay) : fd_(fd), delay_(delay) {}

  std::vector<slimta::RecipientResult> attempt(const slimta::Envelope& env, uint32_t) override {
    std::string line =
        env.headers.get("X-Test-Seq").value_or("?") + " " + std::to_string(::getpid()) + "\n";
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::runtime_error("cannot write the delivery log");
    // After the delivery, before the queue records it: a process killed now has
    // delivered messages it has not removed (the window the kill test probes).
    std::this_thread::sleep_for(delay_);
    return std::vector<slimta::RecipientResult>(env.recipients.size(),
                                                slimta::RecipientResult::delivered());
  }

 private:
  int fd_;
  std::chrono::milliseconds delay_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: queue_worker STORAGE_URL LOG WORKERS LEASE_MS RELAY_DELAY_MS\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread starts

  int fd = ::open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0) {
    std::perror(argv[2]);
    return 1;
  }
  try {
    auto storage = slimta::open_storage(argv[1]);
    RecordingRelay relay(fd, std::chrono::milliseconds(std::stoi(argv[5])));
    slimta::QueuePolicy policy;
    policy.workers = static_cast<size_t>(std::stoi(argv[3]));
    policy.lease = std::chrono::milliseconds(std::stoi(argv[4]));
    policy.counters_interval = 0.5;
    slimta::Queue queue(*storage, relay, policy);
    queue.start();
    int sig = 0;
    sigwait(&set, &sig);
    queue.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "queue_worker: %s\n", e.what());
    return 1;
  }
  return 0;
}
