// The SMTP client behind SmtpRelay and MxRelay (smtp::Client). Why it is built this way:
//
// * Relay::attempt() is called on the queue's worker threads and must return the
//   per-recipient results, so the client is synchronous per connection; each
//   connection has its own Asio io_context, and every network step runs as an async
//   operation bounded by io_context::run_for(), which gives each step a time limit
//   (plain blocking sockets have none).
// * Connections are kept for the next message (after RSET), as Postfix's smtp client
//   does, which spares a TCP handshake, greeting and EHLO per message.
#include "smtp/client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <cctype>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include <poll.h>

#include "core/lines.h"
#include "slimta/ascii.h"
#include "smtp/reply.h"
#include "smtp/sasl.h"

namespace slimta {
namespace smtp {

void write_data(std::initializer_list<std::string_view> parts, size_t chunk,
                const std::function<void(std::string_view)>& out) {
  constexpr size_t kMaxLine = 998;
  std::string piece;
  piece.reserve(std::min<size_t>(chunk, 1 << 20) + 1024);
  for (std::string_view part : parts) {
    for_each_line(part, [&](std::string_view line) {
      // RFC 5321's 998 octets at most: a longer line goes out as several, each after the
      // first starting with a space (Postfix's smtp_line_length_limit), so a header
      // stays one (folded) field and MIME structure survives.
      size_t room = kMaxLine;
      if (!line.empty() && line.front() == '.') {
        piece += '.';
        --room;
      }
      while (line.size() > room) {
        piece.append(line.substr(0, room));
        piece += "\r\n ";
        line.remove_prefix(room);
        room = kMaxLine - 1;
      }
      piece.append(line);
      piece += "\r\n";
      if (piece.size() >= chunk) {
        out(piece);
        piece.clear();
      }
    });
  }
  piece += ".\r\n";
  out(piece);
}

std::string data_of(std::string_view message) {
  std::string all;
  all.reserve(message.size() + message.size() / 50 + 8);
  write_data({message}, SIZE_MAX, [&](std::string_view piece) { all.append(piece); });
  return all;
}

}  // namespace smtp

namespace {

using asio::ip::tcp;
using smtp::BadReply;
using smtp::Reply;
using smtp::ReplyReader;

// A failure of the connection itself: every recipient of the attempt gets `reply`.
struct ConnectionError {
  std::string reply;
  bool permanent = false;  // every recipient fails for good (a loop)
};

bool has_8bit(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return true;
  return false;
}

class Connection {
 public:
  explicit Connection(const SmtpRelayOptions& options) : opts_(options), socket_(io_) {}

  // Connect, read the greeting, EHLO (HELO if refused). Throws ConnectionError.
  void open(const std::string& ehlo_name) {
    bool ipv6 = opts_.host.find(':') != std::string::npos;  // an IPv6 address: [::1]:25
    where_ = (ipv6 ? "[" + opts_.host + "]" : opts_.host) + ":" + std::to_string(opts_.port);
    tcp::resolver resolver(io_);
    tcp::resolver::results_type endpoints;
    run(
        [&](auto done) {
          resolver.async_resolve(opts_.host, std::to_string(opts_.port),
                                 [&, done](asio::error_code ec, tcp::resolver::results_type r) {
                                   endpoints = std::move(r);
                                   done(ec);
                                 });
        },
        opts_.connect_timeout, "resolve", [&] { resolver.cancel(); });
    run(
        [&](auto done) {
          asio::async_connect(
              socket_, endpoints, [&, done](asio::error_code ec, const tcp::endpoint& e) {
                if (!ec) {
                  peer_ =
                      opts_.host + "[" + e.address().to_string() + "]:" + std::to_string(e.port());
                }
                done(ec);
              });
        },
        opts_.connect_timeout, "connect");
    // The greeting within the connect timeout too: a server that accepts and never
    // greets (a tarpit) holds a delivery that long, not a command timeout's five minutes.
    Reply greeting = read_reply(opts_.connect_timeout);
    if (greeting.code != 220) fail("greeting: " + greeting.text);
    hello(ehlo_name);
    using Tls = SmtpRelayOptions::Tls;
    if (opts_.starttls != Tls::never && offers("STARTTLS")) {
      start_tls();
      hello(ehlo_name);  // RFC 3207: what the server offers may differ under TLS
    } else if (opts_.starttls == Tls::required) {
      fail("STARTTLS is required but the server does not offer it");
    }
    if (!opts_.username.empty()) authenticate();
  }

