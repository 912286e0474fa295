#include "factory/url.h"

#include "disk/permissions.h"
#include "slimta/host_port.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <vector>

#ifdef SLIMTA_WITH_CLOUD
#include "slimta/cloud_storage.h"
#endif
#include "slimta/errors.h"

namespace slimta::url {
namespace {

[[noreturn]] void bad(std::string_view url, const std::string& why) {
  throw InvalidArgument("storage URL '" + redact(url) + "': " + why);
}

template <typename T>
T number(std::string_view s, std::string_view url, const char* what) {
  T v{};
  auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || res.ec != std::errc() || res.ptr != s.data() + s.size()) {
    bad(url, std::string(what) + " '" + std::string(s) + "' is not a number");
  }
  return v;
}

// resolve-timeout=: how long a write whose answer was lost is settled (RedisOptions and
// CloudStorage take it alike): seconds, 0 or more.
double resolve_timeout(std::string_view value, std::string_view url) {
  double v = number<double>(value, url, "resolve-timeout");
  if (!(v >= 0)) bad(url, "resolve-timeout must be 0 seconds or more");
  return v;
}

// HOST[:PORT] or [IPV6][:PORT] (parse_host_port(), as every endpoint an operator
// writes), the host then percent-decoded.
RedisOptions::Address host_port(std::string_view hostport, int default_port, std::string_view url) {
  if (hostport.empty()) bad(url, "no host");
  HostPort at;
  try {
    at = parse_host_port(hostport, "host", static_cast<uint16_t>(default_port));
  } catch (const InvalidArgument& e) {
    bad(url, e.what());
  }
  return RedisOptions::Address{decode(at.host, url), at.port};
}

}  // namespace

std::string redact(std::string_view url) {
  std::string out(url);
  size_t scheme = out.find("://");
  if (scheme != std::string::npos) {
    size_t start = scheme + 3;
    size_t end = out.find_first_of("/?", start);
    size_t at = out.rfind('@', end == std::string::npos ? out.size() : end);
    if (at != std::string::npos && at >= start) {
      size_t colon = out.find(':', start);
      size_t from = colon != std::string::npos && colon < at ? colon + 1 : start;
      out.replace(from, at - from, "***");
    }
  }
  for (size_t p = out.find("password="); p != std::string::npos; p = out.find("password=", p + 1)) {
    // password= and sentinel-password=
    size_t key = p >= 9 && out.compare(p - 9, 9, "sentinel-") == 0 ? p - 9 : p;
    if (key > 0 && out[key - 1] != '?' && out[key - 1] != '&') continue;
    size_t value = p + 9, end = out.find('&', value);
    out.replace(value, (end == std::string::npos ? out.size() : end) - value, "***");
  }
  return out;
}

std::string decode(std::string_view s, std::string_view url) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= s.size() ||
        std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16).ptr != s.data() + i + 3) {
      bad(url, "bad percent-escape in '" + std::string(s) + "'");
    }
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view query, std::string_view url) {
  std::map<std::string, std::string> out;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string key = decode(pair.substr(0, eq), url);
    std::string value = eq == std::string_view::npos ? "" : decode(pair.substr(eq + 1), url);
    if (!out.emplace(key, value).second) bad(url, "parameter '" + key + "' given twice");
  }
  return out;
}

