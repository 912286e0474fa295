#include "admin/audit.h"

#include <pwd.h>
#include <syslog.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "slimta/ascii.h"

namespace slimta::admin {

bool changes_something(std::string_view command) {
  static constexpr std::array<std::string_view, 9> kChanging{
      "enqueue", "retry", "remove", "hold", "release", "bounce", "suspend", "resume", "passwd"};
  for (auto c : kChanging)
    if (c == command) return true;
  return false;
}

std::string invoking_user() {
  uid_t uid = ::getuid();
  const passwd* pw = ::getpwuid(uid);
  std::string name = pw ? pw->pw_name : "uid " + std::to_string(uid);
  if (const char* sudo = std::getenv("SUDO_USER"); sudo && *sudo)
    name += std::string(" (sudo by ") + sudo + ")";
  return name;
}

void audit(std::string_view user, std::string_view command, std::string_view said, int status) {
  std::string compact;  // --json output: one line
  if (said.starts_with('[') || said.starts_with('{')) {
    if (auto j = nlohmann::json::parse(said, nullptr, /*allow_exceptions=*/false);
        !j.is_discarded()) {
      compact = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      said = compact;
    }
  }
  ::openlog("slimta-queue", LOG_PID, LOG_MAIL);
  const std::string who = "cli: " + printable(user) + " " + printable(command) + ": ";
  bool any = false;
  while (!said.empty()) {
    size_t eol = said.find('\n');
    std::string_view line = said.substr(0, eol);
    said.remove_prefix(eol == std::string_view::npos ? said.size() : eol + 1);
    if (line.empty()) continue;
    ::syslog(LOG_INFO, "%s", (who + printable(line)).c_str());
    any = true;
  }
  if (!any) ::syslog(LOG_INFO, "%s", (who + "exit " + std::to_string(status)).c_str());
  ::closelog();
}

}  // namespace slimta::admin
