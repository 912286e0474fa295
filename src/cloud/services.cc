// The S3 and SQS clients CloudStorage is built on (include/slimta/cloud_storage.h):
// conditional object writes and listings, and the notices' queue, over cloud/http.
#include "slimta/cloud_storage.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "cloud/http.h"
#include "core/counters_text.h"
#include "core/metadata_ops.h"
#include "core/paged_stream.h"
#include "core/record.h"

namespace slimta {

using cloud::Request;
using cloud::Response;

namespace {

// S3's "2026-11-28T20:00:00.000Z" in seconds since the epoch; 0 if unreadable (taken as
// old, so that the sweep looks at the object rather than trusting it).
Timestamp iso8601(const std::string& s) {
  std::tm tm{};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) return 0;
  double fraction = *end == '.' ? std::atof(end) : 0;
  return static_cast<Timestamp>(timegm(&tm)) + fraction;
}

void check_options(double timeout, const AwsOptions& aws) {
  if (!(timeout > 0)) throw InvalidArgument("timeout must be more than 0 seconds");
  if (aws.region.empty()) throw InvalidArgument("AWS region is empty");
  if (!aws.endpoint.empty() && !aws.endpoint.starts_with("http://") &&
      !aws.endpoint.starts_with("https://")) {
    throw InvalidArgument("endpoint '" + aws.endpoint + "' must start with http:// or https://");
  }
}

}  // namespace

struct SimpleStorageService::Impl {
  std::string bucket, prefix;
  double timeout = 0;
  std::string base;  // URL of the bucket, without a trailing slash
  std::unique_ptr<cloud::Http> http;

  std::string url(std::string_view key) const { return base + "/" + cloud::uri_encode(key, false); }
  [[noreturn]] void fail(const Response& r, const std::string& what) const {
    throw cloud::response_error("S3 " + what, r, "S3 bucket '" + bucket + "'");
  }
};

std::optional<SimpleStorageService::Object> SimpleStorageService::get(const std::string& key,
                                                                      size_t max_bytes) {
  Request req = cloud::make_request("GET", impl_->url(key), "s3", "s3 GET");
  if (max_bytes) req.headers.push_back({"Range", "bytes=0-" + std::to_string(max_bytes - 1)});
  Response r = impl_->http->send(req);
  if (r.status == 404 && cloud::error_code(r) != "NoSuchBucket") return std::nullopt;
  if (r.status != 200 && r.status != 206) impl_->fail(r, "GET " + key);
  return Object{std::move(r.body), r.headers["etag"]};
}

bool SimpleStorageService::put(const std::string& key, const std::string& body,
                               const std::string& etag) {
  Request req = cloud::make_request("PUT", impl_->url(key), "s3", "s3 PUT");
  req.body = body;
  req.headers = {{"Content-Type", "application/octet-stream"},
                 etag.empty() ? std::pair<std::string, std::string>{"If-None-Match", "*"}
                              : std::pair<std::string, std::string>{"If-Match", etag}};
  Response r = impl_->http->send(req);
  if (r.status == 412) return false;
  if (r.status != 200) impl_->fail(r, "PUT " + key);
  return true;
}

bool SimpleStorageService::remove(const std::string& key, const std::string& etag) {
  Request req = cloud::make_request("DELETE", impl_->url(key), "s3", "s3 DELETE");
  if (!etag.empty()) req.headers.push_back({"If-Match", etag});
  Response r = impl_->http->send(req);
  if (r.status == 412) return false;
  if (r.status != 204 && r.status != 200 && r.status != 404) impl_->fail(r, "DELETE " + key);
  return true;
}

SimpleStorageService::Page SimpleStorageService::list(const std::string& token,
                                                      const std::string& under,
                                                      const std::string& start_after) {
  // SigV4 signs the query as written: parameters sorted and encoded here.
  std::string query;
  if (!token.empty()) query += "continuation-token=" + cloud::uri_encode(token, true) + "&";
  query += "list-type=2&prefix=" + cloud::uri_encode(impl_->prefix + under, true);
  if (token.empty() && !start_after.empty())
    query += "&start-after=" + cloud::uri_encode(start_after, true);
  Response r =
      impl_->http->send(cloud::make_request("GET", impl_->base + "?" + query, "s3", "s3 LIST"));
  if (r.status != 200) impl_->fail(r, "LIST");
  Page page;
  size_t pos = 0;
  while (true) {
    std::string key = cloud::xml_value(r.body, "Key", &pos);
    if (pos == std::string::npos) break;
    size_t at = pos;  // each Contents has its Key, then its LastModified
    Timestamp modified = iso8601(cloud::xml_value(r.body, "LastModified", &at));
    page.keys.push_back(std::move(key));
    page.modified.push_back(modified);
  }
  if (cloud::xml_value(r.body, "IsTruncated") == "true")
    page.next = cloud::xml_value(r.body, "NextContinuationToken");
  return page;
}

