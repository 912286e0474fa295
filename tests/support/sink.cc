#include "support/sink.h"

#include <sstream>
#include <stdexcept>

namespace slimta::testing {

SmtpSink::SmtpSink(const nlohmann::json& rules, const std::string& user,
                   const std::string& password) {
  std::string log = dir_.sub("received.jsonl");
  write_file(log, "");
  // Debian's python3, which has python3-aiosmtpd (not a pyenv one that may not).
  try {
    std::vector<std::string> argv{"/usr/bin/python3", SLIMTA_SOURCE_DIR "/tests/support/sink.py",
                                  "0", log, rules.dump()};
    if (!user.empty()) {
      argv.push_back(user);
      argv.push_back(password);
    }
    process_ = std::make_unique<ChildProcess>(argv, "ready ");
    port_ = port_after("ready ", process_->output());
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("the SMTP sink did not start (python3-aiosmtpd is "
                                         "installed by scripts/install-deps.sh): ") +
                             e.what());
  }
}

SmtpSink::~SmtpSink() = default;

std::vector<nlohmann::json> SmtpSink::received() const {
  std::vector<nlohmann::json> out;
  std::string log = read_file(dir_.sub("received.jsonl"));
  // Only whole lines: the sink may be writing the last one while we read.
  log.resize(log.rfind('\n') == std::string::npos ? 0 : log.rfind('\n') + 1);
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

}  // namespace slimta::testing
