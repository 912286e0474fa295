#include "slimta/envelope.h"

#include <gtest/gtest.h>

#include "slimta/errors.h"

namespace slimta {
namespace {

TEST(EnvelopeTest, ParseSplitsHeadersAndBodyAndFlattenIsByteExactCRLF) {
  std::string raw =
      "Received: from a by b;\r\n\tSun, 22 Nov 2026 10:00:00 +0000\r\n"
      "From: Alice <alice@example.com>\r\n"
      "Subject: multi\r\n line\r\n"
      "X-Empty:\r\n"
      "\r\n"
      "body line 1\r\n\r\nbody \xe9\xff line 3\r\n";
  Envelope env;
  env.parse(raw);
  ASSERT_EQ(env.headers.fields().size(), 4u);
  EXPECT_EQ(env.headers.fields()[0].name, "Received");
  EXPECT_EQ(env.headers.get("subject"), "multi line");
  EXPECT_EQ(env.headers.get("Received"), "from a by b;\tSun, 22 Nov 2026 10:00:00 +0000");
  EXPECT_EQ(env.headers.get("X-Empty"), "");
  EXPECT_EQ(env.headers.line_ending(), "\r\n");
  EXPECT_EQ(env.separator, "\r\n");
  EXPECT_EQ(env.body, "body line 1\r\n\r\nbody \xe9\xff line 3\r\n");
  EXPECT_EQ(env.flatten(), raw);
  EXPECT_EQ(env.message_size(), raw.size());
}

TEST(EnvelopeTest, LFInputStaysLF) {
  std::string raw = "From: a@b\nTo: c@d,\n  e@f\n\nhello\n";
  Envelope env;
  env.parse(raw);
  EXPECT_EQ(env.headers.line_ending(), "\n");
  EXPECT_EQ(env.headers.get("To"), "c@d,  e@f");
  EXPECT_EQ(env.flatten(), raw);
  env.headers.add("X-Added", "yes");
  EXPECT_EQ(env.flatten(), "From: a@b\nTo: c@d,\n  e@f\nX-Added: yes\n\nhello\n");
}

TEST(EnvelopeTest, RepeatedHeadersKeepTheirOrder) {
  Envelope env;
  env.parse("Received: one\r\nX: 1\r\nReceived: two\r\n\r\n");
  EXPECT_EQ(env.headers.get_all("received"), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(env.headers.remove("Received"), 2u);
  EXPECT_EQ(env.flatten(), "X: 1\r\n\r\n");
}

TEST(EnvelopeTest, MessageWithoutSeparatorOrWithoutHeadersRoundTrips) {
  for (std::string raw :
       {std::string("just a body line\r\nmore\r\n"), std::string("Subject: x"),
        std::string("Subject: x\r\n"), std::string("\r\nbody only"), std::string(""),
        std::string(" leading space\r\n"), std::string("Bad Header: x\r\n\r\n"),
        std::string("A: 1\r\nnot a header\r\n")}) {
    Envelope env;
    env.parse(raw);
    EXPECT_EQ(env.flatten(), raw) << raw;
  }
  Envelope env;
  env.parse("A: 1\r\nnot a header\r\nB: 2\r\n");
  EXPECT_EQ(env.headers.fields().size(), 1u);
  EXPECT_EQ(env.separator, "");
  EXPECT_EQ(env.body, "not a header\r\nB: 2\r\n");
}

TEST(EnvelopeTest, BinaryBodyIsUntouched) {
  std::string body;
  for (int i = 0; i < 256; ++i) body.push_back(static_cast<char>(i));
  std::string raw = "Content-Type: application/octet-stream\r\n\r\n" + body + body;
  Envelope env;
  env.parse(raw);
  EXPECT_EQ(env.body, body + body);
  EXPECT_EQ(env.flatten(), raw);
}

TEST(EnvelopeTest, AddFoldsLongValuesAndUnfoldingRestoresThem) {
  Envelope env;
  std::string value;
  for (int i = 0; i < 30; ++i) value += "word" + std::to_string(i) + " ";
  value += "end";
  env.headers.add("X-Long", value);
  const auto& raw = env.headers.fields()[0].raw;
  size_t line_start = 0;
  std::string flat = env.flatten();
  for (size_t pos = flat.find("\r\n"); pos != std::string::npos;
       pos = flat.find("\r\n", line_start)) {
    EXPECT_LE(pos - line_start, 78u) << flat.substr(line_start, pos - line_start);
    line_start = pos + 2;
  }
  EXPECT_NE(raw.find("\r\n "), std::string::npos) << "expected a fold";
  EXPECT_EQ(env.headers.get("X-Long"), value);
  Envelope reparsed;
  reparsed.parse(flat);
  EXPECT_EQ(reparsed.headers.get("X-Long"), value);
}

TEST(EnvelopeTest, PrependPutsTraceHeadersFirst) {
  Envelope env;
  env.parse("Subject: s\r\n\r\nb");
  env.headers.prepend("Received", "from x by y");
  EXPECT_EQ(env.flatten(), "Received: from x by y\r\nSubject: s\r\n\r\nb");
}

TEST(EnvelopeTest, ReceivedFoldsBeforeItsDateNeverInsideIt) {
  // A Received field's date-time (after its last ';') stays on one line.
  for (std::string helo : {"a", "mail.example.com", "a-much-longer-client-name.example.com"}) {
    Envelope env;
    std::string date = "Sat, 28 Nov 2026 11:25:16 +0000";
    std::string value = "from " + helo + " ([192.0.2.1]) by relay.example.net with ESMTPS for " +
                        "<someone@example.org>; " + date;
    env.headers.prepend("Received", value);
    const std::string& raw = env.headers.fields()[0].raw;
    EXPECT_NE(raw.find(date), std::string::npos) << raw;
    EXPECT_EQ(env.headers.get("Received"), value);
  }
}

TEST(EnvelopeTest, AddAfterAnUnterminatedLastFieldStartsANewLine) {
  Envelope env;
  env.parse("Subject: x");
  env.headers.add("X-New", "y");
  EXPECT_EQ(env.flatten(), "Subject: x\r\nX-New: y\r\n");
}

TEST(EnvelopeTest, HeaderInjectionAndBadNamesAreRejected) {
  Headers h;
  EXPECT_THROW(h.add("X-Evil", "a\r\nBcc: victim@example.com"), InvalidArgument);
  EXPECT_THROW(h.add("X-Evil", "a\nb"), InvalidArgument);
  EXPECT_THROW(h.add("Bad Name", "v"), InvalidArgument);
  EXPECT_THROW(h.add("Bad:Name", "v"), InvalidArgument);
  EXPECT_THROW(h.add("", "v"), InvalidArgument);
  EXPECT_TRUE(h.empty());
}

TEST(UtcTimeTest, FormatsInUtcAndFallsBackToTheNumber) {
  EXPECT_EQ(rfc5322_date(1795384244.9), "Sun, 22 Nov 2026 21:50:44 +0000");
  EXPECT_EQ(utc_time(1795384244.9, "%Y-%m-%dT%H:%M:%SZ"), "2026-11-22T21:50:44Z");
  EXPECT_EQ(utc_time(0, "%Y-%m-%d %H:%M:%S"), "1970-01-01 00:00:00");
  EXPECT_EQ(utc_time(1e300, "%Y"), std::to_string(1e300));  // beyond any calendar
}

TEST(AddressListTest, ExtractsAddrSpecs) {
  EXPECT_EQ(parse_address_list("a@example.com"), (std::vector<std::string>{"a@example.com"}));
  EXPECT_EQ(parse_address_list("\"Doe, John\" <john@example.com>, jane@example.com (Jane)"),
            (std::vector<std::string>{"john@example.com", "jane@example.com"}));
  EXPECT_EQ(parse_address_list("undisclosed-recipients:;"), std::vector<std::string>{});
  EXPECT_EQ(parse_address_list("team: a@x.org, B <b@y.org>;, c@z.org"),
            (std::vector<std::string>{"a@x.org", "b@y.org", "c@z.org"}));
  EXPECT_EQ(parse_address_list("\"odd local\"@example.com"),
            (std::vector<std::string>{"\"odd local\"@example.com"}));
  EXPECT_EQ(parse_address_list("<>"), std::vector<std::string>{});
}

}  // namespace
}  // namespace slimta
