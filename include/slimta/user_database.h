// UserDatabase: the users who may authenticate to the SMTP server (SMTP AUTH), from a
// passwd-style file: one "name:HASH" per line, HASH in crypt(3) form as libxcrypt
// checks it: yescrypt ("$y$", what `mkpasswd -m yescrypt` and `slimta-queue passwd`
// make), bcrypt ("$2b$"), sha512-crypt ("$6$"). That is the format of Dovecot's
// passwd-file: fields after the hash (uid:gid:...) are ignored, and a "{SCHEME}"
// prefix before a crypt(3) hash is allowed. Blank lines and lines starting with '#'
// are skipped.
//
// A successful check is remembered for a while (Dovecot's auth_cache): a client that
// connects and authenticates for every message pays the hash once, and clients that
// present the same credentials at the same moment share one computation. What is kept
// is an HMAC of name and password under a key made at random per object, never the
// password; a failure is never remembered, so every guess costs a full hash.
//
// Thread safety: the users are immutable after load(); check() from any thread at once.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace slimta {

class UserDatabase {
 public:
  UserDatabase();  // no users

  // Reads the file. Throws InvalidArgument if it cannot be read, or naming the file
  // and line of an entry that is malformed (no ':', an empty name, a name used twice)
  // or whose hash libxcrypt cannot check, or that uses a broken method (DES, MD5).
  static UserDatabase load(const std::string& path);

  // Whether `password` is `user`'s. Costs one hash computation (~15 ms for yescrypt
  // here) whether or not the user exists (unknown_name_hash()), so timing does not tell
  // which names exist;
  // only the right password within kCacheTime of an earlier success is answered at
  // once (at most kCacheSize successes are kept). Never logs either argument.
  bool check(std::string_view user, std::string_view password) const;
  static constexpr std::chrono::seconds kCacheTime{300};
  static constexpr size_t kCacheSize = 10000;

  size_t size() const { return users_.size(); }
  // The hash an unknown name is checked against: one of the file's users' hashes, of
  // its most common method and cost (yescrypt's when it has no users), so that an
  // unknown name costs what most names cost and timing does not tell them apart.
  const std::string& unknown_name_hash() const { return dummy_; }
  // Hash computations check() made so far (what the cache spared shows here).
  size_t hashes() const;

  // A new yescrypt hash of `password`, with a random salt.
  static std::string hash(std::string_view password);

  // Adds `user` with `hash` to the file at `path`, or replaces its hash, keeping every
  // other line as it was. The file is replaced atomically (a temp file of a random
  // name made with O_EXCL, fsync, rename), keeping its mode and owner. A missing file
  // is created mode 0640 in `group` when given (the service's: the server reads it as
  // that group's member), else mode 0600. Concurrent calls, in this process or others,
  // take turns on the lock file PATH.lock (left in place). Throws InvalidArgument for a
  // name with ':', a control character or nothing in it, QueueError if the file cannot
  // be written.
  static void store(const std::string& path, const std::string& user, const std::string& hash,
                    std::optional<gid_t> group = std::nullopt);

 private:
  struct Cache;
  std::map<std::string, std::string, std::less<>> users_;  // name -> crypt(3) hash
  std::string dummy_;                                      // hashed against for unknown users
  std::shared_ptr<Cache> cache_;  // successes; shared by copies, which hold the same users
};

}  // namespace slimta
