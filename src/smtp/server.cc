// The SMTP server. Why it is built this way:
//
// * Asio with C++20 coroutines: one coroutine per session reads lines and answers
//   them in order, which is how RFC 5321 describes the dialogue. One event-loop thread
//   serves every session; the blocking `deliver` (a storage write that fsyncs) runs on
//   a thread pool, so the loop never waits for a disk or a network peer.
// * PIPELINING: replies are collected and written when no further complete line is
//   already buffered, so a pipelined batch gets its replies in one write.
// * Lines are split on LF; the end of DATA is only "." on a line of its own ended by
//   CRLF after a CRLF, so a bare-LF "." (SMTP smuggling) is message text, not the end.
//   Overlong lines are consumed to their end and refused, never buffered whole.
// * STARTTLS (RFC 3207) with OpenSSL through asio::ssl, TLS 1.2 and later; what the
//   client pipelined after STARTTLS is dropped, and the session starts over.
// * AUTH's password check (crypt_r: ~15 ms for yescrypt) runs on a pool of its own,
//   neither on the event loop nor among the storage writes (clients failing AUTH by the
//   hundred cannot delay mail being stored), and failures are answered late (a timer,
//   not a sleep).
#include "slimta/smtp_server.h"

#include <spdlog/spdlog.h>

#include <list>
#include <set>

#include "smtp/session.h"

namespace slimta {

using smtp::awaitable;
using smtp::count_rejection;
using smtp::Settings;
using smtp::Shared;
using smtp::tcp;
using smtp::use_awaitable;
using namespace asio::experimental::awaitable_operators;

struct SmtpServer::Impl {
  Impl(SmtpServerOptions o, Reception& r) : shared(std::move(o), r) {}

  Shared shared;
  asio::io_context io;
  std::list<tcp::acceptor> acceptors;
  std::atomic<size_t> open_sessions{0};
  std::set<tcp::socket*> sockets;  // open sessions' sockets (event-loop thread only)
  bool stopping = false;           // event-loop thread only
  bool has_submission = false;     // a listener needs AUTH (so TLS and users)

