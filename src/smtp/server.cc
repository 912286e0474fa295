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

#include <sys/resource.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <ctime>
#include <list>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include <openssl/crypto.h>

#include "smtp/command.h"
#include "smtp/proxy_header.h"
#include "smtp/relay_rules.h"
#include "smtp/sasl.h"

namespace slimta {
namespace {

// The reason label of a refused command (a 4xx or 5xx reply), from the reply: a small
// fixed set, so the metric's series stay bounded whatever clients send.
const char* rejection_reason(std::string_view reply) {
  struct Rule {
    std::string_view has;
    const char* reason;
  };
  static constexpr Rule kRules[] = {
      {"5.7.11", "tls_required"},
      {"5.7.1", "relay_denied"},
      {"5.1.1", "unknown_recipient"},
      {"too many connections", "sessions"},
      {"5.3.4", "too_big"},
      {"4.3.1", "resources"},
      {"5.4.6", "loop"},
      {"5.7.0", "auth_required"},
      {"5.7.8", "auth_failed"},
      {"4.4.2", "timeout"},
      {"Too many errors", "errors"},
      {"Too many failed", "auth_failed"},
      {"4.3.0", "storage"},
      {"5.6.0", "storage"},
  };
  for (const Rule& r : kRules)
    if (reply.find(r.has) != std::string_view::npos) return r.reason;
  if (reply.starts_with("50")) return "syntax";
  return "other";
}

void count_rejection(metrics::Registry* m, std::string_view reply) {
  if (!m || reply.empty() || (reply[0] != '4' && reply[0] != '5')) return;
  m->counter("slimta_smtp_rejections_total", "SMTP commands and connections refused, by reason",
             {{"reason", rejection_reason(reply)}})
      .inc();
}

using namespace asio::experimental::awaitable_operators;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

// The session's byte stream: the TCP socket, or TLS over it after STARTTLS.
class Stream {
 public:
  explicit Stream(tcp::socket& socket) : socket_(socket) {}

  awaitable<size_t> read_some(asio::mutable_buffer b, asio::error_code& ec) {
    if (tls_) co_return co_await tls_->async_read_some(b, asio::redirect_error(use_awaitable, ec));
    co_return co_await socket_.async_read_some(b, asio::redirect_error(use_awaitable, ec));
  }
  awaitable<void> write(asio::const_buffer b, asio::error_code& ec) {
    if (tls_) {
      co_await asio::async_write(*tls_, b, asio::redirect_error(use_awaitable, ec));
    } else {
      co_await asio::async_write(socket_, b, asio::redirect_error(use_awaitable, ec));
    }
  }
  // The server side of a TLS handshake, for at most `timeout`. Its own timer rather
  // than the session's watchdog: a session that times out here ends without the 421,
  // which could not be written into a half-made TLS stream anyway.
  awaitable<void> start_tls(asio::ssl::context& context, std::chrono::milliseconds timeout,
                            asio::error_code& ec) {
    tls_.emplace(socket_, context);
    asio::steady_timer timer(socket_.get_executor(), timeout);
    auto first = co_await (tls_->async_handshake(asio::ssl::stream_base::server,
                                                 asio::redirect_error(use_awaitable, ec)) ||
                           timer.async_wait(use_awaitable));
    if (first.index() == 1) ec = asio::error::timed_out;
  }
  bool tls() const { return tls_.has_value(); }
  auto get_executor() { return socket_.get_executor(); }

 private:
  tcp::socket& socket_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
};

// When a session gives up on a client: the session's watchdog ends it once `at` has
// passed. A write, and the first byte of a command line, move it `idle` ahead (so a
// line must be complete within `idle` of its first byte: one byte every few seconds
// does not keep a session); the message data has one deadline for all of it
// (fix()). It is held while the session itself waits (for the storage). One timer
// per session rather than one per read.
struct Deadline {
  using Clock = std::chrono::steady_clock;
  Clock::time_point at;
  std::chrono::milliseconds idle;
  bool held = false;
  bool fixed = false;  // touch() leaves `at` alone
  void touch() {
    if (!fixed) at = Clock::now() + idle;
    held = false;
  }
  void fix(std::chrono::milliseconds limit) {
    at = Clock::now() + limit;
    held = false;
    fixed = true;
  }
  void unfix() { fixed = false; }
  void hold() { held = true; }
  bool passed() const { return !held && Clock::now() >= at; }
  // When the watchdog looks again.
  Clock::time_point next() const { return held ? Clock::now() + idle : at; }
};

// Reads LF-terminated lines from a stream, at most `limit` bytes each: a longer line
// is consumed to its end and reported as too long, with no content.
class LineReader {
 public:
  LineReader(Stream& stream, Deadline& deadline) : stream_(stream), deadline_(deadline) {}

