// serve's HTTP routes in-process: the API's filters and pages, its actions, injection
// through the door, the status page, the gauges and readiness, on a MemoryStorage, with
// no serve process (tests/tools/http_test.cc takes serve as a whole, with Prometheus
// and Chromium).
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <set>

#include "daemon/gauges.h"
#include "daemon/http_routes.h"
#include "daemon/http_server.h"
#include "slimta/memory_storage.h"
#include "slimta/queue.h"
#include "support/test_util.h"

namespace slimta::daemon {
namespace {

// A message to `rcpt`, received `age` seconds ago.
Envelope message_to(const std::string& rcpt, double age = 0) {
  Envelope env;
  env.sender = "a@example.com";
  env.recipients = {rcpt};
  env.parse("Subject: hi\r\n\r\nbody\r\n");
  env.timestamp = system_clock().now() - age;
  return env;
}

nlohmann::json body_of(const httplib::Result& res) {
  EXPECT_TRUE(res) << httplib::to_string(res.error());
  return res ? nlohmann::json::parse(res->body) : nlohmann::json();
}

class HttpRoutesTest : public ::testing::Test {
 protected:
  // The server on 127.0.0.1:0, with the token in `token_file` when given.
  void serve(const std::string& token_file = "") {
    gauges_ = std::make_unique<QueueGauges>(storage_);
    gauges_->register_metrics(registry_);
    activity_ = std::make_unique<Activity>(registry_);
    server_ = std::make_unique<HttpServer>(
        http_binding(HttpOptions{"127.0.0.1:0", token_file}),
        HttpContext{registry_, *gauges_, *activity_, storage_,
                    [this] { return std::string(ready_ ? "" : "the storage is away"); }, reception_,
                    [](const std::string&, const Envelope& env, bool authenticated) {
                      for (const auto& r : env.recipients)
                        if (!authenticated && r.ends_with("@elsewhere.example"))
                          return std::string("554 5.7.1 Relay access denied");
                      return std::string();
                    }});
    std::string address = server_->address();
    port_ = std::stoi(address.substr(address.rfind(':') + 1));
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
  }

  std::set<std::string> ids_in(const nlohmann::json& list) {
    std::set<std::string> ids;
    for (const auto& m : list) ids.insert(m["id"].get<std::string>());
    return ids;
  }

  MemoryStorage storage_;
  metrics::Registry registry_;
  std::atomic<bool> room_ = true;
  // The store as a disk spool under its free-space guard answers while room_ is false.
  Reception reception_{[this](Envelope&& env) {
                         if (room_) return Reception::into(storage_)(std::move(env));
                         return EnqueueResult{"", "no space left", true, true};
                       },
                       [this](size_t) { return room_.load(); }, door()};

  static ReceptionOptions door() {
    ReceptionOptions o;
    o.hostname = "mx.example.net";
    o.max_message_size = 4096;
    return o;
  }
  std::atomic<bool> ready_ = true;
  std::unique_ptr<QueueGauges> gauges_;
  std::unique_ptr<Activity> activity_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpRoutesTest, PagesFollowIdsAndFiltersChooseByDomainStateAndAge) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(storage_.write(message_to("u@a.example"), 0));
  std::string other = storage_.write(message_to("u@B.example", 3600), 0);
  storage_.hold(ids[0], "looked at", system_clock().now());
  serve();

  std::set<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto page = body_of(client_->Get("/api/v1/messages?limit=2&cursor=" + cursor));
    ASSERT_LE(page["messages"].size(), 2u);
    for (const auto& id : ids_in(page["messages"])) EXPECT_TRUE(seen.insert(id).second) << id;
    cursor = page["next_cursor"].is_null() ? "" : page["next_cursor"].get<std::string>();
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen.size(), 6u);

  EXPECT_EQ(ids_in(body_of(client_->Get("/api/v1/messages?domain=b.example"))["messages"]),
            std::set<std::string>{other});
  EXPECT_EQ(ids_in(body_of(client_->Get("/api/v1/messages?state=held"))["messages"]),
            std::set<std::string>{ids[0]});
  EXPECT_EQ(ids_in(body_of(client_->Get("/api/v1/messages?older-than=600"))["messages"]),
            std::set<std::string>{other});

  auto bad = client_->Get("/api/v1/messages?state=sleeping");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("state='sleeping'"), std::string::npos) << bad->body;
  bad = client_->Get("/api/v1/messages?limit=0");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("limit='0'"), std::string::npos) << bad->body;
}

TEST_F(HttpRoutesTest, ActionsTakeOneMessageOrWhatTheFiltersChoose) {
  std::string a1 = storage_.write(message_to("u@a.example"), 0);
  std::string a2 = storage_.write(message_to("v@a.example"), 0);
  std::string b = storage_.write(message_to("u@b.example"), 0);
  serve();

  auto done = body_of(client_->Post("/api/v1/messages/hold?domain=a.example&reason=checking"));
  EXPECT_EQ(done["held"].size(), 2u) << done;
  EXPECT_EQ(storage_.get(a1).hold->reason, "checking");
  EXPECT_TRUE(storage_.get(a2).hold);
  EXPECT_FALSE(storage_.get(b).hold);

  done = body_of(client_->Post("/api/v1/messages/" + a1 + "/release"));
  EXPECT_EQ(done["done"], "released");
  EXPECT_FALSE(storage_.get(a1).hold);

  auto shown = body_of(client_->Get("/api/v1/messages/" + a2));
  EXPECT_EQ(shown["id"], a2);
  EXPECT_EQ(shown["state"], "held");

  auto removed = client_->Delete("/api/v1/messages/" + b);
  ASSERT_TRUE(removed);
  EXPECT_EQ(removed->status, 200);
  EXPECT_THROW(storage_.get(b), KeyError);
  auto missing = client_->Get("/api/v1/messages/" + b);
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(body_of(missing)["error"], "no such message");
}

