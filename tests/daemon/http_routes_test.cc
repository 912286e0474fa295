// serve's HTTP routes in-process: the API's filters and pages, its actions, injection
// through the door, the status page, the gauges and readiness, on a MemoryStorage, with
// no serve process (tests/tools/http_test.cc takes serve as a whole, with Prometheus
// and Chromium).
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <nlohmann/json.hpp>
#include <set>

#include "daemon/gauges.h"
#include "daemon/http_limits.h"
#include "daemon/http_routes.h"
#include "daemon/http_server.h"
#include "slimta/ascii.h"
#include "slimta/memory_storage.h"
#include "slimta/queue.h"
#include "support/log_capture.h"
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
  static constexpr const char* kToken = "0123456789abcdef0123";

  // The server on 127.0.0.1:0 with the token kToken (/api/ needs one), or with no
  // token file when `with_token` is false; client_ sends the token.
  void serve(bool with_token = true, HttpLimits limits = {}) {
    std::string token_file;
    if (with_token) {
      token_file = dir_.path() + "/token";
      testing::write_file(token_file, std::string(kToken) + "\n");
    }
    gauges_ = std::make_unique<QueueGauges>(storage_);
    gauges_->register_metrics(registry_);
    activity_ = std::make_unique<Activity>(registry_);
    server_ = std::make_unique<HttpServer>(
        http_binding(HttpOptions{"127.0.0.1:0", token_file, limits}),
        HttpContext{registry_, *gauges_, *activity_, storage_,
                    [this] { return std::string(ready_ ? "" : "the storage is away"); }, reception_,
                    [this](const std::string&, const Envelope& env, bool authenticated) {
                      authenticated_ = authenticated;
                      for (const auto& r : env.recipients)
                        if (r == "nobody@example.org")
                          return std::string("550 5.1.1 Recipient address rejected");
                      return std::string();
                    },
                    [](const std::string& rcpt) { return domain_of(rcpt); }, ShapingPolicy{}});
    std::string address = server_->address();
    port_ = std::stoi(address.substr(address.rfind(':') + 1));
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(30, 0);
    if (with_token)
      client_->set_default_headers({{"Authorization", std::string("Bearer ") + kToken}});
  }

  std::set<std::string> ids_in(const nlohmann::json& list) {
    std::set<std::string> ids;
    for (const auto& m : list) ids.insert(m["id"].get<std::string>());
    return ids;
  }

  testing::TempDir dir_;
  std::atomic<bool> authenticated_ = false;
  MemoryStorage storage_;
  metrics::Registry registry_;
  std::atomic<bool> room_ = true;
  // The store as a disk spool under its free-space guard answers while room_ is false.
  // While gate_ is closed, a store waits for it (a slow storage under an injection).
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool gate_closed_ = false;
  std::atomic<int> at_gate_ = 0;
  void open_gate() {
    std::lock_guard lock(gate_mu_);
    gate_closed_ = false;
    gate_cv_.notify_all();
  }
  Reception reception_{[this](Envelope&& env) {
                         {
                           std::unique_lock lock(gate_mu_);
                           ++at_gate_;
                           gate_cv_.wait(lock, [this] { return !gate_closed_; });
                           --at_gate_;
                         }
                         if (room_) return Reception::into(storage_)(std::move(env));
                         return EnqueueResult{"", "no space left", true, true};
                       },
                       [this](size_t) { return room_.load(); }, door()};

  static ReceptionOptions door() {
    ReceptionOptions o;
    o.hostname = "mx.example.net";
    o.max_message_size = 4096;
    o.max_bytes_in_flight = 6000;  // one 4000-octet body in memory, not two
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
  // Issue 34: the same selectors as the CLI's, a sender and a destination too.
  EXPECT_EQ(ids_in(body_of(client_->Get("/api/v1/messages?destination=b.example"))["messages"]),
            std::set<std::string>{other});
  EXPECT_EQ(body_of(client_->Get("/api/v1/messages?sender=A@example.com"))["messages"].size(), 6u);
  EXPECT_TRUE(body_of(client_->Get("/api/v1/messages?sender=%3C%3E"))["messages"].empty());

  auto bad = client_->Get("/api/v1/messages?state=sleeping");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("state 'sleeping'"), std::string::npos) << bad->body;
  bad = client_->Get("/api/v1/messages?limit=0");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("limit='0'"), std::string::npos) << bad->body;
}