  // EHLO (HELO if refused); keeps the extensions offered (the EHLO reply's lines after
  // the first) and the AUTH mechanisms.
  void hello(const std::string& ehlo_name) {
    offered_.clear();
    auth_mechanisms_.clear();
    Reply ehlo = command("EHLO " + ehlo_name, opts_.command_timeout);
    if (!ehlo.ok()) {
      Reply helo = command("HELO " + ehlo_name, opts_.command_timeout);
      if (!helo.ok()) fail("HELO refused: " + helo.text);
      return;
    }
    // The peer greets with our own name: the route, smarthost or MX leads back here.
    std::string peer = ehlo.lines.empty() ? "" : ehlo.lines[0].substr(0, ehlo.lines[0].find(' '));
    if (!peer.empty() && iequals(peer, ehlo_name)) {
      asio::error_code ignored;
      socket_.close(ignored);
      throw ConnectionError{"554 5.4.6 " + where_ + ": mail for " + peer + " loops back to myself",
                            true};
    }
    for (size_t i = 1; i < ehlo.lines.size(); ++i) {
      std::string line = to_upper(ehlo.lines[i]);
      std::string word = line.substr(0, line.find(' '));
      offered_.insert(word);
      if (word == "AUTH") {  // "AUTH PLAIN LOGIN ..."
        std::istringstream mechs(line.substr(word.size()));
        for (std::string m; mechs >> m;) auth_mechanisms_.insert(m);
      }
    }
  }
  bool offers(const char* extension) const { return offered_.count(extension) > 0; }

