// The byte-level side of an SMTP session: the stream (TCP, or TLS after STARTTLS), the
// deadline the watchdog keeps, the bounded line reader and the message buffer counted
// against the server's memory budget.
#pragma once

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slimta::smtp {

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

}  // namespace slimta::smtp
