// serve --http as monitoring meets it: promtool checks the metrics, a real Prometheus
// (Debian's 2.42) scrapes them and answers a PromQL query, /readyz follows the storage,
// and the listener stays on loopback unless a token guards it.
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "slimta/disk_storage.h"
#include "slimta/open_storage.h"

#include "support/redis_server.h"
#include "support/sink.h"
#include "support/smtp_client.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using namespace std::chrono_literals;
using testing::ChildProcess;

// The "HOST:PORT (http)" serve printed.
// A request that may fail (empty result): for polling.
// The requests carry the tests' token (testing::kHttpToken) unless `headers` name one.
httplib::Headers with_token(httplib::Headers headers) {
  if (!headers.count("Authorization"))
    headers.emplace("Authorization", std::string("Bearer ") + testing::kHttpToken);
  return headers;
}

httplib::Result try_get(int port, const std::string& path, const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  return client.Get(path.c_str(), with_token(headers));
}

// A request that must be answered: a failure throws, naming it (the test fails, and its
// child processes are stopped), rather than an empty result being used.
httplib::Result answered(httplib::Result res, const std::string& what) {
  if (!res) throw std::runtime_error(what + " got no answer: " + httplib::to_string(res.error()));
  return res;
}

httplib::Result get(int port, const std::string& path, const httplib::Headers& headers = {}) {
  return answered(try_get(port, path, headers), "GET " + path);
}

