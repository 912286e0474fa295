#include "cloud/moto_server.h"

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

#include "cloud/http.h"
#include "test_util.h"

namespace slimta::testing {
namespace {

// moto_server from PATH, or from pyenv when PATH lacks its shims. (The server itself is
// started through tests/cloud/moto_serial.py, moto's app with serialised requests.)
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

MotoServer::MotoServer(std::map<std::string, std::string> extra_env) : port_(free_port()) {
  // The python that has moto: the one next to moto_server (a pyenv shim or a venv).
  std::string moto = find_moto();
  std::string python = std::filesystem::path(moto).parent_path() / "python3";
  if (::access(python.c_str(), X_OK) != 0) python = "python3";
  std::string script = SLIMTA_SOURCE_DIR "/tests/cloud/moto_serial.py";
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (const auto& [k, v] : extra_env) ::setenv(k.c_str(), v.c_str(), 1);
    std::string port = std::to_string(port_);
    ::freopen("/dev/null", "w", stdout);
    ::freopen("/dev/null", "w", stderr);
    ::execlp(python.c_str(), "python3", script.c_str(), "-H", "127.0.0.1", "-p", port.c_str(),
             nullptr);
    ::_exit(127);
  }
  cloud::Http http(2, "us-east-1", {"test", "test", ""});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (true) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("moto_server exited at start (status " +
                               std::to_string(WEXITSTATUS(status)) + ")");
    }
    try {
      // /moto-api/ answers without authentication, so it does not spend the free
      // requests of INITIAL_NO_AUTH_ACTION_COUNT.
      auto r =
          http.send(cloud::make_request("GET", endpoint() + "/moto-api/data.json", "s3", "probe"));
      if (r.status == 200) break;
    } catch (const QueueError&) {
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("moto_server did not start in 60 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

MotoServer::~MotoServer() {
  if (pid_ > 0) {
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
  static MotoServer server;
  return server;
}

}  // namespace slimta::testing
