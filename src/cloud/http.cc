#include "cloud/http.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include "core/hex.h"
#include "slimta/ascii.h"

namespace slimta::cloud {
namespace {

std::string trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  size_t e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  std::string line(data, size * n);
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = to_lower(line.substr(0, colon));
    (*static_cast<std::map<std::string, std::string>*>(user))[name] = trim(line.substr(colon + 1));
  }
  return size * n;
}

bool throttled(const Response& r) {
  if (r.status == 429 || r.status == 503 || r.status >= 500) return true;
  if (r.status == 400) {
    std::string code = xml_value(r.body, "Code");
    return code == "Throttling" || code == "ThrottlingException" || code == "RequestThrottled" ||
           r.body.find("ThrottlingException") != std::string::npos;
  }
  return false;
}

}  // namespace

std::string process_environment(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

Credentials resolve_credentials(const AwsOptions& aws, const Environment& env) {
  if (!aws.access_key_id.empty())
    return {aws.access_key_id, aws.secret_access_key, aws.session_token};
  if (!env("AWS_ACCESS_KEY_ID").empty()) {
    return {env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"), env("AWS_SESSION_TOKEN")};
  }
  std::string profile = !aws.profile.empty()          ? aws.profile
                        : !env("AWS_PROFILE").empty() ? env("AWS_PROFILE")
                                                      : "default";
  std::string file = !env("AWS_SHARED_CREDENTIALS_FILE").empty()
                         ? env("AWS_SHARED_CREDENTIALS_FILE")
                         : env("HOME") + "/.aws/credentials";
  std::ifstream in(file);
  Credentials c;
  std::string line, section;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    if (section != profile) continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = trim(line.substr(0, eq)), v = trim(line.substr(eq + 1));
    if (k == "aws_access_key_id") c.key = v;
    if (k == "aws_secret_access_key") c.secret = v;
    if (k == "aws_session_token") c.token = v;
  }
  if (c.key.empty() || c.secret.empty()) {
    throw CloudStorageError::permanent(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile '" +
        profile + "' in " + file);
  }
  return c;
}

Http::Http(double timeout, std::string region, Credentials credentials)
    : timeout_(timeout), region_(std::move(region)), creds_(std::move(credentials)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

Http::~Http() = default;

void Http::HandleCleanup::operator()(void* handle) const { curl_easy_cleanup(handle); }

Http::Handle Http::take_handle() {
  {
    std::lock_guard lock(mu_);
    if (!handles_.empty()) {
      Handle h = std::move(handles_.back());
      handles_.pop_back();
      return h;
    }
  }
  Handle h(curl_easy_init());
  if (!h) throw CloudStorageError::temporary("curl_easy_init failed (out of memory?)");
  return h;
}

void Http::give_handle(Handle h) {
  std::lock_guard lock(mu_);
  handles_.push_back(std::move(h));
}

Response Http::send(const Request& req) {
  std::string sigv4 = "aws:amz:" + region_ + ":" + req.service;
  std::string userpwd = creds_.key + ":" + creds_.secret;
  thread_local std::mt19937 rng(std::random_device{}());
  std::string last_error;
  bool unanswered = false;  // an attempt that may have reached the server went unanswered
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    if (attempt > 0) {
      // 100 ms, 200 ms, 400 ms ... with jitter, so that many clients do not retry in step.
      int base = 100 << (attempt - 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(base / 2 + rng() % base));
    }
    {
      std::lock_guard lock(counts_mu_);
      ++counts_[req.kind];
    }
    Handle handle = take_handle();
    CURL* h = handle.get();
    curl_easy_reset(h);
    Response resp;
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(nullptr,
                                                                            curl_slist_free_all);
    auto add_header = [&](const std::string& line) {
      curl_slist* grown = curl_slist_append(header_list.get(), line.c_str());
      if (!grown) throw std::bad_alloc();
      static_cast<void>(header_list.release());  // owned by `grown` now
      header_list.reset(grown);
    };
    for (const auto& [k, v] : req.headers) add_header(k + ": " + v);
    add_header("x-amz-content-sha256: " + sha256_hex(req.body));
    if (!creds_.token.empty()) add_header("x-amz-security-token: " + creds_.token);
    curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                     static_cast<long>((timeout_ + req.extra_timeout) * 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min(timeout_, 10.0) * 1000));
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(h, CURLOPT_USERPWD, userpwd.c_str());
    if (req.method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (req.method != "GET") {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }
    if (!req.body.empty() || req.method == "PUT" || req.method == "POST") {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, header_list.get());
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp.body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &resp.headers);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp.status);
    if (rc != CURLE_OK) {
      last_error = curl_easy_strerror(rc);
      unanswered |= rc != CURLE_COULDNT_CONNECT && rc != CURLE_COULDNT_RESOLVE_HOST &&
                    rc != CURLE_COULDNT_RESOLVE_PROXY;
      continue;  // the handle is dropped: its connection may be half-used
    }
    give_handle(std::move(handle));
    if (throttled(resp)) {
      last_error = describe_error(resp);
      continue;
    }
    return resp;
  }
  std::string what = req.kind + " " + req.url + " failed after " + std::to_string(kAttempts) +
                     " attempts: " + last_error;
  throw unanswered ? CloudStorageError::unanswered(what) : CloudStorageError::temporary(what);
}