// The value of the first sample line `series` (name and labels, exactly), or -1.
double sample(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

class HttpTest : public ::testing::Test {
 protected:
  // serve on a disk spool with --http on loopback and no token, delivering to the sink.
  std::vector<std::string> serve_on(const std::string& spool) const {
    return {SLIMTA_QUEUE_BIN, "serve",
            "--listen",       "127.0.0.1:0",
            "--http",         "127.0.0.1:0",
            "--storage",      "disk:" + spool,
            "--smarthost",    "127.0.0.1:" + std::to_string(sink_.port()),
            "--user",         "root"};
  }
  // Headless Chromium with its profile in the test's directory, then `args`.
  std::vector<std::string> chromium(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{"chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                  "--user-data-dir=" + dir_.sub("profile")};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  testing::TempDir dir_;
  testing::SmtpSink sink_;
};

TEST_F(HttpTest, MetricsPassPromtoolAndPrometheusScrapesThem) {
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--storage",
       "disk:" + dir_.sub("spool"), "--smarthost", "127.0.0.1:" + std::to_string(sink_.port()),
       "--accept-domains", "ours.example", "--relay-networks", "127.0.0.2/32", "--user", "root"},
      "listening on");
  int smtp = testing::listening_ports(serve.output())[0];
  int port = testing::http_port(serve.output());
  ASSERT_GT(port, 0) << serve.output();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(testing::send_message(smtp, "u" + std::to_string(i) + "@ours.example"), 250);
  EXPECT_EQ(testing::send_message(smtp, "far@remote.example"), 554);  // not in the relay networks
  ASSERT_TRUE(testing::eventually([&] { return sink_.received().size() == 3; }));

  std::string text;
  ASSERT_TRUE(testing::eventually([&] {
    auto res = try_get(port, "/metrics");
    text = res ? res->body : "";
    // A message is removed just after its delivery is counted: wait for both.
    return sample(text, "slimta_deliveries_total{result=\"delivered\"}") == 3 &&
           sample(text, "slimta_storage_operation_duration_seconds_count{op=\"remove\"}") == 3;
  })) << text;
  EXPECT_EQ(sample(text, "slimta_messages_received_total"), 3) << text;
  EXPECT_EQ(sample(text, "slimta_smtp_sessions_total"), 4) << text;
  EXPECT_EQ(sample(text, "slimta_smtp_rejections_total{reason=\"relay_denied\"}"), 1) << text;
  EXPECT_EQ(sample(text, "slimta_delivery_attempt_duration_seconds_count"), 3) << text;
  EXPECT_EQ(sample(text, "slimta_message_queue_time_seconds_count"), 3) << text;
  EXPECT_EQ(sample(text, "slimta_storage_operation_duration_seconds_count{op=\"write\"}"), 3)
      << text;
  EXPECT_NE(text.find("slimta_build_info{version=\""), std::string::npos) << text;
  EXPECT_NE(text.find("storage=\"disk\"} 1"), std::string::npos) << text;
  EXPECT_EQ(get(port, "/metrics")->get_header_value("Content-Type"),
            "text/plain; version=0.0.4; charset=utf-8");

  testing::write_file(dir_.sub("metrics.txt"), text);
  auto check = testing::run_command({"promtool", "check", "metrics"}, text);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // A real Prometheus scrapes serve every second; PromQL sees the counter.
  int prom_port = testing::free_port();
  testing::write_file(dir_.sub("prometheus.yml"),
                      "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: slimta\n"
                      "    static_configs:\n      - targets: ['127.0.0.1:" +
                          std::to_string(port) + "']\n");
  ChildProcess prometheus({"prometheus", "--config.file=" + dir_.sub("prometheus.yml"),
                           "--storage.tsdb.path=" + dir_.sub("tsdb"),
                           "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                          "");
  std::string answer;
  EXPECT_TRUE(testing::eventually(
      [&] {
        auto res = try_get(prom_port, "/api/v1/query?query=sum(slimta_messages_received_total)");
        if (!res || res->status != 200) return false;
        answer = res->body;
        auto j = nlohmann::json::parse(answer);
        auto& result = j["data"]["result"];
        return !result.empty() && result[0]["value"][1] == "3";
      },
      30s))
      << answer;
}

TEST_F(HttpTest, HealthAndReadinessFollowTheStorage) {
  testing::RedisServer redis;
  ChildProcess serve(
      {SLIMTA_QUEUE_BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--storage",
       "redis://127.0.0.1:" + std::to_string(redis.port()) + "/0?timeout=5", "--smarthost",
       "127.0.0.1:" + std::to_string(sink_.port()), "--user", "root"},
      "listening on");
  int port = testing::http_port(serve.output());
  EXPECT_EQ(get(port, "/healthz")->status, 200);
  EXPECT_EQ(get(port, "/readyz")->status, 200);
  redis.pause();  // hangs: each call would wait for the 5 s timeout; /readyz does not
  auto res = get(port, "/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_NE(res->body.find("the storage did not answer within 2000 ms"), std::string::npos)
      << res->body;
  EXPECT_TRUE(testing::eventually(
      [&] {  // then the question under way times out (or calls fail three times first)
        auto r = get(port, "/readyz");
        return r->status == 503 &&
               (r->body.find("the storage is not reachable") != std::string::npos ||
                r->body.find("calls in the last 60 s; the last") != std::string::npos);
      },
      60s));
  EXPECT_EQ(get(port, "/healthz")->status, 200);  // alive all the same
  redis.resume();
  // Ready again once the storage answers and the faults of the pause (three in a minute
  // fail /readyz too) are a minute old.
  EXPECT_TRUE(testing::eventually([&] { return get(port, "/readyz")->status == 200; }, 120s));
  auto missing = get(port, "/nope");
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(nlohmann::json::parse(missing->body)["error"], "no such resource");
}

TEST_F(HttpTest, OffLoopbackOnlyWithATokenAndTheApiWantsIt) {
  std::vector<std::string> base{
      SLIMTA_QUEUE_BIN, "serve",   "--listen",    "127.0.0.1:0",
      "--storage",      "memory:", "--smarthost", "127.0.0.1:" + std::to_string(sink_.port()),
      "--user",         "root"};
  auto with = [&](std::vector<std::string> extra) {
    auto argv = base;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  };
  auto r = testing::run_command(with({"--http", "0.0.0.0:0"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--http 0.0.0.0:0: without --http-token-file the HTTP listener may only "
                       "bind a loopback address"),
            std::string::npos)
      << r.err;
  testing::write_file(dir_.sub("short"), "abc\n");
  r = testing::run_command(with({"--http", "0.0.0.0:0", "--http-token-file", dir_.sub("short")}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("at least 16 characters"), std::string::npos) << r.err;

  const std::string token = "s3cret-token-0123456789";
  testing::write_file(dir_.sub("token"), token + "\n");
  ChildProcess serve(with({"--http", "0.0.0.0:0", "--http-token-file", dir_.sub("token")}),
                     "listening on");
  int port = testing::http_port(serve.output());
  auto res = get(port, "/api/v1/info");
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(get(port, "/api/v1/info", {{"Authorization", "Bearer wrong-token-0123456789"}})->status,
            401);
  res = get(port, "/api/v1/info", {{"Authorization", "Bearer " + token}});
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(nlohmann::json::parse(res->body)["messages"], 0) << res->body;
  EXPECT_EQ(get(port, "/metrics")->status, 200);  // scrapes need no token
  // The page: the token as a browser sends it (Basic, any user) or as Bearer.
  res = get(port, "/");
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Basic realm=\"slimta-queue\"");
  httplib::Client browser("127.0.0.1", port);
  browser.set_basic_auth("anyone", token.c_str());
  EXPECT_EQ(browser.Get("/")->status, 200);
  browser.set_basic_auth("anyone", "wrong-token-0123456789");
  EXPECT_EQ(browser.Get("/")->status, 401);
  EXPECT_EQ(get(port, "/", {{"Authorization", "Bearer " + token}})->status, 200);
}

httplib::Result post(int port, const std::string& path, const std::string& body = "",
                     const std::string& type = "text/plain", const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  return answered(client.Post(path.c_str(), with_token(headers), body, type.c_str()),
                  "POST " + path);
}

// The API on one storage: pages over `count` messages written beforehand (due in a day,
// one in ten to other.example), filters, each action, injection.
void check_api(const std::string& url, size_t count) {
  testing::TempDir dir;
  {
    auto storage = open_storage(url, {}, true);
    for (size_t i = 0; i < count; ++i) {
      Envelope env = testing::sample_envelope(1);
      env.recipients = {i % 10 == 0 ? "x@other.example" : "x@example.org"};
      env.timestamp = static_cast<double>(::time(nullptr)) - (i < 5 ? 7200 : 0);
      storage->write(env, env.timestamp + 86400);
    }
  }
  testing::SmtpSink sink;
  testing::write_file(dir.sub("recipients"), "u@ours.example\nv@ours.example\n");
  ChildProcess serve({SLIMTA_QUEUE_BIN,
                      "serve",
                      "--listen",
                      "127.0.0.1:0",
                      "--http",
                      "127.0.0.1:0",
                      "--http-token-file",
                      testing::write_http_token(dir),
                      "--storage",
                      url,
                      "--smarthost",
                      "127.0.0.1:" + std::to_string(sink.port()),
                      "--user",
                      "root",
                      "--relay-networks",
                      "",
                      "--accept-domains",
                      "ours.example",
                      "--accept-recipients",
                      dir.sub("recipients"),
                      "--max-size",
                      "5000"},
                     "listening on");
  int port = testing::http_port(serve.output());

  // Every message once, in id order, over pages of 1,000.
  std::vector<std::string> ids;
  std::string cursor;
  for (int pages = 0; pages < 100; ++pages) {
    auto res =
        get(port, "/api/v1/messages?limit=1000" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(res->status, 200) << res->body;
    auto j = nlohmann::json::parse(res->body);
    for (const auto& m : j["messages"]) ids.push_back(m["id"]);
    if (j["next_cursor"].is_null()) break;
    cursor = j["next_cursor"];
  }
  ASSERT_EQ(ids.size(), count);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), count);

  auto listed = [&](const std::string& query) {
    auto res = get(port, "/api/v1/messages?limit=1000&" + query);
    EXPECT_EQ(res->status, 200) << query << res->body;
    return nlohmann::json::parse(res->body)["messages"];
  };
  EXPECT_EQ(listed("domain=OTHER.example").size(), std::min<size_t>(count / 10, 1000));
  EXPECT_EQ(listed("older-than=3600").size(), 5u);
  for (std::string bad : {"state=bogus", "limit=0", "limit=abc", "older-than=soon"}) {
    auto res = get(port, "/api/v1/messages?" + bad);
    EXPECT_EQ(res->status, 400) << bad;
    EXPECT_TRUE(nlohmann::json::parse(res->body).contains("error")) << res->body;
  }

  // One message through each action.
  const std::string& id = ids[7];
  auto act = [&](const std::string& what) {
    auto res = post(port, "/api/v1/messages/" + id + "/" + what + "?reason=audit");
    EXPECT_EQ(res->status, 200) << res->body;
    return nlohmann::json::parse(res->body)["done"];
  };
  EXPECT_EQ(act("hold"), "held");
  auto shown = nlohmann::json::parse(get(port, "/api/v1/messages/" + id)->body);
  EXPECT_EQ(shown["state"], "held");
  EXPECT_EQ(shown["hold"]["reason"], "audit");
  EXPECT_EQ(listed("state=held").size(), 1u);
  EXPECT_EQ(act("release"), "released");
  EXPECT_EQ(act("release"), "not held");
  EXPECT_EQ(act("retry"), "retried");
  httplib::Client client("127.0.0.1", port);
  auto removed = client.Delete(("/api/v1/messages/" + id).c_str(), with_token({}));
  EXPECT_EQ(removed->status, 200);
  EXPECT_EQ(get(port, "/api/v1/messages/" + id)->status, 404);
  EXPECT_EQ(post(port, "/api/v1/messages/" + id + "/hold")->status, 404);

  // Bounce: a DSN to the sender, and the message gone.
  const std::string& to_bounce = ids[8];
  bool bounced_other =
      nlohmann::json::parse(
          get(port, "/api/v1/messages/" + to_bounce)->body)["recipients"][0]["address"] ==
      "x@other.example";
  auto bounced = post(port, "/api/v1/messages/" + to_bounce + "/bounce?reason=test");
  EXPECT_EQ(bounced->status, 200) << bounced->body;
  EXPECT_EQ(nlohmann::json::parse(bounced->body)["done"], "bounced");
  EXPECT_EQ(get(port, "/api/v1/messages/" + to_bounce)->status, 404);

  // Bulk, by filter.
  auto bulk = post(port, "/api/v1/messages/hold?domain=other.example&reason=bulk");
  ASSERT_EQ(bulk->status, 200) << bulk->body;
  size_t others = count / 10 - (shown["recipients"][0]["address"] == "x@other.example" ? 1 : 0) -
                  (bounced_other ? 1 : 0);
  EXPECT_EQ(nlohmann::json::parse(bulk->body)["held"].size(), others);
  EXPECT_EQ(post(port, "/api/v1/messages/hold?state=nonsense")->status, 400);

  // Injection: durable when it answers 201; the relay rules and size limit of SMTP.
  httplib::Headers envelope{{"X-Envelope-Sender", "a@example.com"},
                            {"X-Envelope-Recipient", "u@ours.example, v@ours.example"}};
  auto made = post(port, "/api/v1/messages", "Subject: via http\r\n\r\nhello\r\n", "message/rfc822",
                   envelope);
  ASSERT_EQ(made->status, 201) << made->body;
  std::string new_id = nlohmann::json::parse(made->body)["id"];
  ASSERT_TRUE(testing::eventually([&] {
    for (const auto& m : sink.received())
      if (m["to"].size() == 2 && m["from"] == "a@example.com") return true;
    return false;
  }));
  EXPECT_EQ(post(port, "/api/v1/messages", "x", "text/plain", envelope)->status, 415);
  EXPECT_EQ(
      post(port, "/api/v1/messages", std::string(6000, 'x'), "message/rfc822", envelope)->status,
      413);
  EXPECT_EQ(post(port, "/api/v1/messages", "x", "message/rfc822",
                 {{"X-Envelope-Sender", "a@example.com"}})
                ->status,
            400);
  // The token is the caller's credential, as AUTH is SMTP's: the relay networks (empty
  // here) do not matter, the recipients of our own domains still do.
  auto relayed = post(
      port, "/api/v1/messages", "x", "message/rfc822",
      {{"X-Envelope-Sender", "a@example.com"}, {"X-Envelope-Recipient", "far@remote.example"}});
  EXPECT_EQ(relayed->status, 201) << relayed->body;
  auto refused = post(
      port, "/api/v1/messages", "x", "message/rfc822",
      {{"X-Envelope-Sender", "a@example.com"}, {"X-Envelope-Recipient", "nobody@ours.example"}});
  EXPECT_EQ(refused->status, 403);
  EXPECT_NE(refused->body.find("550 5.1.1"), std::string::npos) << refused->body;
  // Without the token, nothing: not even a look.
  EXPECT_EQ(post(port, "/api/v1/messages", "x", "message/rfc822", {{"Authorization", "Bearer x"}})
                ->status,
            401);
  EXPECT_EQ(get(port, "/api/v1/info", {{"Authorization", ""}})->status, 401);
}

// Chromium's network log: the URLs the page itself asked for (requests whose initiator
// is `origin`; the browser's own background requests have none).
std::vector<std::string> page_requests(const std::string& netlog, const std::string& origin) {
  std::string text = testing::read_file(netlog);
  nlohmann::json log = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (log.is_discarded()) {  // cut short on exit: close the events list
    while (!text.empty() && (text.back() == '\n' || text.back() == ',')) text.pop_back();
    log = nlohmann::json::parse(text + "]}");
  }
  std::vector<std::string> out;
  for (const auto& e : log["events"]) {
    const auto& p = e.value("params", nlohmann::json::object());
    if (p.contains("url") && p.value("initiator", "") == origin) out.push_back(p["url"]);
  }
  return out;
}

TEST_F(HttpTest, TheStatusPageInHeadlessChromium) {
  std::string spool = dir_.sub("spool");
  std::string held;
  {
    DiskStorage storage(spool);
    double now = static_cast<double>(::time(nullptr));
    for (int i = 0; i < 3; ++i) {
      Envelope env = testing::sample_envelope(1);
      env.timestamp = now - 600;
      std::string id = storage.write(env, now + 86400);
      if (i == 0) held = id;
    }
    storage.hold(held, "spam <check>", now);
  }
  ChildProcess serve(serve_on(spool), "listening on");
  int port = testing::http_port(serve.output());
  std::string origin = "http://127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(testing::eventually(
      [&] { return sample(get(port, "/metrics")->body, "slimta_queue_messages") == 3; }));
  auto page = get(port, "/");
  EXPECT_EQ(page->status, 200);
  // One policy (two would both apply): nothing from anywhere, its own inline style only.
  EXPECT_EQ(page->get_header_value_count("Content-Security-Policy"), 1u);
  EXPECT_EQ(page->get_header_value("Content-Security-Policy")
                .find("default-src 'none'; "
                      "style-src 'unsafe-inline'"),
            0u);
  EXPECT_EQ(page->body.find("<script"), std::string::npos);

  auto with = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "--log-net-log=" + dir_.sub("netlog.json"));
    return chromium(args);
  };
  auto dom = testing::run_command(with({"--dump-dom", origin + "/"}));
  ASSERT_EQ(dom.exit_code, 0) << dom.err;
  EXPECT_NE(dom.out.find("id=\"depth\">3<"), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find("id=\"held\">1<"), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find(held), std::string::npos) << dom.out;
  EXPECT_NE(dom.out.find("spam &lt;check&gt;"), std::string::npos) << dom.out;  // escaped
  EXPECT_NE(dom.out.find("<svg"), std::string::npos) << dom.out;
  for (const auto& url : page_requests(dir_.sub("netlog.json"), origin))
    EXPECT_TRUE(url.starts_with(origin + "/")) << "the page fetched " << url;

  // A screenshot beside the test binary, for a human to look at.
  auto shot = testing::run_command(
      with({"--screenshot=" + std::filesystem::absolute("status-page.png").string(),
            "--window-size=1000,1000", origin + "/"}));
  ASSERT_EQ(shot.exit_code, 0) << shot.err;
  EXPECT_EQ(testing::read_file("status-page.png").substr(0, 8), "\x89PNG\r\n\x1a\n");
}

