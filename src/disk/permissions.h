// What a file's mode says about who may change or read it, checked before serve or the
// CLI uses it: a file every local user may write is refused (whoever writes the config,
// the users or a key runs the relay), and a secret every local user may read is used
// with a warning. The files are an operator's, not the spool's: this is here because
// the disk layer is where POSIX file access lives.
#pragma once

#include <string>

namespace slimta::disk {

enum class FileUse {
  setting,  // the config file: refused when any user may write it
  secret,   // a key, password, token or users file: refused when any user may write
            // it, a warning when any user may read it
};

// Checks `path`'s mode (of the file a link points to); `what` names it in messages
// ("--users", "config file"). Throws InvalidArgument for a file any user may write. A
// file that cannot be stat()ed is left to the caller's own read, and its error.
void check_permissions(const std::string& path, const std::string& what, FileUse use);

}  // namespace slimta::disk
