// Parsing of storage URLs into backend options.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "slimta/redis_storage.h"
#include "slimta/storage.h"

namespace slimta::url {

// Percent-decodes `s`; throws InvalidArgument naming `url` on a bad escape.
std::string decode(std::string_view s, std::string_view url);

// "a=1&b=2" -> {a:1, b:2}, decoded. Throws InvalidArgument on a repeated key.
std::map<std::string, std::string> parse_query(std::string_view query, std::string_view url);

// redis://[[user]:password@]host[:port][/db][?prefix=P&timeout=SECONDS]
// redis+unix:///path/to/redis.sock[?db=N&password=P&prefix=P&timeout=SECONDS]
// Throws InvalidArgument naming the URL and the bad part.
RedisOptions parse_redis(std::string_view url);

// s3://BUCKET[/PREFIX][?region=R&endpoint=URL&sqs=QUEUE_URL_OR_NAME&timeout=S&path_style=0|1]
// Throws InvalidArgument naming the URL and the bad part.
std::unique_ptr<QueueStorage> open_s3(std::string_view url);

}  // namespace slimta::url
