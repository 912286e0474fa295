// open_storage(): the storage a URL names, the one factory that knows every backend
// this build has.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "slimta/storage.h"

namespace slimta {

struct OpenOptions {
  // Seconds: applies to a Redis or S3 URL that gives no timeout= of its own, so that a
  // server that hangs fails the call in time, retryably. nullopt: the backend's default.
  std::optional<double> timeout;
  // Whether a disk: URL may create its spool (false for read-only tools: a missing spool
  // is then an InvalidArgument "no spool at PATH"; an empty directory is an empty spool).
  bool create = true;
  // A disk spool's free-space guard when the URL gives no min-free= (MinFree::parse:
  // "BYTES[K|M|G]", "N%", "none", "" for 1 GiB or 5%); nullopt: none.
  std::optional<std::string> min_free;
};

// Open the storage a URL names. Schemes:
//   memory:            in-process, not durable (tests, one-shot tools)
//   disk:PATH[?min-free=BYTES[K|M|G]|N%|none]
//                      the embedded default: a spool directory (created if missing);
//                      a '?' in PATH starts the options
//   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P&timeout=SECONDS]
//   rediss://...same...[&ca=FILE&cert=FILE&key=FILE&sni=NAME]   (TLS, doc/redis.md)
//   redis+unix:///PATH/redis.sock[?db=N&username=U&password=P&prefix=P&timeout=SECONDS]
//   s3://BUCKET[/PREFIX][?region=R&endpoint=URL&sqs=QUEUE&timeout=SECONDS&path_style=0|1&profile=P&stale-after=SECONDS]
// Redis URLs also take password-file=PATH (the password's first line, so that it is not
// in the command line) and username=USER (an ACL user, doc/redis.md). Throws
// InvalidArgument naming the problem for a malformed or unknown URL; the message never
// shows the URL's password.
std::unique_ptr<QueueStorage> open_storage(std::string_view url, const OpenOptions& options);
// The same with only a timeout and `create` (see OpenOptions).
std::unique_ptr<QueueStorage> open_storage(std::string_view url,
                                           std::optional<double> timeout = std::nullopt,
                                           bool create = true);

// Reads and checks `url` as open_storage() does, without opening, creating or connecting
// to anything (check-config): the same InvalidArgument for the same mistake.
void check_storage_url(std::string_view url, const OpenOptions& options = {});

// The directory a disk: URL names, read as open_storage() reads it (InvalidArgument for
// a malformed one); nullopt for another scheme.
std::optional<std::string> spool_directory(std::string_view url);

// `url` with its password (userinfo, password=) replaced by "***": what a log line or an
// operator's printout may show.
std::string redact_storage_url(std::string_view url);

}  // namespace slimta