double SimpleStorageService::timeout() const { return impl_->timeout; }

std::map<std::string, uint64_t> SimpleStorageService::request_counts() const {
  return impl_->http->counts();
}

SimpleStorageService::SimpleStorageService(std::string bucket, double timeout, std::string prefix,
                                           AwsOptions aws, bool path_style)
    : impl_(std::make_unique<Impl>()) {
  check_options(timeout, aws);
  if (bucket.size() < 3 || bucket.find('/') != std::string::npos) {
    throw InvalidArgument("S3 bucket name '" + bucket + "' is not valid");
  }
  impl_->bucket = std::move(bucket);
  impl_->prefix = std::move(prefix);
  impl_->timeout = timeout;
  if (!aws.endpoint.empty()) {
    std::string ep = aws.endpoint;
    while (ep.ends_with("/")) ep.pop_back();
    impl_->base = ep + "/" + impl_->bucket;
  } else if (path_style) {
    impl_->base = "https://s3." + aws.region + ".amazonaws.com/" + impl_->bucket;
  } else {
    impl_->base = "https://" + impl_->bucket + ".s3." + aws.region + ".amazonaws.com";
  }
  impl_->http = std::make_unique<cloud::Http>(timeout, aws.region, cloud::resolve_credentials(aws));
}

SimpleStorageService::~SimpleStorageService() = default;
SimpleStorageService::SimpleStorageService(SimpleStorageService&&) noexcept = default;
const std::string& SimpleStorageService::bucket() const { return impl_->bucket; }
const std::string& SimpleStorageService::prefix() const { return impl_->prefix; }

struct SimpleQueueService::Impl {
  std::string queue, endpoint;
  double poll_pause = 1;
  std::unique_ptr<cloud::Http> http;
  std::mutex mu;
  std::string queue_url;  // resolved on first use

  nlohmann::json call(const std::string& action, const nlohmann::json& body,
                      double extra_timeout = 0) {
    Request req = cloud::make_request("POST", endpoint + "/", "sqs", "sqs " + action);
    req.body = body.dump();
    req.extra_timeout = extra_timeout;
    req.headers = {{"Content-Type", "application/x-amz-json-1.0"},
                   {"X-Amz-Target", "AmazonSQS." + action}};
    Response r = http->send(req);
    if (r.status != 200)
      throw cloud::response_error("SQS " + action, r, "SQS queue '" + queue + "'");
    nlohmann::json j = nlohmann::json::parse(r.body.empty() ? "{}" : r.body, nullptr, false);
    return j;
  }

  const std::string& url() {
    std::lock_guard lock(mu);
    if (queue_url.empty()) {
      queue_url = queue.starts_with("http://") || queue.starts_with("https://")
                      ? queue
                      : call("GetQueueUrl", {{"QueueName", queue}}).value("QueueUrl", "");
      if (queue_url.empty())
        throw CloudStorageError::permanent("SQS queue '" + queue + "' not found");
    }
    return queue_url;
  }
};

SimpleQueueService::SimpleQueueService(std::string queue, double timeout, double poll_pause,
                                       AwsOptions aws)
    : impl_(std::make_unique<Impl>()) {
  check_options(timeout, aws);
  if (queue.empty()) throw InvalidArgument("SQS queue is empty");
  if (poll_pause < 0) throw InvalidArgument("poll_pause must not be negative");
  impl_->queue = std::move(queue);
  impl_->poll_pause = poll_pause;
  impl_->endpoint =
      aws.endpoint.empty() ? "https://sqs." + aws.region + ".amazonaws.com" : aws.endpoint;
  while (impl_->endpoint.ends_with("/")) impl_->endpoint.pop_back();
  impl_->http = std::make_unique<cloud::Http>(timeout, aws.region, cloud::resolve_credentials(aws));
}

SimpleQueueService::~SimpleQueueService() = default;
SimpleQueueService::SimpleQueueService(SimpleQueueService&&) noexcept = default;

