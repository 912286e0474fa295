// The Destinations a DiskStorage keeps under its spool (see destinations.cc).
#pragma once

#include <memory>
#include <string>

#include "slimta/clock.h"
#include "slimta/shaping.h"

namespace slimta::disk {

// State files in `dir`, which must exist.
std::shared_ptr<Destinations> make_destinations(std::string dir, const Clock& clock);

}  // namespace slimta::disk