// Issue 34, finding 9: what an API caller changed left no line in serve's log.
TEST_F(HttpRoutesTest, WhatTheApiChangesIsLogged) {
  std::string a = storage_.write(message_to("u@a.example"), 0);
  testing::LogCapture log;
  serve();
  client_->Post("/api/v1/messages/" + a + "/hold?reason=a%0d%0aforged");
  client_->Post("/api/v1/messages/retry?domain=nothing.example");
  client_->Post("/api/v1/destinations/a.example/suspend");
  std::string text = log.text();
  EXPECT_NE(text.find("api: [127.0.0.1] POST /api/v1/messages/" + a +
                      "/hold?reason=a\\x0d\\x0aforged: held"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("api: [127.0.0.1] POST /api/v1/messages/retry?domain=nothing.example: "
                      "nothing matched"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("POST /api/v1/destinations/a.example/suspend: suspended"), std::string::npos)
      << text;
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

  EXPECT_TRUE(authenticated_);  // the token is the caller's credential, not its address

  res = inject("nobody@example.org", "Subject: in\r\n\r\nhello\r\n");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403);
  EXPECT_EQ(body_of(res)["error"], "550 5.1.1 Recipient address rejected");

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

// Issue 34, finding 10: no per-destination state in /metrics, on the status page or in
// the API (no destinations, suspend or resume), and /api/v1/info had 4 of the CLI's
// info fields.
TEST_F(HttpRoutesTest, DestinationsInTheMetricsThePageAndTheApi) {
  DestinationLimits limits;
  DownPolicy down;
  down.after = 1;
  Destinations& board = *storage_.destinations();
  SlotGrant g = board.acquire("dead.example", limits, std::chrono::seconds(10));
  board.release("dead.example", g.slot, false, "421 4.4.2 <gone>", down);
  board.suspend("held.example", DestinationStatus::kForever, "their <postmaster> asked");
  serve();
  ASSERT_TRUE(testing::eventually([&] { return gauges_->snapshot().destinations.size() == 2; }));
  std::string metrics = client_->Get("/metrics")->body;
  EXPECT_NE(
      metrics.find("\nslimta_destination_state{destination=\"dead.example\",state=\"down\"} 1\n"),
      std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("\nslimta_destination_state{destination=\"held.example\",state="
                         "\"suspended\"} 1\n"),
            std::string::npos);
  EXPECT_NE(metrics.find("\nslimta_destination_failures{destination=\"dead.example\"} 1\n"),
            std::string::npos);
  httplib::Client browser("127.0.0.1", port_);
  browser.set_basic_auth("any", kToken);
  std::string page = browser.Get("/")->body;
  EXPECT_NE(page.find("<table id=\"destinations\">"), std::string::npos) << page;
  EXPECT_NE(page.find("421 4.4.2 &lt;gone&gt;"), std::string::npos) << page;
  EXPECT_NE(page.find("their &lt;postmaster&gt; asked"), std::string::npos) << page;

  auto list = body_of(client_->Get("/api/v1/destinations"))["destinations"];
  std::map<std::string, std::string> states;
  for (const auto& d : list) states[d["destination"]] = d["state"];
  EXPECT_EQ(states, (std::map<std::string, std::string>{{"dead.example", "down"},
                                                        {"held.example", "suspended"}}));
  auto done = body_of(client_->Post("/api/v1/destinations/slow.example/suspend?for=2h&reason=x"));
  EXPECT_EQ(done["destination"], "slow.example");
  EXPECT_EQ(done["suspended"], true);
  EXPECT_TRUE(done["until"].is_string()) << done.dump();
  client_->Post("/api/v1/destinations/held.example/resume");
  client_->Post("/api/v1/destinations/dead.example/resume");  // down: forgotten too
  states.clear();
  auto after = body_of(client_->Get("/api/v1/destinations"))["destinations"];
  for (const auto& d : after) states[d["destination"]] = d["state"];
  EXPECT_EQ(states["slow.example"], "suspended") << after.dump();
  EXPECT_EQ(states["dead.example"], "ok") << after.dump();
  EXPECT_NE(states["held.example"], "suspended") << after.dump();  // ok, or idle: not listed
  auto bad = client_->Post("/api/v1/destinations/x.example/suspend?for=soon");
  EXPECT_EQ(bad->status, 400);

  auto info = body_of(client_->Get("/api/v1/info"));
  for (const char* field : {"messages", "held", "events", "durable", "shared", "storage"})
    EXPECT_TRUE(info.contains(field)) << field << ": " << info.dump();
}

TEST_F(HttpRoutesTest, GaugesStatusPageAndReadiness) {
  storage_.write(message_to("u@a.example", 120), 0);
  std::string held = storage_.write(message_to("u@b.example"), 0);
  storage_.hold(held, "a <b>reason</b>", system_clock().now());
  serve();
  ASSERT_TRUE(testing::eventually([&] { return gauges_->snapshot().taken > 0; }));
  EXPECT_EQ(gauges_->messages(), 2);
  EXPECT_EQ(gauges_->held(), 1);
  EXPECT_GE(gauges_->oldest_age(), 119);

  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("\nslimta_queue_messages 2\n"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("\nslimta_queue_held_messages 1\n"), std::string::npos);

  httplib::Client stranger("127.0.0.1", port_);
  auto page = stranger.Get("/");
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

  auto api = stranger.Get("/api/v1/info");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 401);
  api = client_->Get("/api/v1/info");
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
                  [](const std::string&, const Envelope&, bool) { return std::string(); },
                  {},
                  {}};
  HttpRequest req;
  req.params.emplace_back("domain", "b.example");
  HttpResponse res;
  routes::list_messages(ctx, req, res);
  EXPECT_EQ(res.status, 200);
  auto list = nlohmann::json::parse(res.body)["messages"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["id"], b);
}

