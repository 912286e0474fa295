// Whom the operator's tools act as. serve, started as root, becomes its service user
// once its ports are bound; the CLI, run as root on a spool that belongs to that user,
// becomes the spool's owner before it opens it, so that what it rewrites stays the
// service's (issue 34: a root-owned meta/ID wedged serve, which could no longer read
// it). And check-config asks whether the service user can read the files serve reads.
#pragma once

#include <sys/types.h>

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

// Why `who` cannot read `path` ("Permission denied"), or "" when it can: opened as
// `who` (an effective user and groups taken for the call and given back when this
// process is root; opened as itself when it is `who` already).
std::string unreadable_as(const RunAs& who, const std::string& path);

// Of `files` (what names the file, its path; empty paths skipped), those `who` cannot
// read, each with why: {what, path, why}.
struct Unreadable {
  std::string what, path, why;
};
std::vector<Unreadable> unreadable_files(
    const RunAs& who, const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace slimta::admin
