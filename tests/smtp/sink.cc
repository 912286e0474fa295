#include "smtp/sink.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>
#include <stdexcept>

extern char** environ;

namespace slimta::testing {

SmtpSink::SmtpSink(const nlohmann::json& rules) : port_(free_port()) {
  std::string log = dir_.sub("received.jsonl");
  write_file(log, "");
  int out[2];
  if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  // Debian's python3, which has python3-aiosmtpd (not a pyenv one that may not).
  std::vector<std::string> args = {"/usr/bin/python3", SLIMTA_SOURCE_DIR "/tests/smtp/sink.py",
                                   std::to_string(port_), log, rules.dump()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    throw std::runtime_error("cannot start /usr/bin/python3 tests/smtp/sink.py");
  }
  std::string got;
  char c;
  while (got.find("ready\n") == std::string::npos && ::read(out[0], &c, 1) == 1) got += c;
  ::close(out[0]);
  if (got.find("ready\n") == std::string::npos) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    throw std::runtime_error(
        "the SMTP sink did not start (is python3-aiosmtpd installed? scripts/install-deps.sh "
        "installs it)");
  }
}

SmtpSink::~SmtpSink() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

std::vector<nlohmann::json> SmtpSink::received() const {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_file(dir_.sub("received.jsonl")));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

}  // namespace slimta::testing