namespace {

// Which redis URL it is.
struct RedisKind {
  bool unix_socket = false, sentinel = false, cluster = false;
};

// The scheme: sets `kind` (and o.tls for rediss), returns what follows "//".
std::string_view redis_scheme(std::string_view url, RedisKind& kind, RedisOptions& o) {
  const std::pair<std::string_view, bool*> kSchemes[] = {{"redis://", nullptr},
                                                         {"rediss://", &o.tls},
                                                         {"redis+unix://", &kind.unix_socket},
                                                         {"redis+sentinel://", &kind.sentinel},
                                                         {"redis+cluster://", &kind.cluster}};
  for (const auto& [scheme, set] : kSchemes) {
    if (!url.starts_with(scheme)) continue;
    if (set) *set = true;
    return url.substr(scheme.size());
  }
  bad(url,
      "expected redis://HOST[:PORT][/DB], rediss://... (TLS), redis+unix:///PATH or "
      "redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB] or "
      "redis+cluster://HOST[:PORT][,HOST[:PORT]...]");
}

// What the userinfo gave.
struct Userinfo {
  bool password = false, username = false;
};

// [[USER]:PASSWORD@]HOSTS[/PATH], or redis+unix's socket path.
Userinfo redis_authority(std::string_view rest, std::string_view url, const RedisKind& kind,
                         RedisOptions& o) {
  Userinfo given;
  if (kind.unix_socket) {
    if (!rest.starts_with("/")) bad(url, "redis+unix:// needs an absolute socket path");
    o.unix_socket = decode(rest, url);
    return given;
  }
  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    given.password = true;
    size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      o.password = decode(userinfo, url);  // redis://password@host, as redis-cli takes it
    } else {
      if (colon != 0) {
        o.username = decode(userinfo.substr(0, colon), url);  // an ACL user
        given.username = true;
      }
      o.password = decode(userinfo.substr(colon + 1), url);
    }
  }
  size_t slash = rest.find('/');
  std::string_view hosts = rest.substr(0, slash);
  std::string_view path =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  if (kind.sentinel || kind.cluster) {  // HOST[:PORT],...
    while (true) {
      size_t comma = hosts.find(',');
      auto& list = kind.sentinel ? o.sentinels : o.cluster_nodes;
      list.push_back(host_port(hosts.substr(0, comma), kind.sentinel ? 26379 : 6379, url));
      if (comma == std::string_view::npos) break;
      hosts = hosts.substr(comma + 1);
    }
  }
  if (kind.sentinel) {  // then /MASTER[/DB]
    size_t next = path.find('/');
    o.sentinel_master = decode(path.substr(0, next), url);
    if (o.sentinel_master.empty()) bad(url, "no master name: redis+sentinel://SENTINELS/MASTER");
    path = next == std::string_view::npos ? std::string_view() : path.substr(next + 1);
  } else if (!kind.cluster) {
    RedisOptions::Address a = host_port(hosts, 6379, url);
    o.host = a.host;
    o.port = a.port;
  }
  if (!path.empty()) o.db = number<int>(path, url, "db");
  return given;
}

// One query parameter.
void redis_param(const std::string& key, const std::string& value, std::string_view url,
                 const RedisKind& kind, RedisOptions& o) {
  if (key == "prefix") {
    o.prefix = value;
  } else if (key == "timeout") {
    o.socket_timeout = number<double>(value, url, "timeout");
  } else if (key == "db") {
    o.db = number<int>(value, url, "db");
  } else if (key == "password") {
    o.password = value;
  } else if (key == "ca" || key == "cert" || key == "key" || key == "sni") {
    if (!o.tls) bad(url, key + "= is for TLS: the URL is rediss://");
    if (value.empty()) bad(url, key + "= is empty");
    (key == "ca"     ? o.tls_ca_file
     : key == "cert" ? o.tls_cert_file
     : key == "key"  ? o.tls_key_file
                     : o.tls_server_name) = value;
    if (key == "key") disk::check_permissions(value, "key", disk::FileUse::secret);
  } else if (key == "min-replicas-ack") {
    o.min_replicas_ack = number<int>(value, url, "min-replicas-ack");
  } else if (key == "ack-timeout") {
    o.ack_timeout = number<double>(value, url, "ack-timeout");
    if (!(o.ack_timeout > 0)) bad(url, "ack-timeout must be more than 0 seconds");
  } else if (key == "resolve-timeout") {
    o.resolve_timeout = resolve_timeout(value, url);
  } else if (key == "notify-shards") {
    if (!kind.cluster) bad(url, "notify-shards= is for redis+cluster:// URLs");
    o.notify_shards = number<size_t>(value, url, "notify-shards");
  } else if (key == "due-slots") {
    if (!kind.cluster)
      bad(url, "due-slots= is for redis+cluster:// URLs (one server has the index)");
    o.due_slots = number<size_t>(value, url, "due-slots");
    if (o.due_slots == 0 || o.due_slots > 16384 || (o.due_slots & (o.due_slots - 1)) != 0)
      bad(url, "due-slots " + value + " is not a power of two from 1 to 16384");
  } else if (key == "sentinel-password") {
    if (!kind.sentinel) bad(url, "sentinel-password= is for redis+sentinel:// URLs");
    o.sentinel_password = value;
  } else if (key == "username") {
    if (value.empty()) bad(url, "username= is empty");
    o.username = value;
  } else if (key == "password-file") {
    disk::check_permissions(value, "password-file", disk::FileUse::secret);
    std::ifstream in(value);
    std::string line;
    if (!in || !std::getline(in, line)) bad(url, "cannot read password-file '" + value + "'");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    o.password = line;
  } else {
    bad(url,
        "unknown parameter '" + key +
            "' (known: prefix, timeout, db, username, password, password-file, "
            "min-replicas-ack, ack-timeout, resolve-timeout; for rediss: ca, cert, key, sni; for "
            "redis+sentinel: sentinel-password; for redis+cluster: notify-shards, due-slots)");
  }
}

}  // namespace

