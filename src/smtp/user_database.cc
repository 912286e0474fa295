// Password hashes are checked with libxcrypt's crypt_r (Debian libcrypt-dev), which
// knows every method a passwd-file may hold; nothing here hashes by hand.
#include "slimta/user_database.h"

#include <crypt.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "disk/permissions.h"
#include "disk/posix_file.h"
#include "slimta/errors.h"

namespace slimta {
namespace {

// crypt_r of `phrase` with `setting`; "" when libxcrypt refuses (it then returns "*0"
// or "*1" style failure tokens, which never equal a stored hash).
std::string crypt_string(std::string_view phrase, const std::string& setting) {
  auto data = std::make_unique<crypt_data>();  // ~32 KiB: not on the stack
  std::string p(phrase);
  const char* out = crypt_r(p.c_str(), setting.c_str(), data.get());
  if (out == nullptr || out[0] == '*') return "";
  return out;
}

// Compares without an early exit, so the time taken does not tell how much matched.
bool same(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

void check_name(const std::string& user) {
  if (user.empty()) throw InvalidArgument("user name is empty");
  for (char c : user) {
    auto u = static_cast<unsigned char>(c);
    if (c == ':' || u < 0x20 || u == 0x7f)
      throw InvalidArgument("user name '" + user + "' has ':' or a control character");
  }
}

std::string make_setting(const char* prefix) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn(prefix, 0, nullptr, 0, setting, sizeof setting) == nullptr)
    throw QueueError(std::string("cannot make a password salt: ") + std::strerror(errno));
  return setting;
}

}  // namespace

struct UserDatabase::Cache {
  unsigned char key[32];
  std::mutex mu;
  std::condition_variable done;  // a computation ended
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> until;  // successes
  std::unordered_set<std::string> running;  // being computed now
  size_t hashes = 0;

  Cache() {
    if (RAND_bytes(key, sizeof key) != 1) throw QueueError("cannot make a random cache key");
  }
  std::string mac(std::string_view user, std::string_view password) const {
    std::string data = std::string(user) + '\0' + std::string(password);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    HMAC(EVP_sha256(), key, sizeof key, reinterpret_cast<const unsigned char*>(data.data()),
         data.size(), out, &n);
    OPENSSL_cleanse(data.data(), data.size());
    return std::string(reinterpret_cast<char*>(out), n);
  }
};

UserDatabase::UserDatabase()
    : dummy_(crypt_string("dummy", make_setting("$y$"))), cache_(std::make_shared<Cache>()) {}

namespace {

// What a hash's computation costs: its method and parameters, without salt and digest
// ("$y$j9T$", "$2b$12$", "$6$", "$6$rounds=10000$").
std::string cost_class(const std::string& hash) {
  if (hash.starts_with("$2")) return hash.substr(0, 7);
  if (hash.starts_with("$6$")) {
    return hash.compare(3, 7, "rounds=") == 0 ? hash.substr(0, hash.find('$', 3) + 1) : "$6$";
  }
  size_t method = hash.find('$', 1);
  if (method == std::string::npos) return hash;
  if (hash.starts_with("$y$") || hash.starts_with("$7$") || hash.starts_with("$gy$"))
    return hash.substr(0, hash.find('$', method + 1) + 1);
  return hash.substr(0, method + 1);
}

}  // namespace

UserDatabase UserDatabase::load(const std::string& path) {
  disk::check_permissions(path, "users file", disk::FileUse::secret);
  std::ifstream in(path);
  if (!in) throw InvalidArgument("cannot read users file '" + path + "': " + std::strerror(errno));
  UserDatabase db;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    auto bad = [&](const std::string& why) {
      return InvalidArgument("users file '" + path + "' line " + std::to_string(number) + ": " +
                             why);
    };
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    size_t colon = line.find(':');
    if (colon == std::string::npos) throw bad("expected name:HASH");
    std::string name = line.substr(0, colon);
    std::string hash = line.substr(colon + 1);
    hash = hash.substr(0, hash.find(':'));  // passwd-file: uid:gid:... follow
    if (!hash.empty() && hash[0] == '{') {  // Dovecot's {SCHEME} before a crypt(3) hash
      size_t close = hash.find('}');
      if (close != std::string::npos) hash = hash.substr(close + 1);
    }
    if (name.empty()) throw bad("empty user name");
    switch (crypt_checksalt(hash.c_str())) {
      case CRYPT_SALT_OK:
        break;
      case CRYPT_SALT_METHOD_LEGACY:
        throw bad("user '" + name +
                  "' has a hash of a broken method, or plain text (use yescrypt, bcrypt or "
                  "sha512-crypt)");
      default:
        throw bad("user '" + name + "' has no crypt(3) hash that libxcrypt can check");
    }
    if (!db.users_.emplace(name, hash).second) throw bad("user '" + name + "' listed twice");
  }
  // An unknown name is checked against a hash of the file's most common method and
  // cost, so that it takes as long as most users' checks: a yescrypt dummy beside
  // sha512-crypt users would tell the names that exist by their speed.
  std::map<std::string, std::pair<size_t, const std::string*>> by_cost;
  for (const auto& [name, hash] : db.users_) {
    auto& [count, example] = by_cost[cost_class(hash)];
    if (count++ == 0) example = &hash;
  }
  size_t most = 0;
  for (const auto& [cost, entry] : by_cost) {
    if (entry.first > most) {
      most = entry.first;
      db.dummy_ = *entry.second;
    }
  }
  return db;
}

