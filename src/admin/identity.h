// Whom the operator's tools act as. serve, started as root, becomes its service user
// once its ports are bound; the CLI, run as root on a spool that belongs to that user,
// becomes the spool's owner before it opens it, so that what it rewrites stays the
// service's (issue 34: a root-owned meta/ID wedged serve, which could no longer read
// it). And check-config asks whether the service user can read the files serve reads.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slimta::admin {

struct RunAs {
  std::string name;  // the user's name, or "uid N" for a uid without one
  uid_t uid = 0;
  gid_t gid = 0;
};

// Becomes `who` for good: its supplementary groups, its group, then its user; checks
// that root cannot be taken back. Throws QueueError naming the user and the error.
void become(const RunAs& who);

// The owner of the disk spool `storage_url` names, when this process runs as root and
// that spool exists and belongs to another user (its group: the spool directory's).
// nullopt otherwise (another scheme, no spool yet, a root-owned spool, not root).
std::optional<RunAs> spool_owner(std::string_view storage_url);

// Why `who` cannot access `path` with `mode` (access(2)'s R_OK, W_OK, X_OK), e.g.
// "Permission denied", or "" when it can: asked as `who` (an effective user and groups
// taken for the call and given back when this process is root; as itself when it is
// `who` already).
std::string access_error_as(const RunAs& who, const std::string& path, int mode);
inline std::string unreadable_as(const RunAs& who, const std::string& path) {
  return access_error_as(who, path, R_OK);
}

// serve started as root runs as `who` once its ports are bound, and then opens (or
// makes) the disk spool `storage_url` names: InvalidArgument naming the spool, the user
// and the fix when `who` could not (issue 34: the demo's ./spool, root's, under /root).
// Nothing for another scheme.
void check_spool_access(const RunAs& who, std::string_view storage_url);

// Of `files` (what names the file, its path; empty paths skipped), those `who` cannot
// read, each with why: {what, path, why}.
struct Unreadable {
  std::string what, path, why;
};
std::vector<Unreadable> unreadable_files(
    const RunAs& who, const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace slimta::admin
