// One SMTP session: the dialogue of RFC 5321 with its extensions (server.cc says why it
// is built this way).
#include <spdlog/spdlog.h>

#include <charconv>
#include <climits>
#include <ctime>
#include <optional>
#include <set>

#include <openssl/crypto.h>

#include "slimta/ascii.h"
#include "smtp/command.h"
#include "smtp/proxy_header.h"
#include "smtp/sasl.h"
#include "smtp/session.h"

namespace slimta::smtp {
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

}  // namespace

void count_rejection(metrics::Registry* m, std::string_view reply) {
  if (!m || reply.empty() || (reply[0] != '4' && reply[0] != '5')) return;
  m->counter("slimta_smtp_rejections_total", "SMTP commands and connections refused, by reason",
             {{"reason", rejection_reason(reply)}})
      .inc();
}

namespace {

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
    if (std::string why = server_.auth_guard.refused(peer_ip_, user); !why.empty()) {
      OPENSSL_cleanse(password.data(), password.size());
      spdlog::warn("smtp: [{}] authentication refused unchecked: {}", peer_ip_, why);
      co_await auth_failed("454 4.7.0 Temporary authentication failure");
      co_return;
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
      server_.auth_guard.succeeded(peer_ip_, user);
      auth_user_ = std::move(user);
      spdlog::info("smtp: [{}] authenticated as {}", peer_ip_, auth_user_);
      co_return reply("235 2.7.0 Authentication successful");
    }
    // Neither the name (a password typed in the wrong field) nor the response is logged.
    server_.auth_guard.failed(peer_ip_, user);
    spdlog::warn("smtp: [{}] authentication failed ({} in this session)", peer_ip_,
                 auth_failures_ + 1);
    co_await auth_failed("535 5.7.8 Error: authentication failed");
  }

  // A failed AUTH: answered late (n times the delay for the n-th of the session), and
  // the session ended after max_auth_failures.
  awaitable<void> auth_failed(const std::string& answer) {
    ++auth_failures_;
    asio::steady_timer delay(stream_.get_executor(), opts_.auth_failure_delay * auth_failures_);
    co_await delay.async_wait(use_awaitable);
    deadline_.touch();
    if (opts_.metrics) {
      opts_.metrics->counter("slimta_auth_failures_total", "AUTH attempts that failed").inc();
    }
    error(answer);
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
          // Digits only (RFC 1870): strtoull took "-1" as 2^64-1, so a 552 for bad syntax.
          unsigned long long size = 0;
          auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), size);
          bool digits = !value.empty() && std::all_of(value.begin(), value.end(), [](char ch) {
            return ch >= '0' && ch <= '9';
          });
          if (!digits || end != value.data() + value.size())
            co_return error("501 5.5.4 Bad SIZE parameter");
          if (ec == std::errc::result_out_of_range) size = ULLONG_MAX;  // more than any limit
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
      if (auto refused = smtp::check_sender(settings_->rules, path->address, auth_user_)) {
        spdlog::info("smtp: [{}] MAIL <{}> refused: {}", peer_ip_, printable(path->address),
                     *refused);
        co_return error(*refused);
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
      if (door_->max_recipients && rcpts_.size() >= door_->max_recipients)
        co_return reply("452 4.5.3 Error: too many recipients");
      rcpts_.push_back(smtp::stored_recipient(settings_->rules, path->address));
      reply("250 2.1.5 Ok");
    } else if (v == "DATA") {
      if (!mail_) co_return error("503 5.5.1 Error: need MAIL command");
      if (rcpts_.empty()) co_return error("554 5.5.1 Error: no valid recipients");
      if (!c.arg.empty()) co_return error("501 5.5.4 Syntax: DATA");
      if (server_.reception.bytes_in_flight() >= door_->max_bytes_in_flight)
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
    MessageBuffer message(server_.reception.bytes_in_flight());
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
      // Dot-stuffing: a line that began with '.' came with one more. A lone "." that is
      // not the end (a bare LF on it or before it) was not stuffed: it stays a ".".
      if (text.size() > 1 && text.front() == '.') text.remove_prefix(1);
      if (door_->max_message_size && message.size() + text.size() + 2 > door_->max_message_size)
        too_big = true;
      if (too_big || no_memory) continue;
      no_memory = !message.append(text, line.crlf ? "\r\n" : "\n", door_->max_bytes_in_flight);
    }
    deadline_.unfix();  // all read: the idle timeout again
    deadline_.touch();
    if (too_big) {
      co_return reply("552 5.3.4 Message size exceeds the limit of " +
                      std::to_string(door_->max_message_size) + " octets");
    }
    if (no_memory) {
      spdlog::warn("smtp: [{}] message refused: {} bytes of messages in flight (the limit)",
                   peer_ip_, door_->max_bytes_in_flight);
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

awaitable<void> serve_session(Shared& server, tcp::socket& socket, ListenerRole role) {
  co_await Session(server, socket, role).serve();
}

}  // namespace slimta::smtp
