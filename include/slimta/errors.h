// Errors raised by slimta-cpp.
//
// Every error a storage or queue operation raises derives from QueueError, so a
// caller that only wants "did it work" catches one type. What the caller should do
// next is carried by retryable():
//   true   the same call may succeed later (network down, server busy, disk full);
//   false  retrying the same call cannot help (unknown id, bad input, corrupt data,
//          bad credentials): report it or change something first.
//
// Thread safety: error objects are immutable after construction.
#pragma once

#include <stdexcept>
#include <string>

namespace slimta {

class QueueError : public std::runtime_error {
 public:
  explicit QueueError(const std::string& what, bool retryable = false)
      : std::runtime_error(what), retryable_(retryable) {}

  // Whether repeating the failed call, unchanged, may succeed.
  bool retryable() const noexcept { return retryable_; }

 private:
  bool retryable_;
};

// The message id is not stored (python's KeyError). Never retryable.
class KeyError : public QueueError {
 public:
  explicit KeyError(const std::string& id);
  const std::string& id() const noexcept { return id_; }

 private:
  std::string id_;
};

// The storage has no room for what was asked: a disk or quota full, Redis at its
// maxmemory. Retryable: it may succeed once space is freed. An SMTP server answers
// 452 4.3.1 for it.
class StorageFull : public QueueError {
 public:
  explicit StorageFull(const std::string& what) : QueueError(what, true) {}
};

// The storage cannot do this (e.g. wait() on a backend that cannot notify).
class NotSupported : public QueueError {
 public:
  explicit NotSupported(const std::string& what) : QueueError(what, false) {}
};

// Bad input from the caller: a malformed id, a bad storage URL, an out-of-range
// recipient index, a configuration field. The message names what was wrong.
class InvalidArgument : public QueueError {
 public:
  explicit InvalidArgument(const std::string& what) : QueueError(what, false) {}
};

// A stored record could not be decoded (bad magic, checksum mismatch, truncated,
// unsupported version). The data is kept for an operator to inspect; it is never
// silently skipped.
class CorruptRecord : public QueueError {
 public:
  explicit CorruptRecord(const std::string& what) : QueueError(what, false) {}
};

// A mutation made on behalf of a lease (see QueueStorage::claim) was refused because
// that lease no longer holds the message: it was released, or it expired and another
// claim took the message over. The newer holder's state is left untouched. Not
// retryable: the caller must give the message up.
class LeaseLost : public QueueError {
 public:
  explicit LeaseLost(const std::string& what) : QueueError(what, false) {}
};

}  // namespace slimta
