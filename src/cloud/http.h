// HTTP for the cloud backend: libcurl, signed with libcurl's own AWS SigV4
// (CURLOPT_AWS_SIGV4, correct for S3 and SQS's JSON protocol on Debian's curl 7.88),
// bounded retries with exponential backoff, and request counting.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "slimta/cloud_storage.h"

namespace slimta::cloud {

struct Credentials {
  std::string key, secret, token;
};
// A variable of the environment ("" when unset): std::getenv in production.
using Environment = std::function<std::string(const char* name)>;
std::string process_environment(const char* name);

// Explicit options, else the environment, else ~/.aws/credentials. Throws
// CloudStorageError (not retryable) when there are none.
Credentials resolve_credentials(const AwsOptions& aws,
                                const Environment& env = process_environment);

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string service;       // "s3" or "sqs": the SigV4 scope
  double extra_timeout = 0;  // seconds added to the client's timeout (long polls)
  std::string kind;          // for request counts, e.g. "s3 PUT"
};

inline Request make_request(std::string method, std::string url, std::string service,
                            std::string kind) {
  Request r;
  r.method = std::move(method);
  r.url = std::move(url);
  r.service = std::move(service);
  r.kind = std::move(kind);
  return r;
}

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};

class Http {
 public:
  Http(double timeout, std::string region, Credentials credentials);
  ~Http();
  Http(const Http&) = delete;
  Http& operator=(const Http&) = delete;

  // Sends `req`. Network errors, 5xx and throttling (429, SlowDown, Throttling...) are
  // retried with exponential backoff, up to kAttempts times, then raise a retryable
  // CloudStorageError. Other responses are returned for the caller to interpret.
  Response send(const Request& req);

  std::map<std::string, uint64_t> counts() const;

  static constexpr int kAttempts = 4;

 private:
  // A CURL easy handle, cleaned up when dropped (curl.h stays out of this header).
  struct HandleCleanup {
    void operator()(void* handle) const;
  };
  using Handle = std::unique_ptr<void, HandleCleanup>;
  Handle take_handle();
  void give_handle(Handle h);

  double timeout_;
  std::string region_;
  Credentials creds_;
  std::mutex mu_;
  std::vector<Handle> handles_;  // idle ones (connection reuse)
  mutable std::mutex counts_mu_;
  std::map<std::string, uint64_t> counts_;
};

// Percent-encodes per SigV4 (unreserved A-Za-z0-9-_.~ kept); '/' kept unless encode_slash.
std::string uri_encode(std::string_view s, bool encode_slash);
std::string sha256_hex(std::string_view data);
// Text of the first <tag>...</tag> in `xml`, entities decoded; empty if absent.
std::string xml_value(std::string_view xml, std::string_view tag, size_t* pos = nullptr);
// The service's error code: S3's XML <Code>, or SQS's JSON "__type" (after any '#').
std::string error_code(const Response& r);
// "HTTP STATUS CODE: message" from an S3 (XML) or SQS (JSON) error body.
std::string describe_error(const Response& r);
// Every S3 and SQS error response becomes a CloudStorageError here: `what` (e.g. "S3
// GET KEY") failed, as the service said; `resource` (e.g. "S3 bucket 'b'") is named when
// it does not exist or the credentials may not use it. 5xx is temporary, the rest
// permanent (throttling and network errors were retried by Http::send).
CloudStorageError response_error(const std::string& what, const Response& r,
                                 const std::string& resource);

}  // namespace slimta::cloud