  struct Line {
    std::string_view text;  // without the line ending; valid until the next take()/fill()
    bool crlf = false;
    bool too_long = false;
  };

  // The next line, read from the stream when none is buffered; throws
  // asio::system_error at end of stream or on an error.
  awaitable<Line> next(size_t limit) {
    Line line;
    while (!take(limit, line)) co_await fill();
    co_return line;
  }

  // Completes `line` from what is buffered, without waiting: false when more must be
  // read first (fill()), with `line` keeping what was learnt (a line too long).
  bool take(size_t limit, Line& line) {
    size_t nl = buffer_.find('\n', pos_ + scanned_);
    if (nl == std::string::npos) {
      if (buffer_.size() - pos_ > limit + 1) {  // no end in sight: drop what we have
        line.too_long = true;
        dropped_cr_ = buffer_.back() == '\r';
        buffer_.clear();
        pos_ = 0;
      }
      scanned_ = buffer_.size() - pos_;
      return false;
    }
    line.crlf = nl > pos_ ? buffer_[nl - 1] == '\r' : line.too_long && dropped_cr_;
    if (!line.too_long) {
      size_t length = nl - pos_ - (line.crlf ? 1 : 0);
      line.text = std::string_view(buffer_).substr(pos_, length);
      if (length > limit) {
        line.text = {};
        line.too_long = true;
      }
    }
    pos_ = nl + 1;
    scanned_ = 0;
    return true;
  }

  // Reads more from the stream.
  awaitable<void> fill() {
    if (pos_ > 0) {  // what was taken goes now, so the buffer only holds a partial line
      buffer_.erase(0, pos_);
      pos_ = 0;
    }
    char chunk[16 * 1024];
    asio::error_code ec;
    bool new_line = buffer_.empty();  // this read brings the first byte of a line
    size_t n = co_await stream_.read_some(asio::buffer(chunk), ec);
    if (ec) throw asio::system_error(ec);
    if (new_line) deadline_.touch();
    buffer_.append(chunk, n);
  }

  // What is buffered and not yet taken, and taking `n` bytes of it raw.
  std::string_view pending() const { return std::string_view(buffer_).substr(pos_); }
  void consume(size_t n) {
    pos_ += n;
    scanned_ = 0;
  }

  // Whether a complete line is already buffered (a pipelined command).
  bool has_line() const { return buffer_.find('\n', pos_) != std::string::npos; }
  // Drops what is buffered: plaintext sent after STARTTLS before the handshake, which
  // must not be taken as commands of the TLS session (CVE-2011-0411).
  void discard() {
    buffer_.clear();
    pos_ = scanned_ = 0;
  }

 private:
  Stream& stream_;
  Deadline& deadline_;
  std::string buffer_;
  size_t pos_ = 0;           // where the lines not yet taken begin in buffer_
  size_t scanned_ = 0;       // bytes after pos_ known to hold no LF
  bool dropped_cr_ = false;  // the last byte dropped from an overlong line was CR
};

// A message being received, in chunks of kChunk bytes rather than one string that
// doubles as it grows (a doubling copies, and holds old and new at once): taken
// whole at the end, each chunk is freed as soon as it has been copied, so a message
// never costs much more than its own size. Its bytes are counted in `in_flight`, the
// server's budget for messages in memory.
class MessageBuffer {
 public:
  static constexpr size_t kChunk = 1 << 20;

  explicit MessageBuffer(std::atomic<size_t>& in_flight) : in_flight_(in_flight) {}
  ~MessageBuffer() { in_flight_ -= counted_; }
  MessageBuffer(const MessageBuffer&) = delete;
  MessageBuffer& operator=(const MessageBuffer&) = delete;

