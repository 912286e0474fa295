// What an SMTP server's sessions share (settings, the thread pools, limits), and one
// session's dialogue (session.cc), which SmtpServer (server.cc) runs per connection.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>

#include "disk/permissions.h"
#include "slimta/metrics.h"
#include "slimta/reception.h"
#include "slimta/smtp_server.h"
#include "smtp/auth_guard.h"
#include "smtp/relay_rules.h"
#include "smtp/session_io.h"

namespace slimta::smtp {

// Counts a refused command or connection (a 4xx or 5xx `reply`) by its reason.
void count_rejection(metrics::Registry* m, std::string_view reply);

// A log line that repeats (an attacker can make it repeat) is said at most once per
// period, with how many times it happened since: due() answers whether to say it now.
// Event-loop thread only.
class LogLimiter {
 public:
  // nullopt: hold this one back; else how many happened since the last line said.
  std::optional<size_t> due() {
    ++happened_;
    auto now = std::chrono::steady_clock::now();
    if (said_once_ && now - last_ < std::chrono::seconds(5)) return std::nullopt;
    said_once_ = true;
    last_ = now;
    return std::exchange(happened_, 0);
  }

 private:
  std::chrono::steady_clock::time_point last_;
  bool said_once_ = false;
  size_t happened_ = 0;
};

// What the options make, replaced as a whole by SmtpServer::reload(): a session keeps
// the settings it started with.
struct Settings {
  explicit Settings(SmtpServerOptions o)
      : options(std::move(o)), hostname(options.hostname.empty() ? host_name() : options.hostname) {
    rules = smtp::make_relay_rules(options.accept_domains, options.known_recipients,
                                   options.postmaster);
    rules.sender_logins = options.sender_logins;
    max_sessions = options.max_sessions;
    if (max_sessions == 0) {
      rlimit fds{};
      ::getrlimit(RLIMIT_NOFILE, &fds);
      size_t limit = fds.rlim_cur == RLIM_INFINITY ? 100000 : fds.rlim_cur;
      max_sessions = std::clamp<size_t>(limit > 48 ? (limit - 32) / 2 : 8, 8, 10000);
    }
    if (options.tls_certificate_file.empty() != options.tls_key_file.empty())
      throw InvalidArgument("smtp server: give both a TLS certificate file and a key file");
    if (options.tls_certificate_file.empty()) return;
    tls.emplace(asio::ssl::context::tls_server);
    tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    // TLS 1.2 with Mozilla's "intermediate" suites only: forward-secret key exchange
    // and AEAD ciphers (no RSA key exchange, no CBC); TLS 1.3 keeps OpenSSL's set.
    ::SSL_CTX_set_cipher_list(tls->native_handle(),
                              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                              "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"
                              "DHE-RSA-CHACHA20-POLY1305");
    disk::check_permissions(options.tls_certificate_file, "TLS certificate file",
                            disk::FileUse::setting);
    disk::check_permissions(options.tls_key_file, "TLS key file", disk::FileUse::secret);
    asio::error_code ec;
    tls->use_certificate_chain_file(options.tls_certificate_file, ec);
    if (ec) {
      throw InvalidArgument("smtp server: cannot use TLS certificate file '" +
                            options.tls_certificate_file + "': " + ec.message());
    }
    tls->use_private_key_file(options.tls_key_file, asio::ssl::context::pem, ec);
    if (ec) {
      throw InvalidArgument("smtp server: cannot use TLS key file '" + options.tls_key_file +
                            "': " + ec.message());
    }
  }

  const SmtpServerOptions options;
  const std::string hostname;
  mutable std::optional<asio::ssl::context> tls;  // set when STARTTLS is offered
  smtp::RelayRules rules;
  size_t max_sessions = 0;
};

// What every session shares.
struct Shared {
  Shared(SmtpServerOptions o, Reception& r)
      : reception(r),
        pool(o.deliver_threads),
        hashing(std::max(1u, std::thread::hardware_concurrency())),
        auth_guard(smtp::AuthLimits{o.auth_failures_per_client, o.auth_failures_per_user,
                                    o.auth_lockout_window}),
        settings(std::make_shared<const Settings>(std::move(o))) {}

  Reception& reception;
  asio::thread_pool pool;      // runs reception.receive()
  asio::thread_pool hashing;   // runs the password checks of AUTH
  smtp::AuthGuard auth_guard;  // AUTH failures across sessions
  std::atomic<std::shared_ptr<const Settings>> settings;
  LogLimiter over_client_limit, over_session_limit, accept_failed;  // event-loop thread
  std::unordered_map<std::string, size_t> per_client;  // sessions by address (loop thread)

  // Counts a session from `ip`; false (and not counted) when it has `limit` already.
  bool admit(const std::string& ip, size_t limit) {
    size_t& n = per_client[ip];
    if (n >= limit) {
      if (n == 0) per_client.erase(ip);
      return false;
    }
    ++n;
    return true;
  }
  void release(const std::string& ip) {
    auto it = per_client.find(ip);
    if (it != per_client.end() && --it->second == 0) per_client.erase(it);
  }
  std::atomic<size_t> accepted_messages{0};
};

// One session's whole dialogue on `socket`, until QUIT, the client going away or a
// timeout.
awaitable<void> serve_session(Shared& server, tcp::socket& socket, ListenerRole role);

}  // namespace slimta::smtp
