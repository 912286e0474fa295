// The JSON log's fields come from the event as data: what a peer wrote in a reply
// cannot pose as a field.
#include "daemon/logging.h"

#include <gtest/gtest.h>

namespace slimta::daemon {
namespace {

TEST(EventFieldsTest, ARepliesTextCannotPoseAsAField) {
  const std::string id = "0123456789abcdef0123456789abcdef";
  // Read back from the text line, this reply once made the recipient "forged@evil".
  events::Delivered d{
      id,
      "bob@example.org",
      3,
      12.5,
      "250 ok\" rcpt=<forged@evil> x=\"",
      {"mx.example.org[192.0.2.7]:25", "TLSv1.3 TLS_AES_128_GCM_SHA256", 12, 0.25, 0.5}};
  nlohmann::json j = event_fields(d);
  EXPECT_EQ(j["component"], "queue");
  EXPECT_EQ(j["event"], "delivered");
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["rcpt"], "bob@example.org");
  EXPECT_EQ(j["attempt"], 3);
  EXPECT_EQ(j["delay"], 12.5);
  EXPECT_EQ(j["reply"], "250 ok\" rcpt=<forged@evil> x=\"");
  EXPECT_FALSE(j.contains("x"));
  EXPECT_EQ(j["relay"], "mx.example.org[192.0.2.7]:25");
  EXPECT_EQ(j["tls"], "TLSv1.3 TLS_AES_128_GCM_SHA256");
  EXPECT_EQ(j["delays"], (nlohmann::json{{"queued", 12}, {"connect", 0.25}, {"transmit", 0.5}}));

  nlohmann::json deferred =
      event_fields(events::Deferred{id, 2, 1'800'000'000, "451 busy", 4, "b@example.org", {}});
  EXPECT_EQ(deferred["next"], "2027-01-15T08:00:00Z");
  EXPECT_EQ(deferred["rcpts"], 4);
  EXPECT_EQ(deferred["rcpt"], "b@example.org");
  EXPECT_FALSE(deferred.contains("relay") || deferred.contains("delays"));  // no connection
  nlohmann::json enqueued =
      event_fields(events::Enqueued{id, "a@example.com", 1, 10, "192.0.2.1", "mx", "", "<m@x>"});
  EXPECT_EQ(enqueued["client"], "192.0.2.1");
  EXPECT_EQ(enqueued["helo"], "mx");
  EXPECT_EQ(enqueued["message_id"], "<m@x>");
  EXPECT_FALSE(enqueued.contains("sasl_username"));  // not authenticated
  nlohmann::json gave_up =
      event_fields(events::Failed{id, "c@example.org", 5, 1, "451 busy", "after 5 attempts", {}});
  EXPECT_EQ(gave_up["gave_up"], "after 5 attempts");
  EXPECT_FALSE(event_fields(events::Failed{id, "c@example.org", 1, 1, "550 no", "", {}})
                   .contains("gave_up"));
  nlohmann::json refused = event_fields(events::NotEnqueued{"a@example.com", "disk full", true});
  EXPECT_FALSE(refused.contains("id"));
  EXPECT_EQ(refused["retryable"], true);
}

}  // namespace
}  // namespace slimta::daemon