// The listener's limits: what a client may send, and cost, before it is refused.

// A raw connection: bytes out, whatever comes back in.
class Raw {
 public:
  explicit Raw(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("cannot connect to port " + std::to_string(port));
  }
  ~Raw() { ::close(fd_); }
  bool send(const std::string& data) {
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }
  // True once the peer closed (or reset) within `limit`; what came before is kept.
  bool closed(std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
      got_.append(buf, static_cast<size_t>(n));
    }
    return false;
  }
  // The status of the first response, read within 20 s; 0 if none came.
  int status() {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (got_.find("\r\n") == std::string::npos && std::chrono::steady_clock::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      got_.append(buf, static_cast<size_t>(n));
    }
    return got_.starts_with("HTTP/1.") && got_.size() > 12 ? std::stoi(got_.substr(9, 3)) : 0;
  }
  const std::string& got() const { return got_; }

 private:
  int fd_;
  std::string got_;
};

std::string head(const std::string& first, const std::vector<std::string>& headers) {
  std::string out = first + "\r\nHost: localhost\r\n";
  for (const auto& h : headers) out += h + "\r\n";
  return out + "\r\n";
}

TEST(HttpLimitsTest, HostsAndFraming) {
  ListenerNames loopback{"127.0.0.1", {"mx.example.net"}};
  for (const char* ok : {"localhost", "localhost:9025", "LOCALHOST.", "127.0.0.1:80", "127.9.9.9",
                         "[::1]:9025", "mx.example.net", "MX.example.net:9025"})
    EXPECT_TRUE(host_allowed(ok, loopback)) << ok;
  for (const char* bad : {"", "attacker.example", "attacker.example:9025", "192.0.2.1",
                          "localhost:80x", "[::1", "localhost.attacker.example", "[::2]:80"})
    EXPECT_FALSE(host_allowed(bad, loopback)) << bad;
  ListenerNames any{"0.0.0.0", {"mx.example.net"}};
  EXPECT_TRUE(host_allowed("192.0.2.1:9025", any));
  EXPECT_FALSE(host_allowed("rebound.attacker.example", any));
  ListenerNames one{"192.0.2.1", {"mx.example.net"}};
  EXPECT_TRUE(host_allowed("192.0.2.1", one));
  EXPECT_FALSE(host_allowed("192.0.2.2", one));

  auto framing = [](std::optional<std::string_view> length,
                    std::optional<std::string_view> transfer = std::nullopt,
                    std::optional<std::string_view> content = std::nullopt, size_t max = 100) {
    return check_framing(RequestHead{"POST", "/", std::nullopt, length, transfer, content}, max);
  };
  EXPECT_EQ(framing("10").status, 0);
  EXPECT_EQ(framing("10").body, 10u);
  EXPECT_EQ(framing(std::nullopt).status, 0);
  EXPECT_EQ(framing("101").status, 413);
  EXPECT_EQ(framing("10", std::nullopt, std::nullopt, 0).status, 413);  // no body here
  EXPECT_EQ(framing("0", std::nullopt, std::nullopt, 0).status, 0);
  EXPECT_EQ(framing(std::nullopt, "chunked").status, 411);
  EXPECT_EQ(framing("10", std::nullopt, "gzip").status, 415);
  EXPECT_EQ(framing("10", std::nullopt, "identity").status, 0);
  for (const char* bad : {"", "-1", "1e3", " 10", "99999999999999999999", "0x10"})
    EXPECT_EQ(framing(bad).status, 400) << bad;
}