void SimpleQueueService::queue_message(std::string_view id, Timestamp timestamp,
                                       int delay_seconds) {
  nlohmann::json body{{"QueueUrl", impl_->url()},
                      {"MessageBody", nlohmann::json{{"id", id}, {"timestamp", timestamp}}.dump()}};
  if (delay_seconds > 0) body["DelaySeconds"] = std::min(delay_seconds, 900);
  impl_->call("SendMessage", body);
}

bool SimpleQueueService::change_visibility(const std::string& handle, int seconds) {
  try {
    impl_->call("ChangeMessageVisibility", {{"QueueUrl", impl_->url()},
                                            {"ReceiptHandle", handle},
                                            {"VisibilityTimeout", std::clamp(seconds, 0, 43200)}});
    return true;
  } catch (const QueueError& e) {
    if (e.retryable()) throw;
    return false;  // the receipt ran out (received again since), or the notice is gone
  }
}

void SimpleQueueService::delete_message(const std::string& handle) {
  impl_->call("DeleteMessage", {{"QueueUrl", impl_->url()}, {"ReceiptHandle", handle}});
}

namespace {

// One SQS message's notice, {"id": ID, "timestamp": SECONDS}; nullopt (and a log line)
// for anything else: never an exception, whatever the queue holds.
std::optional<QueueEntry> parse_notice(const nlohmann::json& message) {
  std::string text;
  if (message.is_object() && message.contains("Body") && message["Body"].is_string())
    text = message["Body"].get<std::string>();
  auto body = nlohmann::json::parse(text, nullptr, false);
  if (body.is_object() && body.contains("id") && body["id"].is_string() &&
      body.contains("timestamp") && body["timestamp"].is_number() &&
      is_valid_id(body["id"].get<std::string>())) {
    return QueueEntry{body["timestamp"].get<double>(), body["id"].get<std::string>()};
  }
  spdlog::warn("cloud: malformed SQS notice deleted: {}",
               nlohmann::json(text.substr(0, 200))
                   .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return std::nullopt;
}

}  // namespace

std::vector<SimpleQueueService::Notice> SimpleQueueService::receive(int max,
                                                                    int visibility_seconds) {
  nlohmann::json r = impl_->call("ReceiveMessage", {{"QueueUrl", impl_->url()},
                                                    {"MaxNumberOfMessages", std::clamp(max, 1, 10)},
                                                    {"VisibilityTimeout", visibility_seconds},
                                                    {"WaitTimeSeconds", 0}});
  std::vector<Notice> out;
  const nlohmann::json* messages =
      r.is_object() && r.contains("Messages") ? &r["Messages"] : nullptr;
  if (!messages || !messages->is_array()) return out;
  for (const auto& m : *messages) {
    if (!m.is_object() || !m.contains("ReceiptHandle") || !m["ReceiptHandle"].is_string()) continue;
    std::string handle = m["ReceiptHandle"].get<std::string>();
    auto entry = parse_notice(m);
    if (!entry) {
      delete_message(handle);
      continue;
    }
    out.push_back({*entry, m.value("MessageId", ""), std::move(handle)});
  }
  return out;
}

std::vector<QueueEntry> SimpleQueueService::poll(int wait_seconds) {
  nlohmann::json r = impl_->call(
      "ReceiveMessage",
      {{"QueueUrl", impl_->url()}, {"MaxNumberOfMessages", 10}, {"WaitTimeSeconds", wait_seconds}},
      static_cast<double>(wait_seconds));
  std::vector<QueueEntry> out;
  nlohmann::json entries = nlohmann::json::array();
  const nlohmann::json* messages =
      r.is_object() && r.contains("Messages") ? &r["Messages"] : nullptr;
  if (messages && messages->is_array()) {
    for (const auto& m : *messages) {
      const nlohmann::json* handle =
          m.is_object() && m.contains("ReceiptHandle") ? &m["ReceiptHandle"] : nullptr;
      if (handle && handle->is_string()) {
        entries.push_back({{"Id", std::to_string(entries.size())}, {"ReceiptHandle", *handle}});
      }
      if (auto entry = parse_notice(m)) out.push_back(*entry);
    }
  }
  if (!entries.empty())
    impl_->call("DeleteMessageBatch", {{"QueueUrl", impl_->url()}, {"Entries", entries}});
  return out;
}

double SimpleQueueService::poll_pause() const { return impl_->poll_pause; }

std::map<std::string, uint64_t> SimpleQueueService::request_counts() const {
  return impl_->http->counts();
}

}  // namespace slimta
