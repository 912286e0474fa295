// The storage contract's checks live in QueueStorage itself: a malformed id or a fence of
// 0 is refused before any backend code runs, so a backend (or a wrapper) never checks
// them again; StorageWrapper passes every call on, unfenced calls as unfenced.
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "slimta/memory_storage.h"
#include "slimta/storage_wrapper.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;

// Records each do_* call that reaches it, then passes it on.
class Recording : public StorageWrapper {
 public:
  using StorageWrapper::StorageWrapper;
  std::multiset<std::string> calls;
  std::vector<uint64_t> remove_tokens;

 protected:
  QueuedMessage do_get(std::string_view id) override {
    calls.insert("get");
    return StorageWrapper::do_get(id);
  }
  void do_hold(std::string_view id, std::string_view reason, Timestamp since) override {
    calls.insert("hold");
    StorageWrapper::do_hold(id, reason, since);
  }
  void do_release_hold(std::string_view id) override {
    calls.insert("release_hold");
    StorageWrapper::do_release_hold(id);
  }
  void do_announce(std::string_view id, Timestamp t) override {
    calls.insert("announce");
    StorageWrapper::do_announce(id, t);
  }
  void do_set_timestamp(std::string_view id, Timestamp t, Fence f, std::string_view r,
                        std::span<const RecipientReply> d) override {
    calls.insert("set_timestamp");
    StorageWrapper::do_set_timestamp(id, t, f, r, d);
  }
  uint32_t do_increment_attempts(std::string_view id, Fence f) override {
    calls.insert("increment_attempts");
    return StorageWrapper::do_increment_attempts(id, f);
  }
  void do_set_recipients_delivered(std::string_view id, std::span<const size_t> r, Fence f,
                                   std::span<const RecipientFailure> failed) override {
    calls.insert("set_recipients_delivered");
    StorageWrapper::do_set_recipients_delivered(id, r, f, failed);
  }
  void do_remove(std::string_view id, Fence f) override {
    calls.insert("remove");
    remove_tokens.push_back(f.token);
    StorageWrapper::do_remove(id, f);
  }
  ClaimResult do_claim(std::string_view id, std::chrono::milliseconds d) override {
    calls.insert("claim");
    return StorageWrapper::do_claim(id, d);
  }
  void do_release(std::string_view id, Fence f) override {
    calls.insert("release");
    StorageWrapper::do_release(id, f);
  }
  Lease do_renew(std::string_view id, Fence f, std::chrono::milliseconds d) override {
    calls.insert("renew");
    return StorageWrapper::do_renew(id, f, d);
  }
};

TEST(StorageContractTest, AMalformedIdNeverReachesTheBackend) {
  MemoryStorage memory;
  Recording storage(memory);
  const size_t first[] = {0};
  std::vector<std::pair<std::string, std::function<void(std::string_view)>>> calls = {
      {"get", [&](std::string_view id) { storage.get(id); }},
      {"hold", [&](std::string_view id) { storage.hold(id, "why", 1); }},
      {"release_hold", [&](std::string_view id) { storage.release_hold(id); }},
      {"announce", [&](std::string_view id) { storage.announce(id, 1); }},
      {"set_timestamp", [&](std::string_view id) { storage.set_timestamp(id, 1); }},
      {"set_timestamp fenced",
       [&](std::string_view id) { storage.set_timestamp(id, 1, Fence{1}); }},
      {"increment_attempts", [&](std::string_view id) { storage.increment_attempts(id); }},
      {"set_recipients_delivered",
       [&](std::string_view id) { storage.set_recipients_delivered(id, first); }},
      {"remove", [&](std::string_view id) { storage.remove(id); }},
      {"remove fenced", [&](std::string_view id) { storage.remove(id, Fence{1}); }},
      {"claim", [&](std::string_view id) { storage.claim(id, 1s); }},
      {"release", [&](std::string_view id) { storage.release(id, Fence{1}); }},
      {"renew", [&](std::string_view id) { storage.renew(id, Fence{1}, 1s); }},
  };
  for (const auto& [name, call] : calls) {
    for (std::string_view bad : {"../../etc/passwd", "", "a b", "x\r\nDEL *"}) {
      try {
        call(bad);
        ADD_FAILURE() << name << " took the id '" << bad << "'";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("id"), std::string::npos) << name << ": " << e.what();
      }
    }
  }
  EXPECT_TRUE(storage.calls.empty()) << "the backend saw " << storage.calls.size() << " calls";
}

TEST(StorageContractTest, AWrapperPassesEveryCallOnAsItWasMade) {
  MemoryStorage memory;
  Recording storage(memory);
  std::string id = storage.write(testing::sample_envelope(2), 10);
  EXPECT_EQ(storage.kind(), "memory");
  EXPECT_EQ(storage.get(id).original_recipients, 2u);
  ClaimResult claim = storage.claim(id, 60s);
  ASSERT_EQ(claim.status, ClaimResult::Status::claimed);
  Fence fence{claim.lease.token};
  EXPECT_EQ(storage.increment_attempts(id, fence), 1u);
  storage.set_timestamp(id, 20, fence, "451 later");
  EXPECT_EQ(memory.get(id).last_reply, "451 later");
  storage.release(id, fence);
  // The fence of the released claim is refused by the target, through the wrapper.
  EXPECT_THROW(storage.set_timestamp(id, 30, fence), LeaseLost);
  storage.hold(id, "checking", 5);
  EXPECT_EQ(memory.get(id).hold->reason, "checking");
  storage.release_hold(id);
  storage.remove(id);
  EXPECT_EQ(storage.remove_tokens, (std::vector<uint64_t>{0}));
  EXPECT_TRUE(memory.load_all().empty());
  EXPECT_EQ(storage.calls.count("get"), 1u);
  EXPECT_EQ(storage.calls.count("set_timestamp"), 2u);
}

}  // namespace
}  // namespace slimta
