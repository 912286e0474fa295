// slimta-queue as sendmail: its options read as Postfix's sendmail(1) reads them, and
// the envelope made from them and the message.
#include "admin/sendmail.h"

#include <gtest/gtest.h>

#include <sstream>

#include "slimta/errors.h"

namespace slimta::admin {
namespace {

TEST(SendmailTest, OptionsAreReadAsSendmailsAndTheUnknownNamed) {
  SendmailArgs a =
      parse_sendmail_args({"-t", "-oi", "-f", "cron@example.org", "-FCron Daemon", "-odi", "-oem",
                           "-v", "-B", "8BITMIME", "x@example.org", "--", "-y@example.org"});
  EXPECT_TRUE(a.extract);
  EXPECT_TRUE(a.ignore_dots);
  EXPECT_EQ(a.sender, "cron@example.org");
  EXPECT_TRUE(a.sender_given);
  EXPECT_EQ(a.full_name, "Cron Daemon");
  EXPECT_EQ(a.recipients, (std::vector<std::string>{"x@example.org", "-y@example.org"}));
  EXPECT_EQ(a.mode, SendmailArgs::Mode::deliver);
  EXPECT_EQ(parse_sendmail_args({"-f<>"}).sender, "");
  EXPECT_EQ(parse_sendmail_args({"-bs"}).mode, SendmailArgs::Mode::smtp_on_stdio);
  EXPECT_EQ(parse_sendmail_args({"-bp"}).mode, SendmailArgs::Mode::list);
  EXPECT_EQ(parse_sendmail_args({"-q"}).mode, SendmailArgs::Mode::flush);
  for (const auto& bad : std::vector<std::vector<std::string>>{{"-y"}, {"-bz"}, {"-f"}}) {
    EXPECT_THROW(parse_sendmail_args(bad), InvalidArgument) << bad.front();
  }
}

TEST(SendmailTest, TheEnvelopeComesFromTheOptionsAndWithDashTTheHeaders) {
  SendmailArgs a = parse_sendmail_args({"-t", "-F", "A \"B\" C", "extra@example.org"});
  std::istringstream in(
      "To: bob@example.org\nBcc: hidden@example.org\nSubject: s\n\nline\n.\nafter\n");
  Envelope env = sendmail_envelope(a, in, "cron@host.example", 1 << 20);
  EXPECT_EQ(env.sender, "cron@host.example");
  EXPECT_EQ(env.recipients, (std::vector<std::string>{"extra@example.org", "bob@example.org",
                                                      "hidden@example.org"}));
  EXPECT_FALSE(env.headers.get("Bcc"));  // hidden, as sendmail -t
  EXPECT_EQ(env.headers.get("From").value_or(""), "\"A \\\"B\\\" C\" <cron@host.example>");
  EXPECT_EQ(env.body, "line\r\n");  // a line of one "." ends it without -i
  EXPECT_EQ(env.client.protocol, "local");

  std::istringstream dots("Subject: s\n\n.\nmore\n");
  a = parse_sendmail_args({"-i", "to@example.org"});
  EXPECT_EQ(sendmail_envelope(a, dots, "u@h", 1 << 20).body, ".\r\nmore\r\n");

  std::istringstream none("Subject: s\n\nbody\n");
  EXPECT_THROW(sendmail_envelope(parse_sendmail_args({"-t"}), none, "u@h", 1 << 20),
               InvalidArgument);
  std::istringstream big("Subject: s\n\n" + std::string(2000, 'x') + "\n");
  EXPECT_THROW(sendmail_envelope(parse_sendmail_args({"to@example.org"}), big, "u@h", 1000),
               InvalidArgument);
  // -F cannot add a header of its own.
  std::istringstream msg("Subject: s\n\nbody\n");
  EXPECT_THROW(sendmail_envelope(parse_sendmail_args({"-F", "x\r\nBcc: y", "to@example.org"}), msg,
                                 "u@h", 1 << 20),
               InvalidArgument);
}

}  // namespace
}  // namespace slimta::admin