bool UserDatabase::check(std::string_view user, std::string_view password) const {
  using Clock = std::chrono::steady_clock;
  std::string mac = cache_->mac(user, password);
  {
    std::unique_lock lock(cache_->mu);
    cache_->done.wait(lock, [&] { return !cache_->running.count(mac); });
    auto hit = cache_->until.find(mac);
    if (hit != cache_->until.end() && hit->second > Clock::now()) return true;
    cache_->running.insert(mac);
  }
  auto it = users_.find(user);
  const std::string& stored = it == users_.end() ? dummy_ : it->second;
  std::string computed = crypt_string(password, stored);
  bool ok = it != users_.end() && !computed.empty() && same(computed, stored);
  {
    std::lock_guard lock(cache_->mu);
    cache_->running.erase(mac);
    ++cache_->hashes;
    if (ok) {
      if (cache_->until.size() >= kCacheSize) {
        std::erase_if(cache_->until,
                      [now = Clock::now()](const auto& e) { return e.second <= now; });
        if (cache_->until.size() >= kCacheSize) cache_->until.clear();
      }
      cache_->until[mac] = Clock::now() + kCacheTime;
    }
  }
  cache_->done.notify_all();
  return ok;
}

size_t UserDatabase::hashes() const {
  std::lock_guard lock(cache_->mu);
  return cache_->hashes;
}

std::string UserDatabase::hash(std::string_view password) {
  std::string out = crypt_string(password, make_setting("$y$"));
  if (out.empty()) throw QueueError("cannot hash the password");
  return out;
}

void UserDatabase::store(const std::string& path, const std::string& user, const std::string& hash,
                         std::optional<gid_t> group) {
  check_name(user);
  const std::string dir =
      path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  const std::string dir_path = dir.empty() ? "/" : dir;
  // One update at a time: a lock file beside the users file (the users file itself is
  // replaced, so its lock would not hold), opened without following a link.
  const std::string lock_path = path + ".lock";
  posix::Fd lock = posix::open_at(disk::posix_file_system(), AT_FDCWD, lock_path,
                                  O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600, lock_path);
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) posix::io_error("flock", lock_path, errno);
  }

  std::vector<std::string> lines;
  bool replaced = false;
  struct stat old {};
  const bool existed = ::stat(path.c_str(), &old) == 0;
  {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      size_t colon = line.find(':');
      if (!replaced && colon != std::string::npos && line.compare(0, colon, user) == 0 &&
          colon == user.size()) {
        size_t rest = line.find(':', colon + 1);  // keep a passwd-file's other fields
        line = user + ":" + hash + (rest == std::string::npos ? "" : line.substr(rest));
        replaced = true;
      }
      lines.push_back(line);
    }
  }
  if (!replaced) lines.push_back(user + ":" + hash);
  std::string data;
  for (const std::string& l : lines) data += l + "\n";

  // A temp file of a random name made by mkostemp (O_EXCL: never through a link
  // planted in the directory), with the old file's mode and owner, fsync'd, renamed
  // over it, the directory fsync'd: the old file or the new, never half.
  std::string temp = path + ".XXXXXX";
  int raw = ::mkostemp(temp.data(), O_CLOEXEC);
  if (raw < 0) posix::io_error("mkostemp", temp, errno);
  posix::Fd fd(raw);
  try {
    if (!existed && group && ::fchown(fd.get(), static_cast<uid_t>(-1), *group) != 0)
      posix::io_error("fchown", temp, errno);
    if (::fchmod(fd.get(), existed ? old.st_mode & 07777 : group ? 0640 : 0600) != 0)
      posix::io_error("fchmod", temp, errno);
    if (existed && (old.st_uid != ::geteuid() || old.st_gid != ::getegid()) &&
        ::fchown(fd.get(), old.st_uid, old.st_gid) != 0)
      posix::io_error("fchown", temp, errno);
    posix::write_all(disk::posix_file_system(), fd.get(), data, temp);
    posix::sync_data(disk::posix_file_system(), fd.get(), temp);
    if (::rename(temp.c_str(), path.c_str()) != 0) posix::io_error("rename", temp, errno);
  } catch (const QueueError&) {
    ::unlink(temp.c_str());
    throw;
  }
  posix::sync_all(disk::posix_file_system(),
                  posix::open_at(disk::posix_file_system(), AT_FDCWD, dir_path,
                                 O_RDONLY | O_DIRECTORY, 0, dir_path)
                      .get(),
                  dir_path);
}

}  // namespace slimta