// Finding 3 of the attack round, as a browser meets it: without a token the API was
// open on loopback, so a page from another loopback origin emptied the queue with a
// form (CSRF), and a DNS-rebinding page read it. Headless Chromium loads both pages
// against serve's default set-up (loopback, no token); the queue keeps its messages
// and the rebound name gets 421, not the page or the list.
TEST_F(HttpTest, ACsrfFormOrARebindingPageInChromiumGetsNothing) {
  std::string spool = dir_.sub("spool");
  std::vector<std::string> ids;
  {
    DiskStorage storage(spool);
    for (int i = 0; i < 3; ++i) ids.push_back(storage.write(testing::sample_envelope(1), 1e10));
  }
  ChildProcess serve(serve_on(spool), "listening on");
  int port = testing::http_port(serve.output());
  std::string target = "http://127.0.0.1:" + std::to_string(port);
  // The attacker's page, from another origin on this host: a form that posts itself to
  // the API's bulk remove (a "simple" request a browser sends without asking), and a
  // no-cors fetch doing the same.
  std::string site = dir_.sub("site");
  std::filesystem::create_directory(site);
  testing::write_file(
      site + "/csrf.html",
      "<html><body><form id=f method=POST enctype=text/plain action=\"" + target +
          "/api/v1/messages/remove\"><input name=a value=b></form><script>"
          "fetch('" +
          target +
          "/api/v1/messages/remove', {method: 'POST', mode: 'no-cors'});"
          "setTimeout(() => document.getElementById('f').submit(), 200);</script></body></html>");
  int site_port = testing::free_port();
  ChildProcess attacker({"python3", "-u", "-m", "http.server", "--bind", "127.0.0.2", "--directory",
                         site, std::to_string(site_port)},
                        "Serving HTTP");
  auto load = [&](const std::string& url) {
    return testing::run_command(
        chromium({"--virtual-time-budget=3000", "--host-resolver-rules=MAP rebind.test 127.0.0.1",
                  "--dump-dom", url}));
  };
  auto csrf = load("http://127.0.0.2:" + std::to_string(site_port) + "/csrf.html");
  ASSERT_EQ(csrf.exit_code, 0) << csrf.err;
  EXPECT_EQ(DiskStorage(spool).load_all().size(), 3u) << "the form emptied the queue";
  // Where the browser went, if it got there before Chromium dumped the page (on a loaded
  // machine it may not have: the page is dumped when its virtual time runs out): the
  // API's refusal, never an answer that did something.
  EXPECT_EQ(csrf.out.find("\"removed\""), std::string::npos) << csrf.out;
  for (const auto& id : ids) EXPECT_EQ(csrf.out.find(id), std::string::npos) << csrf.out;

  // A page whose name now resolves to 127.0.0.1 (the resolver rule plays the rebinding).
  std::string rebound = "http://rebind.test:" + std::to_string(port);
  for (const std::string& path :
       {std::string("/"), std::string("/metrics"), std::string("/api/v1/messages")}) {
    auto page = load(rebound + path);
    ASSERT_EQ(page.exit_code, 0) << page.err;
    EXPECT_NE(page.out.find("does not answer to that Host"), std::string::npos)
        << path << ": " << page.out;
    for (const auto& id : ids) EXPECT_EQ(page.out.find(id), std::string::npos) << path;
    EXPECT_EQ(page.out.find("slimta_queue_messages"), std::string::npos) << path;
  }
  EXPECT_EQ(DiskStorage(spool).load_all().size(), 3u);
}

