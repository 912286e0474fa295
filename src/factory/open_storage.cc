// The storage URL factory: a plain switch on the scheme, the one place that knows
// every backend.
#include <string>

#include "factory/url.h"
#include "slimta/disk_storage.h"
#include "slimta/memory_storage.h"
#include "slimta/storage.h"
#ifdef SLIMTA_WITH_REDIS
#include "slimta/redis_storage.h"
#endif

namespace slimta {

std::string redact_storage_url(std::string_view url) { return url::redact(url); }

std::unique_ptr<QueueStorage> open_storage(std::string_view url,
                                           [[maybe_unused]] std::optional<double> timeout,
                                           bool create) {
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
    return std::make_unique<MemoryStorage>();
  }
  if (scheme == "disk") {
    // disk:PATH, and the URL-like disk:///abs/path.
    if (rest.starts_with("//")) {
      rest.remove_prefix(2);
      if (!rest.starts_with("/")) {
        throw InvalidArgument("storage URL '" + std::string(url) +
                              "': disk:// URLs need an absolute path (disk:///var/spool/slimta)");
      }
    }
    if (rest.empty()) {
      throw InvalidArgument("storage URL '" + std::string(url) +
                            "': disk: needs a directory, e.g. disk:/var/spool/slimta");
    }
    return std::make_unique<DiskStorage>(std::string(rest), create);
  }
  std::string supported = "memory:, disk:";
#ifdef SLIMTA_WITH_CLOUD
  supported += ", s3:";
  if (scheme == "s3") {
    if (!url.starts_with("s3://"))
      throw InvalidArgument("storage URL '" + std::string(url) + "': expected s3://BUCKET/PREFIX");
    return url::open_s3(url, timeout);
  }
#endif
#ifdef SLIMTA_WITH_REDIS
  supported += ", redis:, rediss:, redis+unix:, redis+sentinel:, redis+cluster:";
  if (scheme == "redis" || scheme == "rediss" || scheme == "redis+unix" ||
      scheme == "redis+sentinel" || scheme == "redis+cluster") {
    return std::make_unique<RedisStorage>(url::parse_redis(url, timeout));
  }
#endif
  throw InvalidArgument("storage URL '" + url::redact(url) + "': unknown scheme '" +
                        std::string(scheme) + "' (this build supports " + supported + ")");
}

}  // namespace slimta