  // Appends a line (text and line ending), counting whole chunks against `budget`;
  // false (nothing appended) when the budget would be exceeded.
  bool append(std::string_view a, std::string_view b, size_t budget) {
    size_t n = a.size() + b.size();
    if ((chunks_.empty() || chunks_.back().size() + n > kChunk) && !grow(budget)) return false;
    chunks_.back().append(a).append(b);
    size_ += n;
    return true;
  }
  size_t size() const { return size_; }
  // The message as one string; the chunks are gone.
  std::string take() {
    std::string out;
    out.reserve(size_);
    for (std::string& c : chunks_) {
      out.append(c);
      std::string().swap(c);
    }
    chunks_.clear();
    return out;
  }

 private:
  bool grow(size_t budget) {
    if (in_flight_.fetch_add(kChunk) + kChunk > budget) {
      in_flight_ -= kChunk;
      return false;
    }
    counted_ += kChunk;
    chunks_.emplace_back().reserve(kChunk);
    return true;
  }

  std::atomic<size_t>& in_flight_;
  std::vector<std::string> chunks_;
  size_t size_ = 0;
  size_t counted_ = 0;  // bytes of in_flight_ this buffer holds
};

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
    rules = smtp::make_relay_rules(options.accept_domains, options.known_recipients);
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
        settings(std::make_shared<const Settings>(std::move(o))) {}

  Reception& reception;
  asio::thread_pool pool;     // runs reception.receive()
  asio::thread_pool hashing;  // runs the password checks of AUTH
  std::atomic<std::shared_ptr<const Settings>> settings;
  std::atomic<size_t> bytes_in_flight{0};  // messages being received or stored
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

// One session's state and dialogue.
class Session {
 public:
  Session(Shared& server, tcp::socket& socket, ListenerRole role)
      : server_(server),
        settings_(server.settings.load()),
        opts_(settings_->options),
        door_(server.reception.options()),
        role_(role),
        stream_(socket),
        deadline_{Deadline::Clock::now(), opts_.idle_timeout},
        reader_(stream_, deadline_) {
    asio::error_code ec;
    auto ep = socket.remote_endpoint(ec);
    if (!ec) peer_ip_ = ep.address().to_string();
  }