// Issue 34, finding 1: a message serve cannot read (what root's CLI used to leave in the
// service's spool) failed its watcher and every gauge scan, and only the log said so:
// /readyz said ready and the queue gauge 0. A storage fault that repeats is counted and
// makes /readyz fail with its reason.
TEST_F(HttpTest, ARepeatedStorageFaultIsCountedAndMakesReadyzFail) {
  ASSERT_EQ(::geteuid(), 0u) << "the test suite runs as root (serve switches users)";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
  std::string spool = dir_.sub("spool");
  std::filesystem::create_directory(spool);
  ASSERT_EQ(::chown(spool.c_str(), nobody->pw_uid, nobody->pw_gid), 0);
  std::vector<std::string> args = serve_on(spool);
  args.back() = "nobody";  // --user
  ChildProcess serve(args, "listening on");
  int port = testing::http_port(serve.output());
  ASSERT_EQ(get(port, "/readyz")->status, 200);
  {
    DiskStorage root_written(spool);  // this process is root: a message nobody cannot read
    std::string id = root_written.write(testing::sample_envelope(1), 0);
    root_written.announce(id, 0);
  }
  std::string why;
  EXPECT_TRUE(testing::eventually(
      [&] {
        auto res = try_get(port, "/readyz");
        why = res ? std::to_string(res->status) + " " + res->body : "";
        return res && res->status == 503;
      },
      60s))
      << why;
  EXPECT_NE(why.find("Permission denied"), std::string::npos) << why;
  std::string metrics = get(port, "/metrics")->body;
  // The watcher's wait() and the gauges' scans (load, get) met it.
  EXPECT_GE(sample(metrics, "slimta_storage_errors_total{op=\"wait\"}") +
                sample(metrics, "slimta_storage_errors_total{op=\"load\"}") +
                sample(metrics, "slimta_storage_errors_total{op=\"get\"}"),
            3)
      << metrics;
  EXPECT_EQ(sample(metrics, "slimta_storage_errors_total{op=\"write\"}"), 0);
}

TEST_F(HttpTest, TheApiPagesFiltersActsAndInjectsOnDisk) {
  check_api("disk:" + dir_.sub("spool"), 10000);
}

TEST_F(HttpTest, TheApiPagesFiltersActsAndInjectsOnRedis) {
  if (testing::RedisServer::skipped())
    GTEST_SKIP() << "SLIMTA_SKIP_REDIS=1: local opt-out, never set in CI";
  testing::RedisServer& server = testing::shared_redis();
  check_api(
      "redis://127.0.0.1:" + std::to_string(server.port()) + "/4?prefix=api" + random_hex(4) + ":",
      2000);
}

}  // namespace
}  // namespace slimta
