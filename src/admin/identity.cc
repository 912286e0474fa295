#include "admin/identity.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "slimta/errors.h"
#include "slimta/open_storage.h"

namespace slimta::admin {

namespace {

// The supplementary groups `who` has by the group database (its own group among them).
std::vector<gid_t> groups_of(const RunAs& who) {
  const struct passwd* pw = ::getpwuid(who.uid);
  if (!pw) return {who.gid};
  int n = 32;
  std::vector<gid_t> out(static_cast<size_t>(n));
  while (::getgrouplist(pw->pw_name, who.gid, out.data(), &n) < 0)
    out.resize(static_cast<size_t>(n));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string access_error(const std::string& path, int mode) {
  if (::faccessat(AT_FDCWD, path.c_str(), mode, AT_EACCESS) != 0) return std::strerror(errno);
  return "";
}

}  // namespace

void become(const RunAs& who) {
  std::vector<gid_t> groups = groups_of(who);
  if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(who.gid) != 0 ||
      ::setuid(who.uid) != 0) {
    throw QueueError("cannot run as user " + who.name + ": " + std::strerror(errno));
  }
  if (who.uid != 0 && ::setuid(0) == 0)
    throw QueueError("ran as user " + who.name + " but could become root again");
}

std::optional<RunAs> spool_owner(std::string_view storage_url) {
  if (::geteuid() != 0) return std::nullopt;
  std::optional<std::string> dir = spool_directory(storage_url);
  struct stat st {};
  if (!dir || ::stat(dir->c_str(), &st) != 0 || st.st_uid == 0) return std::nullopt;
  const struct passwd* pw = ::getpwuid(st.st_uid);
  return RunAs{pw ? std::string(pw->pw_name) : "uid " + std::to_string(st.st_uid), st.st_uid,
               st.st_gid};
}

std::string access_error_as(const RunAs& who, const std::string& path, int mode) {
  if (::geteuid() != 0 || who.uid == ::geteuid()) return access_error(path, mode);
  // Root: take the user's identity for the open (effective ids only, so root's saved
  // ids bring it back), then give it back. check-config is the caller: no thread of
  // its own runs meanwhile.
  std::vector<gid_t> saved(static_cast<size_t>(::getgroups(0, nullptr)));
  saved.resize(static_cast<size_t>(::getgroups(static_cast<int>(saved.size()), saved.data())));
  const gid_t saved_gid = ::getegid();
  auto give_back = [&] {
    if (::seteuid(0) != 0 || ::setegid(saved_gid) != 0 ||
        ::setgroups(saved.size(), saved.data()) != 0) {
      throw QueueError(std::string("cannot become root again after checking a file: ") +
                       std::strerror(errno));
    }
  };
  std::vector<gid_t> groups = groups_of(who);
  if (::setgroups(groups.size(), groups.data()) != 0 || ::setegid(who.gid) != 0 ||
      ::seteuid(who.uid) != 0) {
    std::string why = std::strerror(errno);
    give_back();
    throw QueueError("cannot act as user " + who.name + " to check '" + path + "': " + why);
  }
  std::string why = access_error(path, mode);
  give_back();
  return why;
}

void check_spool_access(const RunAs& who, std::string_view storage_url) {
  std::optional<std::string> dir = spool_directory(storage_url);
  if (!dir) return;
  std::error_code ec;
  std::filesystem::path path = std::filesystem::absolute(*dir, ec);
  // A spool that is not there yet is made in its parent directory.
  bool exists = std::filesystem::exists(path, ec);
  std::string target = exists ? path.string() : path.parent_path().string();
  std::string why = access_error_as(who, target, R_OK | W_OK | X_OK);
  if (why.empty()) return;
  throw InvalidArgument(
      "spool '" + *dir + "': serve runs as user " + who.name + ", which cannot " +
      (exists ? "use it" : "make it in '" + target + "'") + " (" + why +
      "): give the spool to that user (chown -R " + who.name + ": " + *dir +
      ", every directory above it searchable by it), or let serve stay root (--user root)");
}

std::vector<Unreadable> unreadable_files(
    const RunAs& who, const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<Unreadable> out;
  for (const auto& [what, path] : files) {
    if (path.empty()) continue;
    if (std::string why = unreadable_as(who, path); !why.empty()) out.push_back({what, path, why});
  }
  return out;
}

}  // namespace slimta::admin
