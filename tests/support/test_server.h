// An SmtpServer for the tests: on 127.0.0.1 and a free port (in the role given), run
// on its own thread, its reception (with `door`'s options; our host name by default)
// storing what it accepts in a MemoryStorage, or failing the write (retryable, "disk
// full") while `fail` is set. Stopped and joined on destruction.
#pragma once

#include <atomic>
#include <thread>

#include "slimta/memory_storage.h"
#include "slimta/reception.h"
#include "slimta/smtp_server.h"

namespace slimta::testing {

class TestSmtpServer {
 public:
  explicit TestSmtpServer(SmtpServerOptions options = {}, ListenerRole role = ListenerRole::smtp,
                          ReceptionOptions door = {}) {
    if (options.hostname.empty()) options.hostname = "mx.test.example";
    if (door.hostname.empty()) door.hostname = options.hostname;
    reception_ = std::make_unique<Reception>(
        [this](Envelope&& env) {
          EnqueueResult r;
          if (fail) {
            r.error = "disk full";
            r.retryable = true;
            return r;
          }
          r.id = storage.write(env, 0);
          return r;
        },
        Reception::room_in(storage), std::move(door));
    server_ = std::make_unique<SmtpServer>(options, *reception_);
    port_ = server_->listen("127.0.0.1", 0, role);
    thread_ = std::thread([this] { server_->run(); });
  }
  ~TestSmtpServer() {
    server_->stop();
    thread_.join();
  }
  TestSmtpServer(const TestSmtpServer&) = delete;
  TestSmtpServer& operator=(const TestSmtpServer&) = delete;

  uint16_t port() const { return port_; }
  SmtpServer& server() { return *server_; }
  Reception& reception() { return *reception_; }

  MemoryStorage storage;
  std::atomic<bool> fail{false};

 private:
  std::unique_ptr<Reception> reception_;
  std::unique_ptr<SmtpServer> server_;
  std::thread thread_;
  uint16_t port_ = 0;
};

}  // namespace slimta::testing
