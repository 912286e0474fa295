// What an operator's command changed, as a line in the system log beside serve's own
// (issue 34: CLI actions left no audit trail). Postfix's postsuper does the same: one
// syslog line per change, facility mail. The packaged unit gives serve's lines the same
// identifier and facility (SyslogIdentifier=slimta-queue, SyslogFacility=mail), so that
// `journalctl -t slimta-queue` and /var/log/mail.log show both, in order. The HTTP
// API's changes go to serve's log directly (daemon/http_routes.cc).
#pragma once

#include <string>
#include <string_view>

namespace slimta::admin {

// Whether `command` (a slimta-queue subcommand) changes the queue, its destinations or
// its users: the ones audited.
bool changes_something(std::string_view command);

// Who runs this process: the real user's name ("uid N" without one), and the user who
// called sudo when SUDO_USER is set ("root (sudo by alice)"). Ask before become().
std::string invoking_user();

// Logs to syslog (ident "slimta-queue", facility mail) one line per line of `said`
// (what the command printed: "ID: held", ...), or one line with the exit status when it
// printed nothing: "cli: USER COMMAND: LINE"; JSON output as one compact line. Every
// value escaped (printable()).
void audit(std::string_view user, std::string_view command, std::string_view said, int status);

}  // namespace slimta::admin
