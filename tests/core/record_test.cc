#include "core/record.h"

#include <gtest/gtest.h>

#include "support/test_util.h"

namespace slimta::record {
namespace {

Metadata md(Timestamp ts, uint32_t attempts, uint32_t recipients, std::vector<uint32_t> delivered) {
  Metadata m;
  m.timestamp = ts;
  m.attempts = attempts;
  m.recipients = recipients;
  m.delivered = std::move(delivered);
  return m;
}

TEST(RecordTest, LeaseAndHoldRoundTripAndAreLeftOutWhenUnset) {
  Envelope env = testing::sample_envelope(2, 100);
  Metadata plain = md(5, 1, 2, {});
  Metadata meta = plain;
  meta.lease = Lease{41, 1795000000.5};
  meta.hold = Hold{1795000001.25, "spam complaint \xff"};
  meta.last_reply = "451 4.2.1 busy";
  std::string bytes = encode(meta, &env);
  EXPECT_EQ(decode_message(bytes, "m").meta, meta);
  EXPECT_EQ(decode_prefix(bytes.substr(0, 200), "m")->meta, meta);
  // A record never claimed, held or deferred carries none of those fields (the same
  // bytes as before they existed).
  EXPECT_EQ(encode(plain, &env).size() + 5 + 16 + 5 + 8 + meta.hold->reason.size() + 5 +
                meta.last_reply.size(),
            bytes.size());
}

TEST(RecordTest, ClaimRules) {
  using S = ClaimResult::Status;
  Metadata m = md(0, 0, 1, {});
  auto first = claim(m, 100, std::chrono::seconds(30));
  EXPECT_EQ(first.status, S::claimed);
  EXPECT_EQ(first.lease, (Lease{1, 130}));
  auto busy = claim(m, 129.9, std::chrono::seconds(30));
  EXPECT_EQ(busy.status, S::busy);
  EXPECT_EQ(busy.lease, (Lease{1, 130}));
  check_fence(m, Fence{1}, "x");                          // holds
  auto second = claim(m, 130, std::chrono::seconds(30));  // expired: taken over
  EXPECT_EQ(second.lease, (Lease{2, 160}));
  EXPECT_THROW(check_fence(m, Fence{1}, "x"), LeaseLost);
  release(m, Fence{2}, "x");
  EXPECT_THROW(check_fence(m, Fence{2}, "x"), LeaseLost);  // released
  EXPECT_THROW(release(m, Fence{2}, "x"), LeaseLost);
  m.hold = Hold{1, "why"};
  EXPECT_EQ(claim(m, 500, std::chrono::seconds(1)).status, S::held);
  EXPECT_EQ(m.lease.token, 2u);  // a refused claim changes nothing
}

TEST(RecordTest, EnvelopeAndMetadataRoundTrip) {
  Envelope env = testing::sample_envelope(5, 3000);
  Metadata meta = md(1795000000.125, 7, 5, {0, 3});
  std::string bytes = encode(meta, &env);
  Decoded d = decode(bytes, "test");
  EXPECT_EQ(d.meta, meta);
  ASSERT_TRUE(d.envelope);
  EXPECT_EQ(d.envelope->sender, env.sender);
  EXPECT_EQ(d.envelope->recipients, env.recipients);
  EXPECT_EQ(d.envelope->client, env.client);
  EXPECT_EQ(d.envelope->receiver, env.receiver);
  EXPECT_EQ(d.envelope->timestamp, env.timestamp);
  EXPECT_EQ(d.envelope->flatten(), env.flatten());
}

TEST(RecordTest, MetadataOnlyRecordHasNoEnvelope) {
  Metadata meta = md(5, 1, 2, {1});
  Decoded d = decode(encode(meta, nullptr), "meta");
  EXPECT_EQ(d.meta, meta);
  EXPECT_FALSE(d.envelope);
}

TEST(RecordTest, DecodeMessageRequiresAnEnvelope) {
  Envelope env = testing::sample_envelope(2);
  Message m = decode_message(encode(md(3, 1, 2, {}), &env), "full");
  EXPECT_EQ(m.envelope.flatten(), env.flatten());
  EXPECT_EQ(m.meta.attempts, 1u);
  try {
    decode_message(encode(Metadata{}, nullptr), "spool/meta/x");
    FAIL() << "a metadata-only record was taken for a message";
  } catch (const CorruptRecord& e) {
    EXPECT_NE(std::string(e.what()).find("spool/meta/x"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no envelope"), std::string::npos) << e.what();
  }
}

TEST(RecordTest, PrefixHoldsTheMetadata) {
  Envelope env = testing::sample_envelope(2, 100000);
  Metadata meta = md(99.5, 3, 2, {1});
  std::string bytes = encode(meta, &env);
  auto p = decode_prefix(std::string_view(bytes).substr(0, kPrefixSize), "p");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->total_length, bytes.size());
  EXPECT_EQ(p->meta, meta);
  EXPECT_FALSE(decode_prefix(std::string_view(bytes).substr(0, 20), "p"));
  EXPECT_FALSE(decode_prefix("", "p"));
}

TEST(RecordTest, EveryTruncationAndEveryByteFlipIsDetected) {
  Envelope env = testing::sample_envelope(2, 200);
  std::string bytes = encode(md(1, 0, 2, {}), &env);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(decode(std::string_view(bytes).substr(0, n), "t"), CorruptRecord) << n;
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x20;
    EXPECT_THROW(decode(bad, "f"), CorruptRecord) << "flip at " << i;
  }
}

TEST(RecordTest, ErrorsNameTheRecordAndTheReason) {
  try {
    decode(std::string_view("NOTSLIMTA-RECORD"), "spool/msg/abc");
    FAIL();
  } catch (const CorruptRecord& e) {
    EXPECT_NE(std::string(e.what()).find("spool/msg/abc"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("magic"), std::string::npos);
  }
  std::string bytes = encode(Metadata{}, nullptr);
  bytes[6] = 2;
  try {
    decode(bytes, "x");
    FAIL();
  } catch (const CorruptRecord& e) {
    EXPECT_NE(std::string(e.what()).find("version 2"), std::string::npos) << e.what();
  }
}

TEST(RecordTest, MarkDeliveredIsAUnionAndChecksRange) {
  Metadata m = md(0, 0, 4, {});
  const size_t a[] = {3, 1, 3};
  mark_delivered(m, a);
  EXPECT_EQ(m.delivered, (std::vector<uint32_t>{1, 3}));
  const size_t b[] = {0, 1};
  mark_delivered(m, b);
  EXPECT_EQ(m.delivered, (std::vector<uint32_t>{0, 1, 3}));
  const size_t bad[] = {2, 4};
  EXPECT_THROW(mark_delivered(m, bad), InvalidArgument);
  EXPECT_EQ(m.delivered, (std::vector<uint32_t>{0, 1, 3}));
}

TEST(RecordTest, FailuresRoundTripMergeByIndexAndAMalformedFieldIsNamed) {
  Envelope env = testing::sample_envelope(3, 100);
  Metadata m = md(5, 1, 3, {0, 2});
  const RecipientFailure first[] = {{2, "550 5.1.1 no", true}};
  mark_failed(m, first);
  const RecipientFailure second[] = {{0, "554 5.7.1 \xff", false}, {2, "552 full", true}};
  mark_failed(m, second);
  EXPECT_EQ(m.failed,
            (std::vector<RecipientFailure>{{0, "554 5.7.1 \xff", false}, {2, "552 full", true}}));
  EXPECT_EQ(decode_message(encode(m, &env), "m").meta, m);
  EXPECT_EQ(decode_prefix(encode(m, &env).substr(0, 300), "m")->meta, m);
  const RecipientFailure bad[] = {{3, "550", true}};
  EXPECT_THROW(mark_failed(m, bad), InvalidArgument);
  EXPECT_EQ(m.failed.size(), 2u);
  std::string field = encode_failures(first);
  try {
    decode_failures(field.substr(0, field.size() - 1), "redis key slimta:x");
    ADD_FAILURE() << "a cut entry was read";
  } catch (const CorruptRecord& e) {
    EXPECT_NE(std::string(e.what()).find("redis key slimta:x"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("failed field"), std::string::npos) << e.what();
  }
}

TEST(RecordTest, PendingRepliesRoundTripAndAStaleOneIsLeftOut) {
  Envelope env = testing::sample_envelope(3, 100);
  Metadata m = md(5, 1, 3, {1});
  m.deferred = sorted_replies({{2, "452 full \xff"}, {0, "451 later"}, {1, "451 stale"}});
  EXPECT_EQ(m.deferred.front().index, 0u);
  EXPECT_EQ(decode_message(encode(m, &env), "m").meta, m);
  EXPECT_EQ(decode_prefix(encode(m, &env).substr(0, 300), "m")->meta, m);
  // Recipient 1 was delivered after its deferral: its reply is not a pending one's.
  EXPECT_EQ(to_queued(env, m).deferred,
            (std::vector<RecipientReply>{{0, "451 later"}, {2, "452 full \xff"}}));
  const RecipientReply bad[] = {{3, "451"}};
  EXPECT_THROW(check_indexes(m, bad), InvalidArgument);
  std::string field = encode_replies(m.deferred);
  try {
    decode_replies(field.substr(0, 12), "disk record x");
    ADD_FAILURE() << "a cut entry was read";
  } catch (const CorruptRecord& e) {
    EXPECT_NE(std::string(e.what()).find("deferred field"), std::string::npos) << e.what();
  }
}

TEST(RecordTest, ToQueuedDropsDeliveredRecipients) {
  Envelope env = testing::sample_envelope(4);
  QueuedMessage q = to_queued(env, md(7, 2, 4, {0, 2}));
  EXPECT_EQ(q.envelope.recipients,
            (std::vector<std::string>{"rcpt1@example.org", "rcpt3@example.org"}));
  EXPECT_EQ(q.remaining_indexes(), (std::vector<size_t>{1, 3}));
  EXPECT_EQ(q.delivered_recipients,
            (std::vector<std::string>{"rcpt0@example.org", "rcpt2@example.org"}));
  EXPECT_EQ(q.attempts, 2u);
  EXPECT_EQ(q.timestamp, 7);
}

}  // namespace
}  // namespace slimta::record
