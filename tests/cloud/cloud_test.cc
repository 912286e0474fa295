// Behaviour specific to CloudStorage, against moto_server (S3 + SQS) started by the test.
#include "slimta/cloud_storage.h"

#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cloud/http.h"
#include "cloud/stats_marks.h"
#include "support/moto_server.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::MotoServer;
using testing::sample_envelope;

class CloudTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (MotoServer::skipped()) GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
    server_ = &testing::shared_moto();
    static bool made = false;
    if (!made) server_->create_bucket("cloudtest");
    made = true;
  }
  CloudStorage storage(bool with_queue = true) {
    std::optional<SimpleQueueService> q;
    if (with_queue) {
      if (queue_url_.empty()) queue_url_ = server_->create_queue("q" + random_hex(6));
      q.emplace(queue_url_, 30, 0.1, server_->aws());
    }
    return CloudStorage(SimpleStorageService("cloudtest", 30, prefix_, server_->aws()),
                        std::move(q));
  }
  MotoServer* server_ = nullptr;
  std::string prefix_ = "ct" + random_hex(4) + "/";
  std::string queue_url_;
};

TEST_F(CloudTest, RequestsPerMessageLifecycle) {
  CloudStorage s = storage();
  std::string id = s.write(sample_envelope(), 1);
  for (int i = 0; i < 2; ++i) {  // two failed attempts
    s.increment_attempts(id);
    s.set_timestamp(id, 2 + i);
  }
  s.get(id);
  s.remove(id);
  auto counts = s.request_counts();
  // write: 1 PUT + its stats() mark's PUT + 1 SendMessage (+1 GetQueueUrl only for a
  // queue given by name); each update: 1 GET + 1 PUT; get: 1 GET; an unfenced remove
  // (an operator's): 1 DELETE, a LIST of its marks and a DELETE of its mark.
  EXPECT_EQ(counts["s3 PUT"], 2u + 4u);
  EXPECT_EQ(counts["s3 GET"], 4u + 1u);
  EXPECT_EQ(counts["s3 DELETE"], 2u);
  EXPECT_EQ(counts["s3 LIST"], 1u);
  EXPECT_EQ(counts["sqs SendMessage"], 1u);
  uint64_t total = 0;
  for (const auto& [k, v] : counts) total += v;
  EXPECT_EQ(total, 15u);
}

TEST_F(CloudTest, MetadataUpdatesPersistInTheObject) {
  CloudStorage a = storage(false);
  std::string id = a.write(sample_envelope(3), 10);
  a.increment_attempts(id);
  const size_t idx[] = {1};
  a.set_recipients_delivered(id, idx);
  a.set_timestamp(id, 20);
  CloudStorage b = storage(false);  // another client sees them: they were sent
  QueuedMessage got = b.get(id);
  EXPECT_EQ(got.attempts, 1u);
  EXPECT_EQ(got.timestamp, 20);
  EXPECT_EQ(got.delivered, (std::vector<size_t>{1}));
}

TEST_F(CloudTest, TwoClientsIncrementingConcurrentlyLoseNothing) {
  CloudStorage a = storage(false);
  CloudStorage b = storage(false);
  std::string id = a.write(sample_envelope(), 0);
  std::thread t1([&] {
    for (int i = 0; i < 200; ++i) a.increment_attempts(id);
  });
  std::thread t2([&] {
    for (int i = 0; i < 200; ++i) b.increment_attempts(id);
  });
  t1.join();
  t2.join();
  EXPECT_EQ(a.get(id).attempts, 400u);
}

TEST_F(CloudTest, LoadFollowsListPagesAndSkipsOtherKeys) {
  CloudStorage s = storage(false);
  std::set<std::string> written;
  for (int i = 0; i < 1100; ++i) written.insert(s.write(sample_envelope(1, 50, i), i));  // > 1 page
  cloud::Http http(10, "us-east-1", {"test", "test", ""});
  auto junk = cloud::make_request(
      "PUT", server_->endpoint() + "/cloudtest/" + prefix_ + "not.an.id", "s3", "junk");
  junk.headers = {{"Content-Type", "application/octet-stream"}};
  junk.body = "x";
  ASSERT_EQ(http.send(junk).status, 200);
  std::set<std::string> loaded;
  auto stream = s.load();
  while (auto e = stream->next()) EXPECT_TRUE(loaded.insert(e->id).second) << e->id;
  EXPECT_EQ(loaded, written);
  size_t lists = s.request_counts()["s3 LIST"];
  EXPECT_GE(lists, 2u);
}