  ~Session() {
    if (admitted_) server_.release(*admitted_);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // The whole dialogue. Returns at QUIT, or when the client goes away or times out.
  awaitable<void> serve() {
    deadline_.touch();
    auto ended = co_await (dialogue() || watchdog());
    if (ended.index() == 1 && greeted_) {  // a balancer or a TLS handshake gets no 421
      // Said at most once more, briefly: the client may not be reading at all.
      out_ = "421 4.4.2 " + settings_->hostname + " Error: timeout exceeded\r\n";
      asio::error_code ignored;
      asio::steady_timer timer(stream_.get_executor(), std::chrono::seconds(1));
      co_await (stream_.write(asio::buffer(out_), ignored) ||
                timer.async_wait(asio::redirect_error(use_awaitable, ignored)));
    }
  }

 private:
  // run(), ending normally however the session ends, so that the watchdog is cancelled
  // as soon as it does.
  awaitable<void> dialogue() {
    try {
      co_await run();
    } catch (const std::exception& e) {
      // End of stream, a network error, the watchdog or stop(): a message not yet
      // handed over is dropped, as RFC 5321 requires (the client has no 250 for it).
      spdlog::debug("smtp: session with [{}] ended: {}", peer_ip_, e.what());
    }
  }

  // Returns once the deadline has passed (the dialogue is then cancelled).
  awaitable<void> watchdog() {
    asio::steady_timer timer(stream_.get_executor());
    do {
      timer.expires_at(deadline_.next());
      co_await timer.async_wait(use_awaitable);
    } while (!deadline_.passed());
  }

  awaitable<void> run() {
    if (opts_.proxy_from.contains(peer_ip_) && !co_await read_proxy_header()) co_return;
    if (!server_.admit(peer_ip_, opts_.max_sessions_per_client)) {
      if (auto n = server_.over_client_limit.due()) {
        spdlog::warn("smtp: [{}] refused: {} sessions from it already ({} such refusals)", peer_ip_,
                     opts_.max_sessions_per_client, *n);
      }
      if (role_ == ListenerRole::submissions) co_return;  // it expects TLS, not a reply
      reply("421 4.7.0 " + settings_->hostname + " Error: too many connections from your address");
      co_return co_await flush(/*force=*/true);
    }
    admitted_ = peer_ip_;
    if (role_ == ListenerRole::submissions) {
      asio::error_code ec;
      deadline_.hold();  // the handshake has its own time limit
      co_await stream_.start_tls(*settings_->tls, opts_.idle_timeout, ec);
      deadline_.touch();
      if (ec) co_return;
    }
    reply("220 " + settings_->hostname + " ESMTP slimta-queue ready");
    greeted_ = true;
    co_await flush();
    if (reader_.pending().empty()) co_await reader_.fill();
    if (smtp::looks_like_proxy_header(reader_.pending())) {
      spdlog::warn("smtp: [{}] sent a PROXY header but is not in --proxy-from: closed", peer_ip_);
      co_return;
    }
    while (!done_) {
      co_await flush();
      LineReader::Line line = co_await reader_.next(opts_.max_command_line);
      if (line.too_long) {
        error("500 5.5.2 Line too long (the limit is " + std::to_string(opts_.max_command_line) +
              " octets)");
        continue;
      }
      co_await command(smtp::parse_command(line.text));
    }
    co_await flush(/*force=*/true);
  }

  // Reads the PROXY header a load balancer sends first, within opts_.proxy_timeout, and
  // takes the client's address from it. False (the session ends, unanswered: the peer
  // is no SMTP client) when the header is missing or malformed.
  awaitable<bool> read_proxy_header() {
    std::string balancer = peer_ip_;
    deadline_.idle = opts_.proxy_timeout;
    deadline_.touch();
    smtp::ProxyHeader header;
    while (true) {
      header = smtp::parse_proxy_header(reader_.pending());
      if (header.status != smtp::ProxyHeader::Status::incomplete) break;
      co_await reader_.fill();
    }
    deadline_.idle = opts_.idle_timeout;
    deadline_.touch();
    if (header.status == smtp::ProxyHeader::Status::invalid) {
      spdlog::warn("smtp: [{}] is in --proxy-from but sent no valid PROXY header ({}): closed",
                   balancer, header.error);
      co_return false;
    }
    reader_.consume(header.length);
    peer_ip_ = header.source.empty() ? "unknown" : header.source;
    spdlog::debug("smtp: [{}] via proxy [{}]", peer_ip_, balancer);
    co_return true;
  }

  // A client that may send to any domain.
  bool may_relay() const { return !auth_user_.empty() || opts_.relay_networks.contains(peer_ip_); }
  bool auth_offered() const { return opts_.users && stream_.tls(); }

  // One line of an AUTH exchange (RFC 4954: up to 12288 octets); nullopt for a line
  // too long, after saying so.
  awaitable<std::optional<std::string>> auth_response(const std::string& challenge) {
    reply("334 " + challenge);
    co_await flush(/*force=*/true);
    LineReader::Line line = co_await reader_.next(12288);
    if (line.too_long) {
      error("500 5.5.6 Authentication exchange line is too long");
      co_return std::nullopt;
    }
    co_return std::string(line.text);
  }

  // AUTH PLAIN or LOGIN, with the argument after "AUTH ".
  awaitable<void> authenticate(const std::string& arg) {
    size_t sp = arg.find(' ');
    std::string mechanism = smtp::parse_command(arg.substr(0, sp)).verb;
    std::optional<std::string> initial;
    if (sp != std::string::npos) initial = arg.substr(sp + 1);
    std::string user, password;
    auto decode = [&](const std::optional<std::string>& response) -> std::optional<std::string> {
      if (*response == "=") return std::string();  // an empty initial response
      auto d = smtp::base64_decode(*response);
      if (!d) error("501 5.5.2 Cannot decode the response");
      return d;
    };
    auto aborted = [&](const std::optional<std::string>& response) {
      if (*response != "*") return false;
      error("501 5.7.0 Authentication aborted");
      return true;
    };
    if (mechanism == "PLAIN") {
      std::optional<std::string> response = initial;
      if (!response) response = co_await auth_response("");
      if (!response || aborted(response)) co_return;
      auto message = decode(response);
      if (!message) co_return;
      auto credentials = smtp::parse_plain(*message);
      OPENSSL_cleanse(message->data(), message->size());
      if (!credentials) co_return error("501 5.5.2 Malformed PLAIN response");
      // Acting as another user (an authzid) is not supported.
      if (!credentials->authzid.empty() && credentials->authzid != credentials->user)
        credentials->password.clear();
      user = std::move(credentials->user);
      password = std::move(credentials->password);
    } else if (mechanism == "LOGIN") {
      std::optional<std::string> response = initial;
      if (!response) response = co_await auth_response("VXNlcm5hbWU6");  // "Username:"
      if (!response || aborted(response)) co_return;
      auto name = decode(response);
      if (!name) co_return;
      response = co_await auth_response("UGFzc3dvcmQ6");  // "Password:"
      if (!response || aborted(response)) co_return;
      auto secret = decode(response);
      OPENSSL_cleanse(response->data(), response->size());
      if (!secret) co_return;
      user = std::move(*name);
      password = std::move(*secret);
    } else {
      co_return error("504 5.5.4 Unrecognized authentication type");
    }
    deadline_.hold();
    bool ok = !password.empty() &&
              co_await asio::co_spawn(
                  server_.hashing,
                  [&]() -> awaitable<bool> { co_return opts_.users->check(user, password); },
                  use_awaitable);
    OPENSSL_cleanse(password.data(), password.size());
    if (ok) {
      deadline_.touch();
      auth_user_ = std::move(user);
      spdlog::info("smtp: [{}] authenticated as {}", peer_ip_, auth_user_);
      co_return reply("235 2.7.0 Authentication successful");
    }
    // Neither the name (a password typed in the wrong field) nor the response is logged.
    ++auth_failures_;
    spdlog::warn("smtp: [{}] authentication failed ({} in this session)", peer_ip_, auth_failures_);
    asio::steady_timer delay(stream_.get_executor(), opts_.auth_failure_delay * auth_failures_);
    co_await delay.async_wait(use_awaitable);
    deadline_.touch();
    if (opts_.metrics) {
      opts_.metrics->counter("slimta_auth_failures_total", "AUTH attempts that failed").inc();
    }
    error("535 5.7.8 Error: authentication failed");
    if (auth_failures_ >= opts_.max_auth_failures && !done_) {
      reply("421 4.7.0 " + settings_->hostname + " Too many failed authentications");
      done_ = true;
    }
  }

  void reply(const std::string& text) {
    count_rejection(opts_.metrics, text);
    out_ += text + "\r\n";
  }
  void error(const std::string& text) {
    reply(text);
    if (++errors_ >= opts_.max_errors) {
      reply("421 4.7.0 " + settings_->hostname + " Too many errors, closing the connection");
      done_ = true;
    }
  }
  awaitable<void> flush(bool force = false) {
    if (out_.empty() || (!force && reader_.has_line())) co_return;
    std::string out = std::move(out_);
    out_.clear();
    asio::error_code ec;
    deadline_.touch();
    co_await stream_.write(asio::buffer(out), ec);
    if (ec) throw asio::system_error(ec);
  }
  void reset_transaction() {
    mail_.reset();
    rcpts_.clear();
  }

  awaitable<void> command(const smtp::Command& c) {
    const std::string& v = c.verb;
    if (v == "EHLO" || v == "HELO") {
      if (c.arg.empty()) {
        error("501 5.5.4 Syntax: " + v + " hostname");
        co_return;
      }
      // It goes into the Received: line: no control characters, no 8-bit bytes.
      if (std::any_of(c.arg.begin(), c.arg.end(), [](char ch) {
            auto u = static_cast<unsigned char>(ch);
            return u < 0x20 || u >= 0x7f;
          })) {
        co_return error("501 5.5.4 Bad " + v + " name: control or 8-bit characters");
      }
      helo_ = c.arg;
      esmtp_ = v == "EHLO";
      reset_transaction();
      if (!esmtp_) {
        reply("250 " + settings_->hostname);
        co_return;
      }
      reply("250-" + settings_->hostname);
      reply("250-PIPELINING");
      reply("250-SIZE " + std::to_string(door_->max_message_size));
      reply("250-8BITMIME");
      if (settings_->tls && !stream_.tls()) reply("250-STARTTLS");
      if (auth_offered()) reply("250-AUTH PLAIN LOGIN");
      reply("250 ENHANCEDSTATUSCODES");
    } else if (v == "MAIL") {
      if (helo_.empty()) co_return error("503 5.5.1 Error: send HELO/EHLO first");
      if (mail_) co_return error("503 5.5.1 Error: nested MAIL command");
      if (role_ != ListenerRole::smtp && auth_user_.empty())
        co_return error("530 5.7.0 Authentication required");
      std::string err;
      auto path = smtp::parse_path_arg(c.arg, "FROM", err);
      if (!path) co_return error(err);
      for (const auto& [key, value] : path->params) {
        if (key == "SIZE") {
          char* end = nullptr;
          unsigned long long size = std::strtoull(value.c_str(), &end, 10);
          if (value.empty() || *end != '\0') co_return error("501 5.5.4 Bad SIZE parameter");
          if (door_->max_message_size && size > door_->max_message_size)
            co_return error("552 5.3.4 Message size exceeds the limit of " +
                            std::to_string(door_->max_message_size) + " octets");
        } else if (key == "BODY") {
          if (value != "7BIT" && value != "8BITMIME")
            co_return error("501 5.5.4 Unsupported BODY type " + value);
        } else {
          co_return error("555 5.5.4 Unsupported MAIL parameter " + key);
        }
      }
      mail_ = path->address;
      reply("250 2.1.0 Ok");
    } else if (v == "RCPT") {
      if (!mail_) co_return error("503 5.5.1 Error: need MAIL command");
      std::string err;
      auto path = smtp::parse_path_arg(c.arg, "TO", err);
      if (!path) co_return error(err);
      if (path->address.empty()) co_return error("501 5.1.3 Bad recipient address syntax");
      if (!path->params.empty())
        co_return error("555 5.5.4 Unsupported RCPT parameter " + path->params.front().first);
      if (auto refused = smtp::check_recipient(settings_->rules, path->address, may_relay())) {
        spdlog::info("smtp: [{}] RCPT <{}> refused: {}", peer_ip_, path->address, *refused);
        co_return error(*refused);
      }
      if (rcpts_.size() >= opts_.max_recipients)
        co_return reply("452 4.5.3 Error: too many recipients");
      rcpts_.push_back(path->address);
      reply("250 2.1.5 Ok");
    } else if (v == "DATA") {
      if (!mail_) co_return error("503 5.5.1 Error: need MAIL command");
      if (rcpts_.empty()) co_return error("554 5.5.1 Error: no valid recipients");
      if (!c.arg.empty()) co_return error("501 5.5.4 Syntax: DATA");
      if (server_.bytes_in_flight >= opts_.max_bytes_in_flight)
        co_return reply("452 4.3.1 Error: insufficient system resources, try again later");
      if (!server_.reception.has_room(0))
        co_return reply("452 4.3.1 Error: insufficient system storage, try again later");
      reply("354 End data with <CR><LF>.<CR><LF>");
      co_await flush(/*force=*/true);
      deadline_.fix(opts_.data_timeout);  // the whole message, however it trickles in
      co_await data();
      reset_transaction();
    } else if (v == "RSET") {
      reset_transaction();
      reply("250 2.0.0 Ok");
    } else if (v == "NOOP") {
      reply("250 2.0.0 Ok");
    } else if (v == "QUIT") {
      reply("221 2.0.0 Bye");
      done_ = true;
    } else if (v == "VRFY") {
      reply("252 2.5.2 Cannot VRFY user, but will accept the message and attempt delivery");
    } else if (v == "EXPN") {
      error("502 5.5.1 EXPN not available");
    } else if (v == "STARTTLS" && settings_->tls) {
      if (stream_.tls()) co_return error("503 5.5.1 Error: TLS already active");
      if (!c.arg.empty()) co_return error("501 5.5.4 Syntax: STARTTLS");
      reply("220 2.0.0 Ready to start TLS");
      co_await flush(/*force=*/true);
      reader_.discard();
      asio::error_code ec;
      deadline_.hold();  // the handshake has its own time limit
      co_await stream_.start_tls(*settings_->tls, opts_.idle_timeout, ec);
      if (ec) throw asio::system_error(ec);  // the session cannot go on in either mode
      helo_.clear();                         // RFC 3207: the client starts over with EHLO
      reset_transaction();
    } else if (v == "AUTH" && opts_.users) {
      if (!stream_.tls())
        co_return error("538 5.7.11 Encryption required for requested authentication mechanism");
      if (helo_.empty()) co_return error("503 5.5.1 Error: send EHLO first");
      if (!auth_user_.empty()) co_return error("503 5.5.1 Error: already authenticated");
      if (mail_) co_return error("503 5.5.1 Error: MAIL transaction in progress");
      co_await authenticate(c.arg);
    } else if (v == "PROXY") {  // a PROXY header, not first: from a client that may not
      spdlog::warn("smtp: [{}] sent a PROXY header mid-session: closed", peer_ip_);
      done_ = true;
    } else if (v == "STARTTLS" || v == "AUTH" || v == "BDAT") {
      error("502 5.5.1 " + v + " not available");
    } else {
      error("500 5.5.2 Error: command not recognized");
    }
  }

  // Reads the message up to the end marker, then hands it over.
  awaitable<void> data() {
    MessageBuffer message(server_.bytes_in_flight);
    bool too_big = false, line_too_long = false, prev_crlf = true, no_memory = false;
    while (true) {
      // Lines are taken straight from the buffer; only reading more suspends.
      LineReader::Line line;
      while (!reader_.take(opts_.max_data_line, line)) co_await reader_.fill();
      if (line.too_long) {
        line_too_long = true;
        prev_crlf = line.crlf;
        continue;
      }
      if (line.text == "." && line.crlf && prev_crlf) break;
      prev_crlf = line.crlf;
      std::string_view text = line.text;
      if (!text.empty() && text.front() == '.') text.remove_prefix(1);  // dot-stuffing
      if (door_->max_message_size && message.size() + text.size() + 2 > door_->max_message_size)
        too_big = true;
      if (too_big || no_memory) continue;
      no_memory = !message.append(text, line.crlf ? "\r\n" : "\n", opts_.max_bytes_in_flight);
    }
    deadline_.unfix();  // all read: the idle timeout again
    deadline_.touch();
    if (too_big) {
      co_return reply("552 5.3.4 Message size exceeds the limit of " +
                      std::to_string(door_->max_message_size) + " octets");
    }
    if (no_memory) {
      spdlog::warn("smtp: [{}] message refused: {} bytes of messages in flight (the limit)",
                   peer_ip_, opts_.max_bytes_in_flight);
      co_return reply("452 4.3.1 Error: insufficient system resources, try again later");
    }
    if (line_too_long) {
      co_return reply("552 5.3.4 Message has a line longer than " +
                      std::to_string(opts_.max_data_line) + " octets");
    }
    Envelope env;
    env.sender = *mail_;
    env.recipients = rcpts_;
    env.client.ip = peer_ip_;
    env.client.name = helo_;
    // RFC 3848: ESMTPSA is ESMTP with TLS and AUTH.
    env.client.protocol = !esmtp_ ? "SMTP"
                                  : std::string("ESMTP") + (stream_.tls() ? "S" : "") +
                                        (auth_user_.empty() ? "" : "A");
    env.client.auth = auth_user_;
    env.parse(message.take());
    // The checks, our Received: line and the storage write run on the deliver pool;
    // this coroutine resumes here after.
    deadline_.hold();
    ReceptionResult result = co_await asio::co_spawn(
        server_.pool,
        [&]() -> awaitable<ReceptionResult> {
          co_return server_.reception.receive(std::move(env));
        },
        use_awaitable);
    deadline_.touch();
    if (result.queued()) ++server_.accepted_messages;
    if (result.outcome == ReceptionResult::Outcome::refused) {
      error(result.reply);
    } else {
      reply(result.reply);
    }
  }

  Shared& server_;
  const std::shared_ptr<const Settings> settings_;  // as when the session began
  const SmtpServerOptions& opts_;
  const std::shared_ptr<const ReceptionOptions> door_;  // as when the session began
  const ListenerRole role_;
  std::optional<std::string> admitted_;  // counted in server_.per_client under this address
  Stream stream_;
  Deadline deadline_;
  LineReader reader_;
  std::string out_;
  std::string peer_ip_;
  std::string helo_;
  bool esmtp_ = false;
  std::optional<std::string> mail_;
  std::vector<std::string> rcpts_;
  size_t errors_ = 0;
  bool done_ = false;
  bool greeted_ = false;   // the 220 was said
  std::string auth_user_;  // who authenticated; empty: nobody
  size_t auth_failures_ = 0;
};

}  // namespace

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
  co_await Session(shared, socket, role).serve();
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

size_t SmtpServer::sessions() const { return impl_->open_sessions.load(); }
size_t SmtpServer::accepted() const { return impl_->shared.accepted_messages.load(); }

}  // namespace slimta
