// The storage URL factory: a plain switch on the scheme, the one place that knows
// every backend.
#include <cctype>
#include <string>

#include "factory/url.h"
#include "slimta/disk_storage.h"
#include "slimta/memory_storage.h"
#include "slimta/open_storage.h"
#ifdef SLIMTA_WITH_REDIS
#include "slimta/redis_storage.h"
#endif

namespace slimta {

std::string redact_storage_url(std::string_view url) { return url::redact(url); }

std::unique_ptr<QueueStorage> open_storage(std::string_view url, std::optional<double> timeout,
                                           bool create) {
  OpenOptions options;
  options.timeout = timeout;
  options.create = create;
  return open_storage(url, options);
}

namespace {

// disk:PATH[?min-free=...], and the URL-like disk:///abs/path. `open` false: checked only.
// `path`, when given, is set to the spool's directory.
std::unique_ptr<QueueStorage> open_disk(std::string_view url, std::string_view rest,
                                        const OpenOptions& options, bool open,
                                        std::string* path = nullptr) {
  if (rest.starts_with("//")) {
    rest.remove_prefix(2);
    if (!rest.starts_with("/")) {
      throw InvalidArgument("storage URL '" + std::string(url) +
                            "': disk:// URLs need an absolute path (disk:///var/spool/slimta)");
    }
  }
  size_t q = rest.find('?');
  // "min-free=5%" as an operator writes it: a '%' that starts no escape is itself.
  std::string query(q == std::string_view::npos ? "" : rest.substr(q + 1));
  for (size_t i = query.find('%'); i != std::string::npos; i = query.find('%', i + 1)) {
    if (i + 2 >= query.size() || !std::isxdigit(static_cast<unsigned char>(query[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(query[i + 2])))
      query.insert(i + 1, "25");
  }
  auto params = url::parse_query(query, url);
  rest = rest.substr(0, q);
  if (rest.empty()) {
    throw InvalidArgument("storage URL '" + std::string(url) +
                          "': disk: needs a directory, e.g. disk:/var/spool/slimta");
  }
  DiskOptions disk;
  disk.create = options.create;
  std::optional<std::string> min_free = options.min_free;
  if (auto it = params.find("min-free"); it != params.end()) {
    min_free = it->second;
    params.erase(it);
  }
  if (!params.empty()) {
    throw InvalidArgument("storage URL '" + std::string(url) + "': unknown parameter '" +
                          params.begin()->first + "' (disk: takes min-free=)");
  }
  if (min_free) disk.min_free = MinFree::parse(*min_free);
  if (path) *path = rest;
  if (!open) return nullptr;
  return std::make_unique<DiskStorage>(std::string(rest), disk);
}

// The one switch on the scheme, for open_storage() and check_storage_url().
std::unique_ptr<QueueStorage> dispatch(std::string_view url, const OpenOptions& options,
                                       bool open) {
  size_t colon = url.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    throw InvalidArgument("malformed storage URL '" + url::redact(url) +
                          "': expected SCHEME:..., e.g. disk:/var/spool/slimta or memory:");
  }
  std::string_view scheme = url.substr(0, colon);
  std::string_view rest = url.substr(colon + 1);
  if (scheme == "memory") {
    if (!rest.empty()) {
      throw InvalidArgument("storage URL '" + std::string(url) + "': memory: takes no path");
    }
    return open ? std::make_unique<MemoryStorage>() : nullptr;
  }
  if (scheme == "disk") return open_disk(url, rest, options, open);
  std::string supported = "memory:, disk:";
#ifdef SLIMTA_WITH_CLOUD
  supported += ", s3:";
  if (scheme == "s3") {
    if (!url.starts_with("s3://"))
      throw InvalidArgument("storage URL '" + std::string(url) + "': expected s3://BUCKET/PREFIX");
    return url::open_s3(url, options.timeout, open);
  }
#endif
#ifdef SLIMTA_WITH_REDIS
  supported += ", redis:, rediss:, redis+unix:, redis+sentinel:, redis+cluster:";
  if (scheme == "redis" || scheme == "rediss" || scheme == "redis+unix" ||
      scheme == "redis+sentinel" || scheme == "redis+cluster") {
    RedisOptions redis = url::parse_redis(url, options.timeout);
    if (!open) {
      RedisStorage::check(redis);
      return nullptr;
    }
    return std::make_unique<RedisStorage>(std::move(redis));
  }
#endif
  throw InvalidArgument("storage URL '" + url::redact(url) + "': unknown scheme '" +
                        std::string(scheme) + "' (this build supports " + supported + ")");
}

}  // namespace

std::unique_ptr<QueueStorage> open_storage(std::string_view url, const OpenOptions& options) {
  return dispatch(url, options, /*open=*/true);
}

void check_storage_url(std::string_view url, const OpenOptions& options) {
  dispatch(url, options, /*open=*/false);
}

std::optional<std::string> spool_directory(std::string_view url) {
  if (!url.starts_with("disk:")) return std::nullopt;
  std::string path;
  open_disk(url, url.substr(5), OpenOptions{}, /*open=*/false, &path);
  return path;
}

}  // namespace slimta