// The marks list in the order of their ids, as the messages do, even where one id is
// the start of another followed by '-' (which sorts before '.'): what lets the sweep
// walk messages and marks side by side.
TEST_F(CloudTest, StatsMarksListInTheOrderOfTheirIds) {
  SimpleStorageService s3("cloudtest", 30, prefix_, server_->aws());
  cloud::StatsMarks marks(s3);
  const std::vector<std::string> ids{"ab", "ab-c", "ab.", "ab0", "ab_-", "b"};
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == "ab.") continue;  // not an id: no mark
    marks.put(marks.received(ids[i], 1000.5 * static_cast<double>(i + 1)));
  }
  marks.put(marks.held("ab-c"));
  std::vector<std::string> order;
  for (const auto& [key, modified] : marks.between("", std::nullopt).keys)
    order.push_back(*marks.id_of(key));
  EXPECT_EQ(order, (std::vector<std::string>{"ab", "ab-c", "ab-c", "ab0", "ab_-", "b"}));
  auto middle = marks.between("ab", std::string("ab0"));
  EXPECT_EQ(middle.keys.size(), 3u);
  EXPECT_TRUE(middle.by_id.at("ab-c").held);
  EXPECT_EQ(middle.by_id.at("ab0").received, marks.received("ab0", 4002));
  EXPECT_EQ(marks.count(), (QueueStats{5, 1, 1000.5}));
  marks.remove_all("ab-c");
  EXPECT_EQ(marks.count(), (QueueStats{4, 0, 1000.5}));
  EXPECT_FALSE(marks.id_of(prefix_ + "ab").has_value());  // a message's key is no mark
}

TEST_F(CloudTest, WithoutAQueueWaitIsNotSupported) {
  CloudStorage s = storage(false);
  EXPECT_FALSE(s.capabilities().can_wait);
  EXPECT_THROW(s.wait(std::chrono::milliseconds(10)), NotSupported);
}

TEST_F(CloudTest, AWriteWhoseNoticeFailsIsStillStoredAndLoaded) {
  SimpleQueueService broken(server_->endpoint() + "/123456789012/no-such-queue", 5, 0.1,
                            server_->aws());
  CloudStorage s(SimpleStorageService("cloudtest", 30, prefix_, server_->aws()), std::move(broken));
  std::string id = s.write(sample_envelope(), 5);
  EXPECT_EQ(s.load_all(), (std::vector<QueueEntry>{{5, id}}));
  EXPECT_EQ(s.get(id).attempts, 0u);
}