TEST_F(HttpRoutesTest, InjectionGoesThroughTheRelayRulesAndTheDoor) {
  serve();
  auto inject = [&](const std::string& rcpt, const std::string& body) {
    return client_->Post(
        "/api/v1/messages",
        httplib::Headers{{"X-Envelope-Sender", "a@example.com"}, {"X-Envelope-Recipient", rcpt}},
        body, "message/rfc822");
  };
  auto res = inject("b@example.org, c@example.org", "Subject: in\r\n\r\nhello\r\n");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 201) << res->body;
  QueuedMessage stored = storage_.get(body_of(res)["id"].get<std::string>());
  EXPECT_EQ(stored.envelope.recipients,
            (std::vector<std::string>{"b@example.org", "c@example.org"}));
  EXPECT_EQ(stored.envelope.client.protocol, "HTTP");
  EXPECT_NE(stored.envelope.headers.get("Received").value_or("").find("by mx.example.net"),
            std::string::npos);

  res = inject("b@elsewhere.example", "Subject: in\r\n\r\nhello\r\n");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403);
  EXPECT_EQ(body_of(res)["error"], "554 5.7.1 Relay access denied");

  res = inject("b@example.org", "Subject: big\r\n\r\n" + std::string(5000, 'x') + "\r\n");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);

  room_ = false;
  res = inject("b@example.org", "Subject: in\r\n\r\nhello\r\n");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->get_header_value("Retry-After"), "60");
  EXPECT_TRUE(body_of(res)["reply"].get<std::string>().starts_with("452")) << res->body;
  EXPECT_EQ(storage_.load_all().size(), 1u);
}

TEST_F(HttpRoutesTest, GaugesStatusPageAndReadiness) {
  storage_.write(message_to("u@a.example", 120), 0);
  std::string held = storage_.write(message_to("u@b.example"), 0);
  storage_.hold(held, "a <b>reason</b>", system_clock().now());
  testing::TempDir dir;
  testing::write_file(dir.path() + "/token", "0123456789abcdef0123\n");
  serve(dir.path() + "/token");
  ASSERT_TRUE(testing::eventually([&] { return gauges_->snapshot().taken > 0; }));
  EXPECT_EQ(gauges_->messages(), 2);
  EXPECT_EQ(gauges_->held(), 1);
  EXPECT_GE(gauges_->oldest_age(), 119);

  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("\nslimta_queue_messages 2\n"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("\nslimta_queue_held_messages 1\n"), std::string::npos);

  auto page = client_->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 401);
  httplib::Client browser("127.0.0.1", port_);
  browser.set_basic_auth("any", "0123456789abcdef0123");
  // The first look starts the scan behind the page's shape and held messages (the
  // figures come from stats()); it says so until the scan is done.
  page = browser.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("2</span> messages queued"), std::string::npos) << page->body;
  ASSERT_TRUE(testing::eventually([&] { return gauges_->snapshot().scanned > 0; }));
  page = browser.Get("/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->body.find("mx.example.net"), std::string::npos);
  EXPECT_NE(page->body.find(held), std::string::npos);
  EXPECT_NE(page->body.find("a &lt;b&gt;reason&lt;/b&gt;"), std::string::npos);
  EXPECT_EQ(page->body.find("<b>reason"), std::string::npos);

  auto api = client_->Get("/api/v1/info");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 401);
  api = client_->Get("/api/v1/info",
                     httplib::Headers{{"Authorization", "Bearer 0123456789abcdef0123"}});
  ASSERT_TRUE(api);
  EXPECT_EQ(body_of(api)["messages"], 2);

  auto ready = client_->Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  ready_ = false;
  ready = client_->Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_EQ(ready->body, "the storage is away\n");
}

// A route is a function: called with a request made by hand, no server.
TEST_F(HttpRoutesTest, ARouteRunsWithoutAServer) {
  storage_.write(message_to("u@a.example"), 0);
  std::string b = storage_.write(message_to("u@b.example"), 0);
  gauges_ = std::make_unique<QueueGauges>(storage_);
  activity_ = std::make_unique<Activity>(registry_);
  HttpContext ctx{registry_,
                  *gauges_,
                  *activity_,
                  storage_,
                  [] { return std::string(); },
                  reception_,
                  [](const std::string&, const Envelope&, bool) { return std::string(); }};
  httplib::Request req;
  req.params.emplace("domain", "b.example");
  httplib::Response res;
  routes::list_messages(ctx, req, res);
  EXPECT_EQ(res.status, 200);
  auto list = nlohmann::json::parse(res.body)["messages"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], b);
}

}  // namespace
}  // namespace slimta::daemon
