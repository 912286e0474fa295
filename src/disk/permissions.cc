#include "disk/permissions.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdio>

#include "slimta/errors.h"

namespace slimta::disk {

void check_permissions(const std::string& path, const std::string& what, FileUse use) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  if (st.st_mode & S_IWOTH) {
    throw InvalidArgument(what + " '" + path + "': any user may change it (mode " + mode +
                          "); refused: chmod o-w it");
  }
  if (use == FileUse::secret && (st.st_mode & S_IROTH)) {
    spdlog::warn("{} '{}': any user may read this secret (mode {}): chmod o-r it", what, path,
                 mode);
  }
}

}  // namespace slimta::disk