  // STARTTLS and the handshake. `required` mode verifies the certificate chain
  // (tls_ca_file, or the system's CAs) and that it names opts_.host; opportunistic
  // mode encrypts without checking who is at the other end (as Postfix's "may").
  void start_tls() {
    Reply r = command("STARTTLS", opts_.command_timeout);
    if (r.code != 220) fail("STARTTLS refused: " + r.text);
    if (!buffer_.empty()) fail("data pipelined after the STARTTLS reply");
    tls_context_.emplace(asio::ssl::context::tls_client);
    tls_context_->set_options(asio::ssl::context::default_workarounds |
                              asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                              asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    tls_.emplace(socket_, *tls_context_);
    if (opts_.starttls == SmtpRelayOptions::Tls::required) {
      asio::error_code ec;
      if (opts_.tls_ca_file.empty()) {
        tls_context_->set_default_verify_paths(ec);
      } else {
        tls_context_->load_verify_file(opts_.tls_ca_file, ec);
      }
      if (ec) fail("cannot load the CA certificates: " + ec.message());
      tls_->set_verify_mode(asio::ssl::verify_peer);
      tls_->set_verify_callback(asio::ssl::host_name_verification(opts_.host));
      SSL_set_tlsext_host_name(tls_->native_handle(), opts_.host.c_str());
    }
    run([&](auto done) { tls_->async_handshake(asio::ssl::stream_base::client, done); },
        opts_.command_timeout, "TLS handshake");
    tls_description_ = std::string(SSL_get_version(tls_->native_handle())) + " " +
                       SSL_get_cipher_name(tls_->native_handle());
  }

  // "host[ip]:port" once connected; "" before.
  const std::string& peer() const { return peer_; }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384" once encrypted; "" without TLS.
  const std::string& tls_description() const { return tls_description_; }

  // AUTH PLAIN, or LOGIN, with opts_.username and password: only over TLS whose
  // certificate and host name were verified (starttls = required), unless
  // opts_.auth_insecure.
  void authenticate() {
    bool verified = tls_ && opts_.starttls == SmtpRelayOptions::Tls::required;
    if (!verified && !opts_.auth_insecure) {
      fail(tls_ ? "not sending credentials over TLS whose certificate was not verified"
                : "not sending credentials without TLS");
    }
    if (!offers("AUTH")) fail("the server does not offer AUTH");
    const auto& mechs = auth_mechanisms_;
    Reply r;
    if (mechs.count("PLAIN")) {
      r = command("AUTH PLAIN " + smtp::base64_encode(std::string(1, '\0') + opts_.username +
                                                      std::string(1, '\0') + opts_.password),
                  opts_.command_timeout);
    } else if (mechs.count("LOGIN")) {
      r = command("AUTH LOGIN", opts_.command_timeout);
      if (r.code == 334) r = command(smtp::base64_encode(opts_.username), opts_.command_timeout);
      if (r.code == 334) r = command(smtp::base64_encode(opts_.password), opts_.command_timeout);
    } else {
      fail("the server offers neither AUTH PLAIN nor AUTH LOGIN");
    }
    if (r.code != 235) fail("authentication failed: " + r.text);  // never shows the secret
  }

  // RSET on a kept connection: true if it still works.
  bool reset() {
    try {
      return command("RSET", opts_.command_timeout).code == 250;
    } catch (const ConnectionError&) {
      return false;
    }
  }

  std::vector<RecipientResult> deliver(const Envelope& env) {
    // The header section is copied (it is small), the body never is.
    std::string head;
    for (const auto& f : env.headers.fields()) head.append(f.name).append(":").append(f.raw);
    head += env.separator;
    std::string mail = "MAIL FROM:<" + env.sender + ">";
    if (offers("SIZE")) mail += " SIZE=" + std::to_string(head.size() + env.body.size());
    if (offers("8BITMIME") && (has_8bit(head) || has_8bit(env.body))) mail += " BODY=8BITMIME";
    std::vector<std::string> rcpts;
    for (const auto& r : env.recipients) rcpts.push_back("RCPT TO:<" + r + ">");

    std::vector<Reply> rcpt_replies;
    Reply mail_reply, data_reply;
    if (offers("PIPELINING")) {  // RFC 2920: MAIL, every RCPT and DATA in one write
      std::string batch = mail + "\r\n";
      for (const auto& r : rcpts) batch += r + "\r\n";
      batch += "DATA\r\n";
      send(batch, opts_.command_timeout);
      mail_reply = read_reply(opts_.command_timeout);
      for (size_t i = 0; i < rcpts.size(); ++i)
        rcpt_replies.push_back(read_reply(opts_.command_timeout));
      data_reply = read_reply(opts_.command_timeout);
    } else {
      mail_reply = command(mail, opts_.command_timeout);
      if (mail_reply.ok()) {
        for (const auto& r : rcpts) rcpt_replies.push_back(command(r, opts_.command_timeout));
        bool any = std::any_of(rcpt_replies.begin(), rcpt_replies.end(),
                               [](const Reply& r) { return r.ok(); });
        if (any) data_reply = command("DATA", opts_.command_timeout);
      }
    }
    std::vector<RecipientResult> out(env.recipients.size());
    if (!mail_reply.ok()) {
      for (auto& r : out) r = result_of(mail_reply);
      if (data_reply.code == 354) abort_data();
      return out;
    }
    bool any = false;
    for (size_t i = 0; i < out.size(); ++i) {
      if (!rcpt_replies[i].ok()) {
        out[i] = result_of(rcpt_replies[i]);
      } else {
        any = true;
      }
    }
    if (!any) {
      if (data_reply.code == 354) abort_data();
      return out;
    }
    if (data_reply.code != 354) {  // DATA refused: the accepted recipients get its reply
      for (size_t i = 0; i < out.size(); ++i)
        if (rcpt_replies[i].ok()) out[i] = result_of(data_reply);
      return out;
    }
    smtp::write_data({head, env.body}, 256 * 1024,
                     [&](std::string_view piece) { send(piece, opts_.data_timeout); });
    Reply final_reply = read_reply(opts_.data_timeout);
    for (size_t i = 0; i < out.size(); ++i)
      if (rcpt_replies[i].ok()) out[i] = result_of(final_reply);
    return out;
  }

  // Whether the server closed an idle connection, or sent something unasked (a 421
  // before it closes): either way it is of no more use.
  bool peer_gone() {
    pollfd p{socket_.native_handle(), POLLIN, 0};
    return ::poll(&p, 1, 0) != 0;
  }
  // Closes without a word (the server has gone).
  void drop() {
    asio::error_code ignored;
    socket_.close(ignored);
  }

  std::chrono::steady_clock::time_point idle_since;
  size_t messages = 0;  // transactions begun on this connection

  void quit() {
    try {
      send("QUIT\r\n", std::chrono::seconds(5));
      read_reply(std::chrono::seconds(5));
    } catch (const ConnectionError&) {
    }
  }

 private:
  static RecipientResult result_of(const Reply& r) {
    if (r.ok()) return RecipientResult::delivered(r.text);
    return r.permanent() ? RecipientResult::permanent(r.text) : RecipientResult::transient(r.text);
  }

  // A DATA that got 354 although no recipient was accepted: end it empty, the server
  // then refuses it.
  void abort_data() {
    send(".\r\n", opts_.command_timeout);
    read_reply(opts_.command_timeout);
  }

  [[noreturn]] void fail(const std::string& what) {
    asio::error_code ignored;
    socket_.close(ignored);
    throw ConnectionError{"451 4.4.0 " + where_ + ": " + what};
  }

  // Runs one async operation, started by `start(done)`, for at most `timeout`.
  template <typename Start>
  void run(Start&& start, std::chrono::milliseconds timeout, const char* step,
           const std::function<void()>& cancel = {}) {
    std::optional<asio::error_code> result;
    start([&result](asio::error_code ec) { result = ec; });
    io_.restart();
    io_.run_for(timeout);
    if (!result) {
      if (cancel) cancel();
      asio::error_code ignored;
      socket_.close(ignored);
      io_.restart();
      io_.run();  // let the cancelled operation finish
      fail(std::string(step) + " timed out after " + std::to_string(timeout.count()) + " ms");
    }
    if (*result) fail(std::string(step) + " failed: " + result->message());
  }

  void send(std::string_view data, std::chrono::milliseconds timeout) {
    run(
        [&](auto done) {
          auto handler = [done](asio::error_code ec, size_t) { done(ec); };
          if (tls_) {
            asio::async_write(*tls_, asio::buffer(data), handler);
          } else {
            asio::async_write(socket_, asio::buffer(data), handler);
          }
        },
        timeout, "write");
  }

  // One reply, single or multi-line, within `timeout` as a whole and the reader's
  // bounds (reply.h): a server that trickles lines, or sends endless ones, is cut off.
  Reply read_reply(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    ReplyReader reader;
    try {
      while (true) {
        size_t nl;
        while ((nl = buffer_.find('\n')) == std::string::npos) {
          if (buffer_.size() >= reader.room()) reader.add(buffer_);  // throws: too long
          read_some(deadline);
        }
        bool complete = reader.add(std::string_view(buffer_).substr(0, nl));
        buffer_.erase(0, nl + 1);
        if (complete) return reader.take();
      }
    } catch (const BadReply& e) {
      fail(e.what());
    }
  }

  // Appends what the peer sends next to buffer_, by `deadline`.
  void read_some(std::chrono::steady_clock::time_point deadline) {
    char chunk[4096];
    size_t n = 0;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    run(
        [&](auto done) {
          auto handler = [done, &n](asio::error_code ec, size_t got) {
            n = got;
            done(ec);
          };
          if (tls_) {
            tls_->async_read_some(asio::buffer(chunk), handler);
          } else {
            socket_.async_read_some(asio::buffer(chunk), handler);
          }
        },
        std::max(left, std::chrono::milliseconds(1)), "read");
    buffer_.append(chunk, n);
  }

  Reply command(const std::string& line, std::chrono::milliseconds timeout) {
    send(line + "\r\n", timeout);
    return read_reply(timeout);
  }

  const SmtpRelayOptions& opts_;
  asio::io_context io_;
  tcp::socket socket_;
  std::string where_;
  std::string peer_;
  std::string tls_description_;
  std::string buffer_;
  std::set<std::string> offered_;  // by the last EHLO
  std::set<std::string> auth_mechanisms_;
  std::optional<asio::ssl::context> tls_context_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
};

}  // namespace

namespace smtp {

struct Client::Impl {
  explicit Impl(SmtpRelayOptions o)
      : options(std::move(o)), ehlo(options.ehlo_name.empty() ? host_name() : options.ehlo_name) {}
  SmtpRelayOptions options;
  std::string ehlo;
  std::mutex mu;
  std::vector<std::unique_ptr<Connection>> idle;
  std::atomic<size_t> opened{0};
  std::atomic<size_t> in_use{0};
  std::atomic<int64_t> last_used{0};  // steady clock, ms

