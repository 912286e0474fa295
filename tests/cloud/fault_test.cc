// CloudStorage against an HTTP server that fails on purpose: 5xx, SlowDown, a response
// slower than the timeout, a dropped connection, a truncated body. No crash, no hang,
// the right error class, and nothing acknowledged is lost.
#include <gtest/gtest.h>

#include "slimta/cloud_storage.h"
#include "support/fault_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::FaultServer;
using Fault = FaultServer::Fault;

class FaultTest : public ::testing::Test {
 protected:
  AwsOptions aws() {
    AwsOptions aws;
    aws.endpoint = server_.endpoint();
    aws.access_key_id = "test";
    aws.secret_access_key = "test";
    return aws;
  }
  CloudStorage storage(double timeout = 2) {
    return CloudStorage(SimpleStorageService("faults", timeout, "p/", aws()));
  }
  // With a queue of notices (and so the stats() marks) at the same server.
  CloudStorage queued_storage() {
    return CloudStorage(SimpleStorageService("faults", 2, "p/", aws()),
                        SimpleQueueService(server_.endpoint() + "/123456789012/q", 2, 0.1, aws()));
  }
  size_t count(const std::string& method) {
    size_t n = 0;
    for (const auto& r : server_.requests()) n += r.method == method;
    return n;
  }
  FaultServer server_;
};

TEST_F(FaultTest, A500IsRetriedAndTheWriteStoredOnce) {
  CloudStorage s = storage();
  server_.add_fault(Fault::status_code(500, "<Error><Code>InternalError</Code></Error>"));
  std::string id = s.write(testing::sample_envelope(), 1);
  EXPECT_EQ(count("PUT"), 2u);
  auto reqs = server_.requests();
  EXPECT_EQ(reqs[0].path, reqs[1].path) << "the retry must reuse the id";
  EXPECT_EQ(server_.objects().size(), 1u);
  EXPECT_EQ(s.get(id).timestamp, 1);
}

TEST_F(FaultTest, PersistentSlowDownEndsInARetryableError) {
  CloudStorage s = storage();
  for (int i = 0; i < 10; ++i) {
    server_.add_fault(Fault::status_code(
        503, "<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"));
  }
  try {
    s.write(testing::sample_envelope(), 1);
    FAIL() << "write succeeded against a throttling server";
  } catch (const CloudStorageError& e) {
    EXPECT_TRUE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("SlowDown"), std::string::npos) << e.what();
  }
  EXPECT_EQ(count("PUT"), 4u);  // bounded: cloud::Http::kAttempts
}

TEST_F(FaultTest, AResponseSlowerThanTheTimeoutIsRetried) {
  CloudStorage s = storage(/*timeout=*/0.5);
  std::string id = s.write(testing::sample_envelope(), 1);
  server_.add_fault(Fault::slow(std::chrono::milliseconds(1500)));
  EXPECT_EQ(s.get(id).timestamp, 1);  // the first GET timed out, a retry answered
  // The server answers one connection at a time, so a retry may also wait out the slow one.
  EXPECT_GE(count("GET"), 2u);
}

TEST_F(FaultTest, AServerThatNeverAnswersInTimeGivesARetryableTimeout) {
  CloudStorage s = storage(/*timeout=*/0.3);
  std::string id = s.write(testing::sample_envelope(), 1);
  for (int i = 0; i < 4; ++i) server_.add_fault(Fault::slow(std::chrono::milliseconds(800)));
  try {
    s.get(id);
    FAIL();
  } catch (const CloudStorageError& e) {
    EXPECT_TRUE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("Timeout"), std::string::npos) << e.what();
  }
}

TEST_F(FaultTest, ADroppedConnectionIsRetried) {
  CloudStorage s = storage();
  server_.add_fault(Fault::drop());
  std::string id = s.write(testing::sample_envelope(2), 4);
  server_.add_fault(Fault::drop());
  EXPECT_EQ(s.increment_attempts(id), 1u);
  EXPECT_EQ(s.get(id).attempts, 1u);
}

TEST_F(FaultTest, ATruncatedBodyIsNeverTakenForTheRecord) {
  CloudStorage s = storage();
  std::string id = s.write(testing::sample_envelope(1, 5000), 4);
  server_.add_fault(Fault::truncate());
  QueuedMessage m = s.get(id);  // the truncated answer was retried, not decoded
  EXPECT_EQ(m.envelope.body.size(), 5000u);
}

TEST_F(FaultTest, AccessDeniedIsNotRetried) {
  CloudStorage s = storage();
  server_.add_fault(Fault::status_code(403, "<Error><Code>AccessDenied</Code></Error>"));
  try {
    s.get("abc123");
    FAIL();
  } catch (const CloudStorageError& e) {
    EXPECT_FALSE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("credentials"), std::string::npos) << e.what();
  }
  EXPECT_EQ(count("GET"), 1u);
}

TEST_F(FaultTest, SqsThrottlingIsRetried) {
  CloudStorage s = queued_storage();
  server_.add_fault(Fault::pass());  // the PUT
  server_.add_fault(Fault::pass());  // its stats() mark's PUT
  server_.add_fault(Fault::status_code(
      400, R"({"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"})"));
  std::string id = s.write(testing::sample_envelope(), 1);
  EXPECT_EQ(s.request_counts()["sqs SendMessage"], 2u);
  EXPECT_EQ(s.get(id).timestamp, 1);
}

// The stats() mark is beside the message, not part of it: a write whose mark's PUT is
// refused is still stored and answered (the sweep marks it later).
TEST_F(FaultTest, AWriteWhoseMarkIsRefusedIsStoredAndAnswered) {
  CloudStorage s = queued_storage();
  server_.add_fault(Fault::pass());  // the PUT
  server_.add_fault(Fault::status_code(403, "<Error><Code>AccessDenied</Code></Error>"));
  std::string id = s.write(testing::sample_envelope(), 1);
  EXPECT_EQ(s.get(id).timestamp, 1);
  EXPECT_EQ(server_.objects().size(), 1u);  // the message, and no mark
  EXPECT_EQ(s.request_counts()["sqs SendMessage"], 1u);
}

}  // namespace
}  // namespace slimta