std::map<std::string, uint64_t> Http::counts() const {
  std::lock_guard lock(counts_mu_);
  return counts_;
}

std::string uri_encode(std::string_view s, bool encode_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (c == '/' && !encode_slash)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return to_hex(std::string_view(reinterpret_cast<const char*>(digest), len));
}

std::string xml_value(std::string_view xml, std::string_view tag, size_t* pos) {
  std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  size_t start = pos ? *pos : 0;
  size_t b = xml.find(open, start);
  if (b == std::string_view::npos) {
    if (pos) *pos = std::string_view::npos;
    return "";
  }
  b += open.size();
  size_t e = xml.find(close, b);
  if (e == std::string_view::npos) e = xml.size();
  if (pos) *pos = e;
  std::string_view raw = xml.substr(b, e - b);
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '&') {
      out += raw[i];
      continue;
    }
    size_t semi = raw.find(';', i);
    if (semi == std::string_view::npos) {
      out += std::string(raw.substr(i));
      break;
    }
    std::string_view ent = raw.substr(i + 1, semi - i - 1);
    if (ent == "amp")
      out += '&';
    else if (ent == "lt")
      out += '<';
    else if (ent == "gt")
      out += '>';
    else if (ent == "quot")
      out += '"';
    else if (ent == "apos")
      out += '\'';
    else if (!ent.empty() && ent[0] == '#')
      out += static_cast<char>(std::strtol(std::string(ent.substr(ent[1] == 'x' ? 2 : 1)).c_str(),
                                           nullptr, ent[1] == 'x' ? 16 : 10));
    else
      out += std::string(raw.substr(i, semi - i + 1));
    i = semi;
  }
  return out;
}

std::string error_code(const Response& r) {
  if (!r.body.starts_with("{")) return xml_value(r.body, "Code");
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::string type = j.is_object() && j.contains("__type") && j["__type"].is_string()
                         ? j["__type"].get<std::string>()
                         : "";
  return type.substr(type.find('#') + 1);  // npos + 1 == 0: all of it
}

std::string describe_error(const Response& r) {
  std::string message;
  if (r.body.starts_with("{")) {
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    for (const char* key : {"message", "Message"})
      if (j.is_object() && j.contains(key) && j[key].is_string()) message = j[key];
  } else {
    message = xml_value(r.body, "Message");
  }
  std::string code = error_code(r);
  std::string out = "HTTP " + std::to_string(r.status);
  if (!code.empty()) out += " " + code;
  if (!message.empty()) out += ": " + message;
  return out;
}

CloudStorageError response_error(const std::string& what, const Response& r,
                                 const std::string& resource) {
  std::string code = error_code(r);
  if (code == "NoSuchBucket" || code == "QueueDoesNotExist" ||
      code == "AWS.SimpleQueueService.NonExistentQueue") {
    return CloudStorageError::permanent(resource + " does not exist");
  }
  if (r.status == 403) {
    return CloudStorageError::permanent(what + " refused (" + describe_error(r) +
                                        "): check the credentials and their permissions on " +
                                        resource);
  }
  std::string text = what + " failed: " + describe_error(r);
  return r.status >= 500 ? CloudStorageError::temporary(text) : CloudStorageError::permanent(text);
}

}  // namespace slimta::cloud