  std::unique_ptr<Connection> take() {
    while (true) {
      std::unique_ptr<Connection> c;
      {
        std::lock_guard lock(mu);
        if (idle.empty()) break;
        c = std::move(idle.back());
        idle.pop_back();
      }
      if (c->reset()) return c;
    }
    auto c = std::make_unique<Connection>(options);
    ++opened;
    c->open(ehlo);
    return c;
  }

  void give_back(std::unique_ptr<Connection> c) {
    std::unique_lock lock(mu);
    bool spent = options.max_messages_per_connection != 0 &&
                 ++c->messages >= options.max_messages_per_connection;
    if (!spent && idle.size() < options.max_idle_connections) {
      c->idle_since = std::chrono::steady_clock::now();
      idle.push_back(std::move(c));
    } else {
      lock.unlock();  // QUIT waits for the reply
      c->quit();
    }
  }
};

Client::Client(SmtpRelayOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Client::~Client() {
  for (auto& c : impl_->idle) c->quit();
}

Every::Every(std::chrono::milliseconds interval, std::function<void()> fn)
    : thread_([this, interval, fn = std::move(fn)] {
        std::unique_lock lock(mu_);
        while (!cv_.wait_for(lock, interval, [this] { return stop_; })) {
          lock.unlock();
          fn();
          lock.lock();
        }
      }) {}

Every::~Every() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::chrono::milliseconds sweep_interval(const SmtpRelayOptions& o) {
  return std::clamp(o.idle_connection_timeout / 4, std::chrono::milliseconds(10),
                    std::chrono::milliseconds(1000));
}

bool Client::sweep() {
  auto now = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<Connection>> expired, gone;
  bool idle_left;
  {
    std::lock_guard lock(impl_->mu);
    auto& idle = impl_->idle;
    for (auto it = idle.begin(); it != idle.end();) {
      if ((*it)->peer_gone()) {
        gone.push_back(std::move(*it));
      } else if (now - (*it)->idle_since >= impl_->options.idle_connection_timeout) {
        expired.push_back(std::move(*it));
      } else {
        ++it;
        continue;
      }
      it = idle.erase(it);
    }
    idle_left = !idle.empty();
  }
  for (auto& c : gone) c->drop();
  for (auto& c : expired) c->quit();  // outside the lock: QUIT waits for the reply
  auto since_use = std::chrono::milliseconds(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() -
      impl_->last_used.load());
  return idle_left || impl_->in_use.load() > 0 ||
         since_use < impl_->options.idle_connection_timeout;
}

Client::Outcome Client::deliver(const Envelope& envelope) {
  ++impl_->in_use;
  struct Done {
    Impl& impl;
    ~Done() {
      impl.last_used = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now().time_since_epoch())
                           .count();
      --impl.in_use;
    }
  } done{*impl_};
  Outcome out;
  std::unique_ptr<Connection> c;
  using Seconds = std::chrono::duration<double>;
  auto began = std::chrono::steady_clock::now();
  try {
    c = impl_->take();
    out.reached = true;
    auto connected = std::chrono::steady_clock::now();
    out.results = c->deliver(envelope);
    for (auto& r : out.results) {
      r.relay = c->peer();
      r.tls = c->tls_description();
      r.connect_seconds = Seconds(connected - began).count();
      r.transmit_seconds = Seconds(std::chrono::steady_clock::now() - connected).count();
    }
    impl_->give_back(std::move(c));
  } catch (const ConnectionError& e) {
    out.reached |= e.permanent;  // a loop: no other MX either
    out.results.assign(envelope.recipients.size(), e.permanent
                                                       ? RecipientResult::permanent(e.reply)
                                                       : RecipientResult::transient(e.reply));
    // Not reached, or sent away with a 421: the destination's fault, not a recipient's.
    bool unreachable = !out.reached || e.reply.starts_with("421");
    for (auto& r : out.results) {
      r.unreachable = unreachable && !e.permanent;
      if (c) {  // cut off in the transaction: the peer is known
        r.relay = c->peer();
        r.tls = c->tls_description();
      }
    }
  }
  return out;
}

size_t Client::connections_opened() const { return impl_->opened.load(); }

const SmtpRelayOptions& Client::options() const { return impl_->options; }

}  // namespace smtp

struct SmtpRelay::Impl {
  explicit Impl(SmtpRelayOptions o)
      : interval(smtp::sweep_interval(o)),
        client(std::move(o)),
        sweeper(interval, [this] { client.sweep(); }) {}
  std::chrono::milliseconds interval;
  smtp::Client client;
  smtp::Every sweeper;  // last: stopped before the client goes
};

SmtpRelay::SmtpRelay(SmtpRelayOptions options) {
  if (options.host.empty()) throw InvalidArgument("smtp relay: the smarthost's host is empty");
  if (options.port == 0) throw InvalidArgument("smtp relay: port 0 is not a smarthost port");
  if (!options.username.empty() && options.starttls != SmtpRelayOptions::Tls::required &&
      !options.auth_insecure) {
    // Opportunistic TLS gives the password to whoever answers with any certificate.
    throw InvalidArgument(
        "smtp relay: credentials are sent only over TLS with a verified certificate: set "
        "starttls to required (or auth_insecure to send them anyway)");
  }
  impl_ = std::make_unique<Impl>(std::move(options));
}

SmtpRelay::~SmtpRelay() = default;

std::vector<RecipientResult> SmtpRelay::attempt(const Envelope& envelope, uint32_t) {
  return impl_->client.deliver(envelope).results;
}

std::string SmtpRelay::destination(const std::string&) const {
  const auto& o = impl_->client.options();
  return to_lower(o.host) + ":" + std::to_string(o.port);
}

size_t SmtpRelay::connections_opened() const { return impl_->client.connections_opened(); }

}  // namespace slimta
