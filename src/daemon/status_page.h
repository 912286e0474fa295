// The status page serve shows at / with --http: plain HTML and inline SVG from the
// binary, no script and nothing fetched from anywhere (its CSP forbids it), refreshed
// by the browser every 30 s.
#pragma once

#include <string>

#include "gauges.h"

namespace slimta::daemon {

// The whole page, from the last background scan and this process's last hour.
std::string status_page(const QueueSnapshot& queue, Activity& activity,
                        const std::string& hostname);

}  // namespace slimta::daemon
