#include "support/moto_server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cloud/http.h"
#include "support/test_util.h"

namespace slimta::testing {
namespace {

// moto_server from PATH, or from pyenv when PATH lacks its shims. (The server itself is
// started through tests/support/moto_serial.py, moto's app with serialised requests.)
std::string find_moto() {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  const char* home = std::getenv("HOME");
  if (home) path += std::string(":") + home + "/.pyenv/shims";
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t colon = path.find(':', pos);
    std::string dir =
        path.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
    if (!dir.empty() && ::access((dir + "/moto_server").c_str(), X_OK) == 0)
      return dir + "/moto_server";
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  if (home) {  // pyenv's own install, when even its shims are not set up
    std::error_code ec;
    for (const auto& v :
         std::filesystem::directory_iterator(std::string(home) + "/.pyenv/versions", ec)) {
      std::string bin = v.path().string() + "/bin/moto_server";
      if (::access(bin.c_str(), X_OK) == 0) return bin;
    }
  }
  throw std::runtime_error(
      "moto_server not found on PATH or under ~/.pyenv (it comes with python3's moto)");
}

}  // namespace

bool MotoServer::skipped() {
  const char* v = std::getenv("SLIMTA_SKIP_MOTO");
  return v && std::string(v) == "1";
}

MotoServer::MotoServer(std::map<std::string, std::string> extra_env, bool detached)
    : detached_(detached) {
  // The python that has moto: the one next to moto_server (a pyenv shim or a venv).
  std::string moto = find_moto();
  std::string python = std::filesystem::path(moto).parent_path() / "python3";
  if (::access(python.c_str(), X_OK) != 0) python = "python3";
  std::string script = SLIMTA_SOURCE_DIR "/tests/support/moto_serial.py";
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  Exec exec({python, script, "-H", "127.0.0.1"}, extra_env);
  pid_ = ::fork();
  if (pid_ == 0) {
    if (detached) {
      ::setsid();
    } else {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    }
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(out[1], 1);
    ::dup2(devnull, 2);
    exec.run();
  }
  ::close(out[1]);
  // "port N" once it listens on the port it bound.
  std::string said;
  char buf[256];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (said.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{out[0], POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    said.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  if (said.starts_with("port ")) port_ = std::atoi(said.c_str() + 5);
  if (port_ <= 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    throw std::runtime_error("moto_server did not start (it said '" + said + "', exit status " +
                             std::to_string(WEXITSTATUS(status)) + ")");
  }
}

MotoServer::~MotoServer() {
  if (pid_ > 0 && !detached_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

AwsOptions MotoServer::aws() const {
  AwsOptions o;
  o.endpoint = endpoint();
  o.access_key_id = "test";
  o.secret_access_key = "test";
  return o;
}

void MotoServer::create_bucket(const std::string& bucket) const {
  cloud::Http http(10, "us-east-1", {"test", "test", ""});
  auto r = http.send(cloud::make_request("PUT", endpoint() + "/" + bucket, "s3", "create bucket"));
  if (r.status != 200) throw std::runtime_error("cannot create bucket " + bucket + ": " + r.body);
}

std::map<std::string, uint64_t> MotoServer::request_counts() const {
  cloud::Http http(10, "us-east-1", {"test", "test", ""});
  auto r = http.send(cloud::make_request("GET", endpoint() + "/__counts", "s3", "counts"));
  if (r.status != 200) throw std::runtime_error("cannot read moto's request counts: " + r.body);
  return nlohmann::json::parse(r.body).get<std::map<std::string, uint64_t>>();
}

std::string MotoServer::create_queue(const std::string& name) const {
  cloud::Http http(10, "us-east-1", {"test", "test", ""});
  auto req = cloud::make_request("POST", endpoint() + "/", "sqs", "create queue");
  req.headers = {{"Content-Type", "application/x-amz-json-1.0"},
                 {"X-Amz-Target", "AmazonSQS.CreateQueue"}};
  req.body = nlohmann::json{{"QueueName", name}}.dump();
  auto r = http.send(req);
  if (r.status != 200) throw std::runtime_error("cannot create queue " + name + ": " + r.body);
  return nlohmann::json::parse(r.body).at("QueueUrl");
}

MotoServer& shared_moto() {
  static auto server = [] {
    if (auto found = test_server("moto"))
      return std::make_unique<MotoServer>(found->at("port").get<int>());
    return std::make_unique<MotoServer>();
  }();
  return *server;
}

}  // namespace slimta::testing
