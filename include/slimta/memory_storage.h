// MemoryStorage: messages kept in this process's memory (python's DictStorage).
// Not durable and not shared: for tests and for tools that queue nothing across
// restarts. wait() is not supported (nothing else can write to it).
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <memory>

#include "slimta/storage.h"

namespace slimta {

class MemoryStorage : public QueueStorage {
 public:
  MemoryStorage();
  ~MemoryStorage() override;

  Capabilities capabilities() const override;
  std::string write(const Envelope& envelope, Timestamp timestamp) override;
  void set_timestamp(std::string_view id, Timestamp timestamp) override;
  uint32_t increment_attempts(std::string_view id) override;
  void set_recipients_delivered(std::string_view id, std::span<const size_t> rcpt_indexes) override;
  std::unique_ptr<EntryStream> load() override;
  QueuedMessage get(std::string_view id) override;
  void remove(std::string_view id) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slimta
