// The segmented log (src/disk/segment_log.h): records in one order across segments, a
// new segment when the newest is full, what returned survives a power loss at any call
// as a prefix of that order, and a sealed segment deleted for good.
#include "disk/segment_log.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>
#include <vector>

#include "slimta/errors.h"
#include "support/fault_file_system.h"
#include "support/test_util.h"

namespace slimta::disk {
namespace {

using testing::FaultFileSystem;

struct Dir {
  testing::TempDir tmp;
  posix::Fd fd{::open(tmp.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
};

struct Replayed {
  std::vector<std::string> records;
  std::vector<SegmentLog::Location> at;
};

std::unique_ptr<SegmentLog> open_log(FileSystem& fs, const Dir& dir, uint64_t segment_bytes,
                                     Replayed& out) {
  return std::make_unique<SegmentLog>(fs, dir.fd.get(), "spool/log", segment_bytes,
                                      [&](const SegmentLog::Location& at, std::string_view record) {
                                        out.records.emplace_back(record);
                                        out.at.push_back(at);
                                      });
}

std::string numbered(int i) { return "record " + std::to_string(i) + std::string(40, 'x'); }

TEST(SegmentLogTest, RecordsKeepOneOrderAcrossSegmentsAndAreReadBackWhereTheyWere) {
  Dir dir;
  FaultFileSystem fs(dir.tmp.path());
  std::vector<SegmentLog::Location> written;
  {
    Replayed none;
    auto log = open_log(fs, dir, 200, none);
    EXPECT_TRUE(none.records.empty());
    for (int i = 0; i < 20; ++i) written.push_back(log->append(numbered(i)));
    EXPECT_EQ(log->read(written[7]), numbered(7));
    // ~56 bytes a frame, 200 a segment: three records each.
    EXPECT_EQ(log->newest(), 7u);
    EXPECT_EQ(log->sealed(), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
    EXPECT_EQ(written[3].segment, 2u);
    EXPECT_EQ(written[3].offset, 0u);
  }
  Replayed again;
  auto log = open_log(fs, dir, 200, again);
  ASSERT_EQ(again.records.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(again.records[i], numbered(i));
    EXPECT_EQ(again.at[i], written[i]);
  }
  // More go after the last, in the newest segment.
  SegmentLog::Location next = log->append(numbered(20));
  EXPECT_EQ(next.segment, 7u);
  EXPECT_EQ(next.offset, written.back().end);
}

TEST(SegmentLogTest, ARemovedSegmentIsGoneForGoodAndTheNewestIsNeverRemoved) {
  Dir dir;
  FaultFileSystem fs(dir.tmp.path());
  Replayed none;
  auto log = open_log(fs, dir, 200, none);
  std::vector<SegmentLog::Location> written;
  for (int i = 0; i < 9; ++i) written.push_back(log->append(numbered(i)));
  EXPECT_THROW(log->remove(log->newest()), InvalidArgument);
  log->remove(1);
  EXPECT_THROW(log->read(written[0]), QueueError);
  EXPECT_EQ(log->read(written[3]), numbered(3));
  log.reset();
  std::mt19937 rng(1);
  fs.cut();
  fs.restore(FaultFileSystem::Unsynced::dropped, rng);  // the removal was made durable
  Replayed again;
  log = open_log(fs, dir, 200, again);
  ASSERT_EQ(again.records.size(), 6u);
  EXPECT_EQ(again.records.front(), numbered(3));
}

// Four writers append while power is lost at every one of the first 60 changing calls:
// every append that returned is replayed, and what is replayed is a prefix of the order
// the records were written in (a record never survives one written before it).
TEST(SegmentLogTest, WhatReturnedSurvivesAPowerLossAsAPrefixOfTheOrder) {
  std::mt19937 rng(11);
  for (uint64_t cut = 1; cut <= 60; ++cut) {
    Dir dir;
    FaultFileSystem fs(dir.tmp.path());
    std::mutex mu;
    std::vector<std::pair<SegmentLog::Location, std::string>> returned;
    std::map<uint64_t, uint64_t> sealed_size;  // of each sealed segment, as written
    {
      Replayed none;
      std::unique_ptr<SegmentLog> log;
      fs.cut_after(cut);
      try {
        log = open_log(fs, dir, 300, none);
      } catch (const QueueError&) {
        ASSERT_TRUE(fs.is_cut());
      }
      if (log) {
        std::vector<std::thread> writers;
        for (int w = 0; w < 4; ++w) {
          writers.emplace_back([&, w] {
            for (int i = 0; i < 12; ++i) {
              std::string r = numbered(w * 100 + i);
              try {
                SegmentLog::Location at = log->append(r);
                std::lock_guard lock(mu);
                returned.emplace_back(at, r);
              } catch (const QueueError&) {
                return;  // the power is out: nothing more returns
              }
            }
          });
        }
        for (auto& t : writers) t.join();
        for (uint64_t seq : log->sealed()) sealed_size[seq] = log->size(seq);
      }
    }
    fs.restore(FaultFileSystem::Unsynced::torn, rng);
    Replayed after;
    auto log = open_log(fs, dir, 300, after);
    std::map<std::pair<uint64_t, uint64_t>, std::string> kept;
    for (size_t i = 0; i < after.records.size(); ++i)
      kept[{after.at[i].segment, after.at[i].offset}] = after.records[i];
    for (const auto& [at, r] : returned) {
      auto it = kept.find({at.segment, at.offset});
      ASSERT_TRUE(it != kept.end()) << "cut " << cut << ": a returned record is lost: " << r;
      EXPECT_EQ(it->second, r) << "cut " << cut;
    }
    // A prefix: the replayed records lie in segments 1..n, each from offset 0 without a
    // gap, and a segment followed by another is there whole, as it was written.
    for (size_t i = 1; i < after.at.size(); ++i) {
      const auto& a = after.at[i - 1];
      const auto& b = after.at[i];
      if (a.segment == b.segment) {
        EXPECT_EQ(b.offset, a.end) << "cut " << cut;
      } else {
        EXPECT_EQ(b.segment, a.segment + 1) << "cut " << cut;
        EXPECT_EQ(b.offset, 0u) << "cut " << cut;
        EXPECT_EQ(a.end, sealed_size[a.segment])
            << "cut " << cut << ": segment " << a.segment
            << " lost records written before the next segment's";
      }
    }
    log->append("after the restart");  // and it takes records again
  }
}

TEST(SegmentLogTest, SegmentNamesAreSixteenHexDigits) {
  EXPECT_EQ(segment_name(26), "000000000000001a.seg");
  EXPECT_EQ(segment_seq("000000000000001a.seg"), 26u);
  EXPECT_FALSE(segment_seq("000000000000001A.seg").has_value());
  EXPECT_FALSE(segment_seq("00000000000001a.seg").has_value());
  EXPECT_FALSE(segment_seq("000000000000001a.log").has_value());
  EXPECT_FALSE(segment_seq("+00000000000001a.seg").has_value());
}

}  // namespace
}  // namespace slimta::disk