  awaitable<void> accept_loop(tcp::acceptor& acceptor, ListenerRole role);
  awaitable<void> refuse(tcp::socket socket);
  awaitable<void> session(tcp::socket socket, ListenerRole role);
};

awaitable<void> SmtpServer::Impl::accept_loop(tcp::acceptor& acceptor, ListenerRole role) {
  // An accept that fails (out of file descriptors: the connection stays in the
  // backlog, so a retry at once fails again) waits, longer each time up to a second,
  // and is logged at most every 5 s with a count, until an accept works again.
  std::chrono::milliseconds backoff(0);
  asio::steady_timer timer(io);
  while (true) {
    tcp::socket socket(io);
    asio::error_code ec;
    co_await acceptor.async_accept(socket, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (stopping) co_return;
      if (auto n = shared.accept_failed.due()) {
        spdlog::warn("smtp: accept failed {} times: {}; waiting before the next", *n, ec.message());
      }
      backoff =
          std::clamp(backoff * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
      timer.expires_after(backoff);
      co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    if (backoff.count() != 0) {
      spdlog::info("smtp: accepting again");
      backoff = std::chrono::milliseconds(0);
    }
    if (open_sessions >= shared.settings.load()->max_sessions) {
      asio::co_spawn(io, refuse(std::move(socket)), asio::detached);
      continue;
    }
    asio::co_spawn(io, session(std::move(socket), role), asio::detached);
  }
}

// Over max_sessions: 421, given at most a second to be written, then closed.
awaitable<void> SmtpServer::Impl::refuse(tcp::socket socket) {
  auto settings = shared.settings.load();
  if (auto n = shared.over_session_limit.due()) {
    spdlog::warn("smtp: {} sessions open (the limit): refused {} connections",
                 settings->max_sessions, *n);
  }
  std::string text =
      "421 4.7.0 " + settings->hostname + " Error: too many connections, try again later\r\n";
  count_rejection(settings->options.metrics, text);
  asio::steady_timer timer(io, std::chrono::seconds(1));
  asio::error_code ignored;
  co_await (
      asio::async_write(socket, asio::buffer(text), asio::redirect_error(use_awaitable, ignored)) ||
      timer.async_wait(asio::redirect_error(use_awaitable, ignored)));
  socket.close(ignored);
}

awaitable<void> SmtpServer::Impl::session(tcp::socket socket, ListenerRole role) {
  ++open_sessions;
  if (metrics::Registry* m = shared.settings.load()->options.metrics)
    m->counter("slimta_smtp_sessions_total", "SMTP connections accepted").inc();
  sockets.insert(&socket);
  co_await smtp::serve_session(shared, socket, role);
  asio::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
  sockets.erase(&socket);
  --open_sessions;
}

SmtpServer::SmtpServer(SmtpServerOptions options, Reception& reception)
    : impl_(std::make_unique<Impl>(std::move(options), reception)) {
  if (metrics::Registry* m = impl_->shared.settings.load()->options.metrics) {
    m->counter("slimta_smtp_sessions_total", "SMTP connections accepted");
    m->counter("slimta_auth_failures_total", "AUTH attempts that failed");
  }
}

SmtpServer::~SmtpServer() {
  stop();
  impl_->shared.pool.join();
  impl_->shared.hashing.join();
}

namespace {
// What a submission listener needs: TLS, and users to authenticate.
bool offers_auth(const Settings& s) { return s.tls && s.options.users; }

// The address a listener binds, checked against what its role needs.
asio::ip::address listener_address(const Settings& s, const std::string& host, ListenerRole role) {
  asio::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) throw InvalidArgument("listen address '" + host + "' is not an IP address");
  if (role != ListenerRole::smtp && !offers_auth(s)) {
    throw InvalidArgument("a submission listener (" + host +
                          ") needs a TLS certificate and key, and users to authenticate");
  }
  return address;
}
}  // namespace

void SmtpServer::check(const SmtpServerOptions& options,
                       const std::vector<std::pair<std::string, ListenerRole>>& listeners) {
  Settings settings(options);
  for (const auto& [host, role] : listeners) listener_address(settings, host, role);
}

uint16_t SmtpServer::listen(const std::string& host, uint16_t port, ListenerRole role) {
  auto address = listener_address(*impl_->shared.settings.load(), host, role);
  tcp::acceptor* acceptor = nullptr;
  try {
    acceptor = &impl_->acceptors.emplace_back(impl_->io, tcp::endpoint(address, port));
  } catch (const asio::system_error& e) {
    throw QueueError("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                     e.code().message());
  }
  impl_->has_submission |= role != ListenerRole::smtp;
  asio::co_spawn(impl_->io, impl_->accept_loop(*acceptor, role), asio::detached);
  return acceptor->local_endpoint().port();
}

void SmtpServer::run() { impl_->io.run(); }

// Closing the acceptor and the sockets ends every coroutine; run() returns when no
// work is left, that is after the writes under way on the pool have finished.
void SmtpServer::stop() {
  asio::post(impl_->io, [impl = impl_.get()] {
    if (impl->stopping) return;
    impl->stopping = true;
    asio::error_code ignored;
    for (tcp::acceptor& a : impl->acceptors) a.close(ignored);
    for (tcp::socket* s : impl->sockets) s->close(ignored);
  });
}

void SmtpServer::reload(SmtpServerOptions options) {
  auto next = std::make_shared<const Settings>(std::move(options));  // throws: nothing changes
  if (impl_->has_submission && !offers_auth(*next)) {
    throw InvalidArgument("the submission listeners need a TLS certificate and key, and users");
  }
  impl_->shared.settings.store(std::move(next));
}

std::optional<std::string> SmtpServer::refusal(const std::string& client_ip,
                                               const std::string& recipient,
                                               bool authenticated) const {
  auto settings = impl_->shared.settings.load();
  bool may_relay = authenticated || settings->options.relay_networks.contains(client_ip);
  return smtp::check_recipient(settings->rules, recipient, may_relay);
}

bool SmtpServer::vouches_for(const ClientInfo& client) const {
  return !client.auth.empty() ||
         impl_->shared.settings.load()->options.relay_networks.contains(client.ip);
}

size_t SmtpServer::sessions() const { return impl_->open_sessions.load(); }
size_t SmtpServer::accepted() const { return impl_->shared.accepted_messages.load(); }

}  // namespace slimta