RedisOptions parse_redis(std::string_view url, std::optional<double> default_timeout) {
  RedisOptions o;
  RedisKind kind;
  std::string_view rest = redis_scheme(url, kind, o);
  size_t q = rest.find('?');
  auto params = parse_query(q == std::string_view::npos ? "" : rest.substr(q + 1), url);
  Userinfo given = redis_authority(rest.substr(0, q), url, kind, o);
  for (const auto& [key, value] : params) redis_param(key, value, url, kind, o);
  if (int(given.password) + int(params.count("password")) + int(params.count("password-file")) > 1)
    bad(url, "give the password once: in the URL, password= or password-file=");
  if (params.count("username") && given.username)
    bad(url, "give the username once: in the URL or username=");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty())
    bad(url, "a client certificate needs both cert= and key=");
  if (o.username && !o.password)
    bad(url, "an ACL user needs its password: USER:PASSWORD@, password= or password-file=");
  if (kind.cluster && o.db != 0) bad(url, "a cluster has only db 0");
  if (!o.socket_timeout) o.socket_timeout = default_timeout;
  return o;
}

#ifdef SLIMTA_WITH_CLOUD
// `value`, unless it is not more than 0: then InvalidArgument naming `what`.
double positive(double value, std::string_view url, const std::string& what) {
  if (!(value > 0)) bad(url, what + " must be more than 0 seconds");
  return value;
}

std::unique_ptr<QueueStorage> open_s3(std::string_view url, std::optional<double> default_timeout,
                                      bool open) {
  std::string_view rest = url.substr(5);  // after "s3://"
  size_t q = rest.find('?');
  auto params = parse_query(q == std::string_view::npos ? "" : rest.substr(q + 1), url);
  rest = rest.substr(0, q);
  size_t slash = rest.find('/');
  std::string bucket = decode(rest.substr(0, slash), url);
  std::string prefix = slash == std::string_view::npos ? "" : decode(rest.substr(slash + 1), url);
  if (bucket.empty()) bad(url, "no bucket");
  if (!prefix.empty() && !prefix.ends_with("/")) prefix += "/";
  AwsOptions aws;
  double timeout = default_timeout.value_or(60);
  bool path_style = true;
  std::string sqs;
  double stale_after = 7200;
  std::optional<double> resolving;  // resolve-timeout=
  for (const auto& [key, value] : params) {
    if (key == "region")
      aws.region = value;
    else if (key == "endpoint")
      aws.endpoint = value;
    else if (key == "sqs")
      sqs = value;
    else if (key == "timeout")
      timeout = number<double>(value, url, "timeout");
    else if (key == "path_style")
      path_style = value != "0";
    else if (key == "profile")
      aws.profile = value;
    else if (key == "stale-after")
      stale_after = positive(number<double>(value, url, "stale-after"), url, "stale-after");
    else if (key == "resolve-timeout")
      resolving = resolve_timeout(value, url);
    else
      bad(url, "unknown parameter '" + key +
                   "' (known: region, endpoint, sqs, timeout, path_style, profile, stale-after, "
                   "resolve-timeout)");
  }
  // sqs=Q1,Q2,...: one storage over several queues (queue URLs and names hold no comma).
  std::vector<std::string> names;
  for (size_t at = 0; !sqs.empty() && at <= sqs.size();) {
    size_t comma = std::min(sqs.find(',', at), sqs.size());
    std::string queue = sqs.substr(at, comma - at);
    if (queue.empty()) bad(url, "an empty queue in sqs=");
    if (std::find(names.begin(), names.end(), queue) != names.end())
      bad(url, "queue '" + queue + "' is named twice in sqs=");
    names.push_back(std::move(queue));
    at = comma + 1;
  }
  if (!open) return nullptr;
  std::vector<SimpleQueueService> queues;
  for (const auto& name : names) queues.emplace_back(name, timeout, 1.0, aws);
  SimpleStorageService s3(bucket, timeout, prefix, aws, path_style);
  return std::make_unique<CloudStorage>(std::move(s3), std::move(queues), system_clock(),
                                        stale_after, resolving);
}

#endif

}  // namespace slimta::url
