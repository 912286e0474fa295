// The text form of Counters kept by the disk and cloud backends: one "NAME COUNT" line
// per counter, names sorted. Plain text so an operator can read it with cat.
#pragma once

#include <string>
#include <string_view>

#include "slimta/storage.h"

namespace slimta {

std::string format_counters(const Counters& counters);
// Lines that do not parse are logged (naming `what`) and skipped: counters are
// statistics, and a torn file must not stop the queue.
Counters parse_counters(std::string_view text, std::string_view what);

}  // namespace slimta