TEST_F(HttpRoutesTest, TheApiNeedsATokenAndOnlyOurHostNamesAreAnswered) {
  serve(/*with_token=*/false);
  auto api = client_->Get("/api/v1/info");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 403);
  EXPECT_NE(body_of(api)["error"].get<std::string>().find("--http-token-file"), std::string::npos);
  EXPECT_EQ(client_->Post("/api/v1/messages/remove")->status, 403);  // the CSRF of finding 3
  EXPECT_EQ(client_->Get("/healthz")->status, 200);
  EXPECT_EQ(client_->Get("/metrics")->status, 200);
  EXPECT_EQ(client_->Get("/")->status, 200);  // read-only, on loopback
  // A page that rebound its own name to 127.0.0.1 sends that name as Host.
  for (const char* host : {"attacker.example", "attacker.example:80"}) {
    auto res = client_->Get("/", httplib::Headers{{"Host", host}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 421) << host;
    EXPECT_EQ(res->body.find("queued"), std::string::npos);
  }
  std::string port = std::to_string(port_);
  for (const std::string& host :
       std::vector<std::string>{"localhost:" + port, "127.0.0.1:" + port, "mx.example.net"})
    EXPECT_EQ(client_->Get("/metrics", httplib::Headers{{"Host", host}})->status, 200) << host;
}

TEST_F(HttpRoutesTest, TheHeadIsCheckedBeforeAByteOfTheBodyIsRead) {
  serve();
  const std::string auth = std::string("Authorization: Bearer ") + kToken;
  const std::vector<std::string> envelope = {auth, "Content-Type: message/rfc822",
                                             "X-Envelope-Sender: a@example.com",
                                             "X-Envelope-Recipient: b@example.org"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> all = envelope;
    all.insert(all.end(), more.begin(), more.end());
    return head("POST /api/v1/messages HTTP/1.1", all);
  };
  struct Case {
    std::string request;
    int status;
  };
  std::vector<Case> cases = {
      {with({"Transfer-Encoding: chunked"}), 411},                    // no chunks, whatever follows
      {with({"Content-Length: 10", "Content-Encoding: gzip"}), 415},  // nothing inflated
      {with({"Content-Length: 1073741824"}), 413},                    // 1 GiB announced, none sent
      {with({}), 411},                                                // no length, no body
      {head("GET /metrics HTTP/1.1", {"Content-Length: 100"}), 413},  // no body here
      {head("POST /api/v1/messages HTTP/1.1", {"Content-Length: 1073741824"}), 401},
      {head("GET /nowhere HTTP/1.1", {}), 404},
      {head("PUT /metrics HTTP/1.1", {}), 405},
  };
  for (const Case& c : cases) {
    Raw raw(port_);
    ASSERT_TRUE(raw.send(c.request));
    EXPECT_EQ(raw.status(), c.status) << c.request << raw.got();
  }
  EXPECT_EQ(storage_.load_all().size(), 0u);
  EXPECT_EQ(reception_.bytes_in_flight(), 0u);
}

// Issue 34, finding 7: the README's `curl -X POST` sends no Content-Length and no body;
// cpp-httplib answered 400 "no such resource". An action takes no body.
TEST_F(HttpRoutesTest, AnActionWithoutAContentLengthIsTaken) {
  std::string id = storage_.write(message_to("u@a.example"), 0);
  storage_.hold(id, "looked at", system_clock().now());
  serve();
  Raw raw(port_);
  ASSERT_TRUE(raw.send(head("POST /api/v1/messages/" + id + "/release HTTP/1.1",
                            {std::string("Authorization: Bearer ") + kToken})));
  EXPECT_EQ(raw.status(), 200) << raw.got();
  EXPECT_NE(raw.got().find("\"released\""), std::string::npos) << raw.got();
  EXPECT_FALSE(storage_.get(id).hold);
}

