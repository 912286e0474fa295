// The messages of the log-structured spool (src/disk/log_store.h): stored, changed and
// removed through the log, the index rebuilt at start, compaction that reclaims space,
// keeps what a start needs (a tombstone whose message's records are still in an older
// segment) and survives a power loss at any call.
#include "disk/log_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "slimta/errors.h"
#include "support/fault_file_system.h"
#include "support/test_util.h"

namespace slimta::disk {
namespace {

using testing::FaultFileSystem;

struct Spool {
  testing::TempDir tmp;
  posix::Fd fd{::open(tmp.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  FaultFileSystem fs{tmp.path()};
  std::unique_ptr<LogStore> open(uint64_t segment_bytes = 4096) {
    return std::make_unique<LogStore>(fs, fd.get(), "spool/log", LogStore::Options{segment_bytes});
  }
};

std::string message(unsigned seed, size_t body = 300) {
  Envelope env = testing::sample_envelope(1, body, seed);
  return record::encode(record::initial_metadata(env, 100 + seed), &env);
}

std::string id_of(int i) { return "m" + std::to_string(i); }

bool set_attempts(LogStore& store, const std::string& id, uint32_t n) {
  return store.update(id, [&](record::Metadata& m) {
    m.attempts = n;
    return true;
  });
}

// Stores `count` messages, then keeps every `every`-th with `attempts` attempts and
// removes the others.
void keep_every(LogStore& store, int count, int every, uint32_t attempts) {
  for (int i = 0; i < count; ++i) store.put(id_of(i), message(i));
  for (int i = 0; i < count; ++i) {
    if (i % every == 0) {
      set_attempts(store, id_of(i), attempts);
    } else {
      store.remove(id_of(i));
    }
  }
}

TEST(LogStoreTest, MessagesAreStoredChangedAndRemovedAndAStartRebuildsTheIndex) {
  Spool spool;
  {
    auto store = spool.open();
    for (int i = 0; i < 5; ++i) store->put(id_of(i), message(i));
    EXPECT_THROW(store->put(id_of(2), message(9)), InvalidArgument);
    EXPECT_TRUE(set_attempts(*store, id_of(1), 3));
    EXPECT_FALSE(store->update(id_of(1), [](record::Metadata&) { return false; }));
    EXPECT_THROW(set_attempts(*store, "nosuch", 1), KeyError);
    EXPECT_TRUE(store->remove(id_of(3)));
    EXPECT_FALSE(store->remove(id_of(3)));
    EXPECT_EQ(store->get(id_of(1)).meta.attempts, 3u);
    EXPECT_EQ(store->get(id_of(1)).envelope.body, testing::sample_envelope(1, 300, 1).body);
    EXPECT_THROW(store->get(id_of(3)), KeyError);
  }
  auto store = spool.open();
  auto ids = store->ids();
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"m0", "m1", "m2", "m4"}));
  EXPECT_EQ(store->metadata(id_of(1)).attempts, 3u);
  EXPECT_EQ(store->metadata(id_of(4)).timestamp, 104);
  EXPECT_FALSE(store->contains(id_of(3)));
}

// Most messages delivered: compaction deletes the dead segments, copies the live
// messages with their latest metadata, and after a start everything reads as before.
TEST(LogStoreTest, CompactionReclaimsTheDeadAndKeepsTheLive) {
  Spool spool;
  auto store = spool.open();
  keep_every(*store, 60, 10, 7);
  LogStore::Stats before = store->stats();
  EXPECT_GT(before.segments, 10u);
  EXPECT_GT(store->compact(0.5), 5u);
  LogStore::Stats after = store->stats();
  EXPECT_LT(after.bytes, before.bytes / 3) << "compaction reclaimed too little";
  EXPECT_EQ(after.messages, 6u);
  store.reset();
  store = spool.open();
  EXPECT_EQ(store->ids().size(), 6u);
  for (int i = 0; i < 60; i += 10) {
    EXPECT_EQ(store->metadata(id_of(i)).attempts, 7u) << id_of(i);
    EXPECT_EQ(store->get(id_of(i)).envelope.body, testing::sample_envelope(1, 300, i).body);
  }
}

// A message stays in an old segment that is mostly live (not compacted); its removal's
// tombstone lies in a segment that is compacted: the tombstone must go on, or a start
// brings the message back.
TEST(LogStoreTest, ATombstoneWhoseMessageIsInAnOlderSegmentIsKept) {
  Spool spool;
  auto store = spool.open(2048);
  for (int i = 0; i < 4; ++i) store->put(id_of(i), message(i));  // segment 1, live
  store->put("filler", message(50, 1500));                       // segment 2
  store->remove(id_of(0));                                       // its tombstone: segment 2
  store->remove("filler");
  store->put("later", message(51, 1500));  // segment 3: 2 is sealed, and dead
  ASSERT_EQ(store->compact(0.5), 1u);      // segment 2 only
  store.reset();
  store = spool.open(2048);
  EXPECT_FALSE(store->contains(id_of(0))) << "a removed message came back";
  EXPECT_FALSE(store->contains("filler"));
  EXPECT_TRUE(store->contains(id_of(1)));
}

// Power lost at every call of a compaction: after a start every live message is there
// with its latest metadata, and every removed one stays removed.
TEST(LogStoreTest, ACompactionCutAtAnyCallLosesNothingAndBringsNothingBack) {
  std::mt19937 rng(5);
  for (uint64_t cut = 1; cut <= 40; ++cut) {
    Spool spool;
    {
      auto store = spool.open(2048);
      keep_every(*store, 24, 4, 2);
      spool.fs.cut_after(cut);
      try {
        store->compact(0.9);
      } catch (const QueueError&) {
        ASSERT_TRUE(spool.fs.is_cut()) << "cut " << cut;
      }
    }
    spool.fs.restore(FaultFileSystem::Unsynced::torn, rng);
    auto store = spool.open(2048);
    auto ids = store->ids();
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(ids, (std::vector<std::string>{"m0", "m12", "m16", "m20", "m4", "m8"}))
        << "cut " << cut;
    for (const auto& id : ids) EXPECT_EQ(store->metadata(id).attempts, 2u) << "cut " << cut;
    store->compact(0.9);  // and a compaction after the start finishes the job
    EXPECT_EQ(store->ids().size(), 6u);
  }
}

// Compaction goes on while four writers store, change and remove messages: when they are
// done, and after a start, each message is as its writer left it.
TEST(LogStoreTest, CompactionWhileWritersWorkLosesNoChange) {
  Spool spool;
  auto store = spool.open(4096);
  std::atomic<bool> done{false};
  std::atomic<size_t> compacted{0};
  std::thread compactor([&] {
    while (!done) compacted += store->compact(0.5);
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < 60; ++i) {
        std::string id = id_of(w * 1000 + i);
        store->put(id, message(static_cast<unsigned>(i)));
        set_attempts(*store, id, 1);
        if (i % 3 != 0) {
          store->remove(id);
        } else {
          set_attempts(*store, id, 5);
        }
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  compactor.join();
  EXPECT_GT(compacted.load(), 0u);
  auto check = [&](LogStore& s) {
    EXPECT_EQ(s.ids().size(), 80u);
    for (int w = 0; w < 4; ++w) {
      for (int i = 0; i < 60; i += 3) {
        std::string id = id_of(w * 1000 + i);
        EXPECT_EQ(s.metadata(id).attempts, 5u) << id;
        EXPECT_EQ(s.get(id).envelope.body, testing::sample_envelope(1, 300, i).body) << id;
      }
    }
  };
  check(*store);
  store.reset();
  store = spool.open(4096);
  check(*store);
}

// The state of the store as the tests expect it: ids, each with its attempts.
std::map<std::string, uint32_t> state(LogStore& store) {
  std::map<std::string, uint32_t> out;
  for (const auto& id : store.ids()) out[id] = store.metadata(id).attempts;
  return out;
}

// A start from a checkpoint reads the log after it: changes made since, removals whose
// messages' segments were compacted away since, and a checkpoint torn or cut at any
// call while written (then the whole log is read) all give the same messages.
TEST(LogStoreTest, AStartFromACheckpointSeesWhatChangedSince) {
  Spool spool;
  std::map<std::string, uint32_t> expected;
  {
    auto store = spool.open(2048);
    for (int i = 0; i < 30; ++i) store->put(id_of(i), message(i));
    for (int i = 0; i < 10; ++i) set_attempts(*store, id_of(i), 1);
    store->checkpoint();
    for (int i = 10; i < 30; ++i) store->remove(id_of(i));  // their segments go, below
    for (int i = 0; i < 3; ++i) {  // and the segment of their tombstones is mostly dead
      store->put("dead" + std::to_string(i), message(50 + i, 1500));
      store->remove("dead" + std::to_string(i));
    }
    for (int i = 0; i < 5; ++i) set_attempts(*store, id_of(i), 2);
    store->put("late", message(40));
    // Two more segments, so that the one with the tombstones is sealed and compacted too
    // (dropping them: the segments of their messages are gone by then).
    for (int i = 0; i < 3; ++i) store->put("pad" + std::to_string(i), message(41 + i, 1500));
    EXPECT_GT(store->compact(0.5), 3u);
    expected = state(*store);
  }
  auto store = spool.open(2048);
  EXPECT_TRUE(store->stats().from_checkpoint);
  EXPECT_EQ(state(*store), expected);
  EXPECT_EQ(store->get(id_of(3)).envelope.body, testing::sample_envelope(1, 300, 3).body);
  store->checkpoint();
  store.reset();
  store = spool.open(2048);
  EXPECT_EQ(state(*store), expected);
  store.reset();

  std::mt19937 rng(3);
  for (uint64_t cut = 1; cut <= 8; ++cut) {
    store = spool.open(2048);
    store->put("c" + std::to_string(cut), message(60));
    expected["c" + std::to_string(cut)] = 0;
    spool.fs.cut_after(cut);
    try {
      store->checkpoint();
    } catch (const QueueError&) {
      EXPECT_TRUE(spool.fs.is_cut()) << "cut " << cut;
    }
    store.reset();
    spool.fs.cut();
    spool.fs.restore(FaultFileSystem::Unsynced::torn, rng);
    store = spool.open(2048);
    EXPECT_EQ(state(*store), expected) << "cut " << cut;
    store.reset();
  }
}

}  // namespace
}  // namespace slimta::disk