// Found by probing: the notice {"id": 12345, "timestamp": 1} threw an uncaught
// nlohmann::json::type_error in wait(), and was never deleted, so serve died again
// ~30 s after every restart.
TEST_F(CloudTest, MalformedNoticesAreSetAsideAndDeletedAndWaitCarriesOn) {
  CloudStorage s = storage();
  cloud::Http http(10, "us-east-1", cloud::resolve_credentials(server_->aws()));
  auto sqs = [&](const char* action, const nlohmann::json& body) {
    auto req = cloud::make_request("POST", server_->endpoint() + "/", "sqs", action);
    req.headers = {{"Content-Type", "application/x-amz-json-1.0"},
                   {"X-Amz-Target", std::string("AmazonSQS.") + action}};
    req.body = body.dump();
    auto r = http.send(req);
    EXPECT_EQ(r.status, 200) << r.body;
    return nlohmann::json::parse(r.body, nullptr, false);
  };
  for (const char* poison :
       {R"({"id": 12345, "timestamp": 1})", R"({"id": "0123456789abcdef0123456789abcdef",
          "timestamp": "soon"})",
        R"({"id": "../../etc/passwd", "timestamp": 1})", "not json at all", "[1, 2, 3]",
        R"({"timestamp": 1})", "null"}) {
    sqs("SendMessage", {{"QueueUrl", queue_url_}, {"MessageBody", poison}});
  }
  std::string id = s.write(sample_envelope(), 5);
  std::vector<QueueEntry> seen;
  for (int i = 0; i < 5 && seen.empty(); ++i) {
    ASSERT_NO_THROW(seen = s.wait(std::chrono::milliseconds(2000)));
  }
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].id, id);
  // Every notice was deleted, the poison too: nothing is left to kill the next wait.
  auto attrs = sqs("GetQueueAttributes",
                   {{"QueueUrl", queue_url_},
                    {"AttributeNames",
                     {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"}}});
  EXPECT_EQ(attrs["Attributes"]["ApproximateNumberOfMessages"], "0") << attrs.dump();
  EXPECT_EQ(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"], "0") << attrs.dump();
}

TEST_F(CloudTest, AQueueGivenByNameIsLookedUp) {
  std::string name = "named" + random_hex(4);
  server_->create_queue(name);
  CloudStorage writer(SimpleStorageService("cloudtest", 30, prefix_, server_->aws()),
                      SimpleQueueService(name, 30, 0.1, server_->aws()));
  CloudStorage waiter(SimpleStorageService("cloudtest", 30, prefix_, server_->aws()),
                      SimpleQueueService(name, 30, 0.1, server_->aws()));
  std::string id = writer.write(sample_envelope(), 9);
  EXPECT_EQ(waiter.wait(std::chrono::milliseconds(5000)), (std::vector<QueueEntry>{{9, id}}));
}

// S3 answers in XML, SQS in JSON: one translation reads both and names the resource.
TEST_F(CloudTest, AMissingQueueIsNamedAndIsNotRetried) {
  std::string url = server_->endpoint() + "/123456789012/no-such-queue-here";
  SimpleQueueService q(url, 10, 0.1, server_->aws());
  try {
    q.queue_message("0123456789abcdef0123456789abcdef", 1);
    FAIL() << "announced into a queue that does not exist";
  } catch (const CloudStorageError& e) {
    EXPECT_NE(std::string(e.what()).find("SQS queue '" + url + "' does not exist"),
              std::string::npos)
        << e.what();
    EXPECT_FALSE(e.retryable());
  }
}

TEST_F(CloudTest, MissingBucketIsNamed) {
  CloudStorage s(SimpleStorageService("no-such-bucket-here", 10, "", server_->aws()));
  try {
    s.write(sample_envelope(), 1);
    FAIL();
  } catch (const CloudStorageError& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-bucket-here"), std::string::npos) << e.what();
    EXPECT_FALSE(e.retryable());
  }
}

TEST_F(CloudTest, CredentialsComeFromTheProfileFileAndAreNeverShown) {
  testing::TempDir dir;
  testing::write_file(
      dir.sub("credentials"),
      "[default]\naws_access_key_id = AKIDEFAULT\naws_secret_access_key = s3cr3t-default\n"
      "[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = s3cr3t-other\n");
  std::map<std::string, std::string> vars{{"AWS_SHARED_CREDENTIALS_FILE", dir.sub("credentials")}};
  cloud::Environment env = [&](const char* name) {
    auto it = vars.find(name);
    return it == vars.end() ? std::string() : it->second;
  };
  AwsOptions o;
  o.profile = "other";
  EXPECT_EQ(cloud::resolve_credentials(o, env).key, "AKIDOTHER");
  o.profile = "";
  EXPECT_EQ(cloud::resolve_credentials(o, env).secret, "s3cr3t-default");
  o.profile = "absent";
  try {
    cloud::resolve_credentials(o, env);
    FAIL();
  } catch (const CloudStorageError& e) {
    EXPECT_NE(std::string(e.what()).find("absent"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find("s3cr3t"), std::string::npos);
  }
}

TEST_F(CloudTest, AnotherProcessWaitSeesEveryWrite) {
  CloudStorage waiter = storage();
  AwsOptions aws = server_->aws();
  std::string queue = queue_url_, prefix = prefix_;
  auto run = testing::write_in_child_and_wait(
      waiter,
      [&] {
        return std::make_unique<CloudStorage>(SimpleStorageService("cloudtest", 30, prefix, aws),
                                              SimpleQueueService(queue, 30, 0.1, aws));
      },
      2000, std::chrono::milliseconds(2000), std::chrono::seconds(240));
  EXPECT_TRUE(run.child_ok);
  ASSERT_EQ(run.written.size(), 2000u);
  EXPECT_EQ(run.seen.size(), 2000u);
  EXPECT_EQ(run.wrong_timestamps, 0u);
  // SQS delivers at least once: duplicates are possible; they are counted and reported.
  size_t duplicates = 0;
  for (const auto& id : run.written) {
    EXPECT_GE(run.seen[id], 1) << id;
    duplicates += run.seen[id] > 1 ? run.seen[id] - 1 : 0;
  }
  std::printf("cloud wait: %zu ids seen, %zu duplicate notices\n", run.seen.size(), duplicates);
}

}  // namespace
}  // namespace slimta

namespace slimta {
namespace {

// moto_server with request authentication on: after INITIAL_NO_AUTH_ACTION_COUNT free
// requests, every request must carry a valid SigV4 signature of a key moto issued.
TEST(CloudAuthTest, RequestsAreReallySignedAndAWrongSecretIsRefused) {
  if (MotoServer::skipped()) GTEST_SKIP() << "SLIMTA_SKIP_MOTO=1: local opt-out, never set in CI";
  MotoServer server(std::map<std::string, std::string>{{"INITIAL_NO_AUTH_ACTION_COUNT", "3"}});
  cloud::Http iam(10, "us-east-1", {"bootstrap", "bootstrap", ""});
  auto call = [&](const std::string& form) {
    auto req = cloud::make_request("POST", server.endpoint() + "/", "iam", "iam");
    req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    req.body = form + "&Version=2010-05-08";
    auto r = iam.send(req);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.body;
  };
  call("Action=CreateUser&UserName=slimta");
  call(
      "Action=PutUserPolicy&UserName=slimta&PolicyName=all&PolicyDocument=" +
      cloud::uri_encode(
          R"({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]})",
          true));
  std::string key_xml = call("Action=CreateAccessKey&UserName=slimta");
  AwsOptions good = server.aws();
  good.access_key_id = cloud::xml_value(key_xml, "AccessKeyId");
  good.secret_access_key = cloud::xml_value(key_xml, "SecretAccessKey");
  ASSERT_FALSE(good.access_key_id.empty()) << key_xml;

  cloud::Http admin(10, "us-east-1", {good.access_key_id, good.secret_access_key, ""});
  ASSERT_EQ(
      admin.send(cloud::make_request("PUT", server.endpoint() + "/authbucket", "s3", "create"))
          .status,
      200);
  auto qreq = cloud::make_request("POST", server.endpoint() + "/", "sqs", "create queue");
  qreq.headers = {{"Content-Type", "application/x-amz-json-1.0"},
                  {"X-Amz-Target", "AmazonSQS.CreateQueue"}};
  qreq.body = R"({"QueueName":"authq"})";
  auto qr = admin.send(qreq);
  ASSERT_EQ(qr.status, 200) << qr.body;
  std::string queue_url = nlohmann::json::parse(qr.body).at("QueueUrl");

  // The prefix has no '/': its ListObjectsV2 query would carry "%2F", and moto refuses
  // signatures over percent-escapes (shared/TESTING.md), which AWS accepts.
  CloudStorage ok(SimpleStorageService("authbucket", 10, "auth-", good),
                  SimpleQueueService(queue_url, 10, 0.1, good));
  std::string id = ok.write(testing::sample_envelope(), 3);
  EXPECT_EQ(ok.increment_attempts(id), 1u);
  EXPECT_EQ(ok.load_all().size(), 1u);
  CloudStorage waiter(SimpleStorageService("authbucket", 10, "auth-", good),
                      SimpleQueueService(queue_url, 10, 0.1, good));
  EXPECT_EQ(waiter.wait(std::chrono::milliseconds(3000)).size(),
            1u);  // SQS JSON calls are signed too

  AwsOptions bad = good;
  bad.secret_access_key = "not-the-secret-" + random_hex(4);
  CloudStorage refused(SimpleStorageService("authbucket", 10, "auth-", bad));
  try {
    refused.get(id);
    FAIL() << "a wrong secret was accepted";
  } catch (const CloudStorageError& e) {
    std::string what = e.what();
    EXPECT_FALSE(e.retryable()) << what;
    EXPECT_NE(what.find("credentials"), std::string::npos) << what;
    EXPECT_EQ(what.find(bad.secret_access_key), std::string::npos) << "secret shown: " << what;
  }
}

}  // namespace
}  // namespace slimta