TEST_F(HttpRoutesTest, BodiesInMemoryShareTheDoorsBudget) {
  serve();
  std::string message = "Subject: big\r\n\r\n";
  message += std::string(4000 - message.size(), 'x');
  Raw slow(port_);
  ASSERT_TRUE(slow.send(head("POST /api/v1/messages HTTP/1.1",
                             {std::string("Authorization: Bearer ") + kToken,
                              "Content-Type: message/rfc822", "X-Envelope-Sender: a@example.com",
                              "X-Envelope-Recipient: b@example.org", "Content-Length: 4000"}) +
                        message.substr(0, 100)));
  ASSERT_TRUE(testing::eventually([&] { return reception_.bytes_in_flight() >= 4000; }));
  // A second body of 4000 octets would hold 8000 of a 6000 budget.
  auto res = client_->Post("/api/v1/messages",
                           httplib::Headers{{"X-Envelope-Sender", "a@example.com"},
                                            {"X-Envelope-Recipient", "b@example.org"}},
                           message, "message/rfc822");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->get_header_value("Retry-After"), "60");
  ASSERT_TRUE(slow.send(message.substr(100)));
  EXPECT_EQ(slow.status(), 201) << slow.got();
  EXPECT_EQ(storage_.load_all().size(), 1u);
  EXPECT_TRUE(testing::eventually([&] { return reception_.bytes_in_flight() == 0; }));
}

TEST_F(HttpRoutesTest, HealthIsAnsweredWhileTheWorkersAreBusyAndClientsTrickle) {
  HttpLimits limits;
  limits.workers = 1;
  limits.waiting = 1;
  serve(true, limits);
  {
    std::lock_guard lock(gate_mu_);
    gate_closed_ = true;
  }
  auto inject = [this] {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    auto res = c.Post("/api/v1/messages",
                      httplib::Headers{{"Authorization", std::string("Bearer ") + kToken},
                                       {"X-Envelope-Sender", "a@example.com"},
                                       {"X-Envelope-Recipient", "b@example.org"}},
                      "Subject: in\r\n\r\nhello\r\n", "message/rfc822");
    return res ? res->status : 0;
  };
  auto first = std::async(std::launch::async, inject);
  ASSERT_TRUE(testing::eventually([&] { return at_gate_ == 1; }));  // the worker is held
  // One more waits for the worker; the one after is told at once to come back.
  auto second = std::async(std::launch::async, inject);
  auto third = std::async(std::launch::async, inject);
  std::future<int>* busy = nullptr;
  ASSERT_TRUE(testing::eventually([&] {
    for (auto* f : {&second, &third})
      if (f->wait_for(std::chrono::milliseconds(0)) == std::future_status::ready) busy = f;
    return busy != nullptr;
  }));
  EXPECT_EQ(busy->get(), 503);
  // Twenty clients trickling their heads hold no thread: health and metrics answer.
  std::vector<std::unique_ptr<Raw>> slow;
  for (int i = 0; i < 20; ++i) {
    slow.push_back(std::make_unique<Raw>(port_));
    ASSERT_TRUE(slow.back()->send("GET /metrics HTTP/1.1\r\nHost: local"));
  }
  httplib::Client probe("127.0.0.1", port_);
  probe.set_read_timeout(10, 0);
  auto health = probe.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = probe.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  open_gate();
  EXPECT_EQ(first.get(), 201);
  EXPECT_EQ((busy == &second ? third : second).get(), 201);
}

TEST_F(HttpRoutesTest, ARequestTricklingInIsCutAtTheDeadline) {
  HttpLimits limits;
  limits.request_deadline = std::chrono::seconds(2);
  serve(true, limits);
  Raw raw(port_);
  ASSERT_TRUE(raw.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\n"));
  auto start = std::chrono::steady_clock::now();
  bool closed = false;
  // A header line every 100 ms: never idle, never whole.
  for (int i = 0; i < 300 && !closed; ++i) {
    closed = !raw.send("X-Slow: " + std::to_string(i) + "\r\n") ||
             raw.closed(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(closed) << "still open after 30 s";
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(raw.got().find("200"), std::string::npos) << raw.got();
}

TEST_F(HttpRoutesTest, ConnectionsPastTheClientsLimitAreClosed) {
  HttpLimits limits;
  limits.max_per_client = 3;
  serve(true, limits);
  std::vector<std::unique_ptr<Raw>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<Raw>(port_));
    ASSERT_TRUE(held.back()->send("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    EXPECT_EQ(held.back()->status(), 200);  // accepted, kept alive
  }
  Raw fourth(port_);
  EXPECT_TRUE(fourth.closed());
  EXPECT_EQ(fourth.got(), "");
  held.pop_back();
  EXPECT_TRUE(testing::eventually([&] {
    Raw again(port_);
    return again.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n") && again.status() == 200;
  }));
}

}  // namespace
}  // namespace slimta::daemon
