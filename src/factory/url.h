// Parsing of storage URLs into backend options.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "slimta/redis_storage.h"
#include "slimta/storage.h"

namespace slimta::url {

// `url` with any password in it (userinfo, password=) replaced by "***": what errors
// and logs may show.
std::string redact(std::string_view url);

// Percent-decodes `s`; throws InvalidArgument naming `url` on a bad escape.
std::string decode(std::string_view s, std::string_view url);

// "a=1&b=2" -> {a:1, b:2}, decoded. Throws InvalidArgument on a repeated key.
std::map<std::string, std::string> parse_query(std::string_view query, std::string_view url);

// redis://[[user]:password@]host[:port][/db][?prefix=P&timeout=SECONDS&password-file=F]
// redis+unix:///path/to/redis.sock[?db=N&password=P&prefix=P&timeout=SECONDS]
// redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db][?...&
//   sentinel-password=P] (sentinels' port 26379 by default)
// redis+cluster://[[user]:password@]host[:port][,host[:port]...][?...&notify-shards=N&due-slots=N]
// Any of them: min-replicas-ack=N&ack-timeout=SECONDS (RedisOptions::min_replicas_ack).
// password-file: a file whose first line is the password (kept out of `ps`). A URL
// without timeout= gets `default_timeout`. Throws InvalidArgument naming the URL (its
// password masked) and the bad part.
RedisOptions parse_redis(std::string_view url, std::optional<double> default_timeout = {});

#ifdef SLIMTA_WITH_CLOUD
// s3://BUCKET[/PREFIX][?region=R&endpoint=URL&sqs=QUEUE_URL_OR_NAME[,QUEUE...]&timeout=S&path_style=0|1]
// Throws InvalidArgument naming the URL and the bad part. `open` false: the URL is only
// read and checked (nullptr).
std::unique_ptr<QueueStorage> open_s3(std::string_view url,
                                      std::optional<double> default_timeout = {}, bool open = true);
#endif

}  // namespace slimta::url
