// slimta-queue as /usr/sbin/sendmail (and mailq): the injector cron, PHP's mail() and
// mailx call. Its options are sendmail's (as Postfix's sendmail(1) reads them); the
// message goes in through the one door (Reception), straight into the storage when
// this process may open it, else over SMTP to the local serve.
#pragma once

#include <istream>
#include <string>
#include <vector>

#include "slimta/envelope.h"

namespace slimta::admin {

struct SendmailArgs {
  enum class Mode { deliver, smtp_on_stdio, list, flush };
  Mode mode = Mode::deliver;
  bool extract = false;      // -t: the recipients from To:, Cc: and Bcc: (Bcc: removed)
  bool ignore_dots = false;  // -i, -oi: a line of one "." does not end the message
  std::string sender;        // -f, -r: the envelope sender ("<>" or "" for the null one)
  bool sender_given = false;
  std::string full_name;  // -F: the From: header's name when one is added
  std::vector<std::string> recipients;
};

// sendmail's command line (argv[0] left out). Options it takes and ignores, as
// Postfix's sendmail does: -B, -N, -O, -o other than -oi, -v, -x, -h, -L, -C, -d.
// InvalidArgument names what it does not know (exit EX_USAGE, 64).
SendmailArgs parse_sendmail_args(const std::vector<std::string>& args);

// The message read from `in` (up to a line of one "." unless -i, at most `max_size`
// octets: InvalidArgument beyond), and its envelope by `args`: the sender given or
// `default_sender`; a From: header added when there is none (with -F's name); the
// recipients given, and with -t those of the headers. InvalidArgument (EX_USAGE) when
// there is no recipient.
Envelope sendmail_envelope(const SendmailArgs& args, std::istream& in,
                           const std::string& default_sender, size_t max_size);

}  // namespace slimta::admin
