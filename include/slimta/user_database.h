// UserDatabase: the users who may authenticate to the SMTP server (SMTP AUTH), from a
// passwd-style file: one "name:HASH" per line, HASH in crypt(3) form as libxcrypt
// checks it: yescrypt ("$y$", what `mkpasswd -m yescrypt` and `slimta-queue passwd`
// make), bcrypt ("$2b$"), sha512-crypt ("$6$"). That is the format of Dovecot's
// passwd-file: fields after the hash (uid:gid:...) are ignored, and a "{SCHEME}"
// prefix before a crypt(3) hash is allowed. Blank lines and lines starting with '#'
// are skipped.
//
// Thread safety: immutable after load(); check() from any thread at once.
#pragma once

#include <map>
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

  // Whether `password` is `user`'s. Costs one hash computation (tens of ms for
  // yescrypt) whether or not the user exists, so timing does not tell which names
  // exist. Never logs either argument.
  bool check(std::string_view user, std::string_view password) const;

  size_t size() const { return users_.size(); }

  // A new yescrypt hash of `password`, with a random salt.
  static std::string hash(std::string_view password);

  // Adds `user` with `hash` to the file at `path`, or replaces its hash, keeping every
  // other line as it was. The file is replaced atomically (temp file, fsync, rename)
  // and created mode 0600 when missing. Throws InvalidArgument for a name with ':',
  // a control character or nothing in it, QueueError if the file cannot be written.
  static void store(const std::string& path, const std::string& user, const std::string& hash);

 private:
  std::map<std::string, std::string, std::less<>> users_;  // name -> crypt(3) hash
  std::string dummy_;                                      // hashed against for unknown users
};

}  // namespace slimta
