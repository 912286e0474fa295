#include "slimta/host_port.h"

#include <gtest/gtest.h>

#include "slimta/errors.h"

namespace slimta {
namespace {

TEST(HostPortTest, TheFormsOperatorsWrite) {
  EXPECT_EQ(parse_host_port("mail.example.com:25", "x"), (HostPort{"mail.example.com", 25}));
  EXPECT_EQ(parse_host_port("[::1]:2525", "x"), (HostPort{"::1", 2525}));
  EXPECT_EQ(parse_host_port("127.0.0.1:0", "x", std::nullopt, true), (HostPort{"127.0.0.1", 0}));
  // With a default port.
  EXPECT_EQ(parse_host_port("10.0.0.1", "x", 53), (HostPort{"10.0.0.1", 53}));
  EXPECT_EQ(parse_host_port("[::1]", "x", 53), (HostPort{"::1", 53}));
  EXPECT_EQ(parse_host_port("::1", "x", 53), (HostPort{"::1", 53}));
  EXPECT_EQ(parse_host_port("10.0.0.1:5353", "x", 53), (HostPort{"10.0.0.1", 5353}));
}

TEST(HostPortTest, WhatIsNotHostPortIsNamed) {
  for (const char* bad :
       {"mail.example.com", ":25", "host:", "host:port", "host:65536", "host:0", "host:-1",
        "host:+25", "[::1", "[::1]x", "[::1]:", "a b:25", "host:123456", "ho/st:25", "::1"}) {
    try {
      parse_host_port(bad, "--smarthost");
      ADD_FAILURE() << bad << " was taken";
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(std::string(e.what()), "--smarthost '" + std::string(bad) + "' is not HOST:PORT");
    }
  }
  EXPECT_THROW(parse_host_port("host:", "x", 53), InvalidArgument);
  EXPECT_THROW(parse_host_port("", "x", 53), InvalidArgument);
}

}  // namespace
}  // namespace slimta
