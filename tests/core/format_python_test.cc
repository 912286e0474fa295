// The stored format is language-neutral: Python's standard library alone reads what
// this library wrote (tests/core/read_record.py, a few lines of struct and zlib).
#include <gtest/gtest.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "core/hex.h"
#include "slimta/disk_storage.h"
#include "support/test_util.h"

namespace slimta {
namespace {

using testing::run_command;

nlohmann::json python_read(const std::string& file) {
  auto r = run_command({"python3", SLIMTA_SOURCE_DIR "/tests/core/read_record.py", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

TEST(FormatPythonTest, PythonStandardLibraryReadsWhatDiskStorageWrote) {
  testing::TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  Envelope env = testing::sample_envelope(3, 5000, 11);
  env.sender = "s\xc3\xa9nder@example.com";
  std::string id = storage.write(env, 1795000000.5);

  nlohmann::json j = python_read(dir.sub("spool/msg/" + id));
  EXPECT_EQ(j["sender"], env.sender);
  EXPECT_EQ(j["recipients"], env.recipients);
  EXPECT_EQ(j["next_attempt"].get<double>(), 1795000000.5);
  EXPECT_EQ(j["attempts"], 0);
  EXPECT_EQ(j["recipient_count"], 3);
  EXPECT_EQ(j["client_ip"], env.client.ip);
  EXPECT_EQ(j["client_auth"], env.client.auth);
  EXPECT_EQ(j["receiver"], env.receiver);
  EXPECT_EQ(j["received_at"].get<double>(), env.timestamp);
  EXPECT_EQ(j["message"], to_hex(env.flatten()));  // binary body, byte for byte

  // Metadata updates go to meta/ID in the same format.
  storage.increment_attempts(id);
  storage.increment_attempts(id);
  const size_t idx[] = {2, 0};
  storage.set_recipients_delivered(id, idx);
  storage.set_timestamp(id, 1795000600.25);
  nlohmann::json m = python_read(dir.sub("spool/meta/" + id));
  EXPECT_EQ(m["attempts"], 2);
  EXPECT_EQ(m["delivered"], (std::vector<int>{0, 2}));
  EXPECT_EQ(m["next_attempt"].get<double>(), 1795000600.25);
  EXPECT_FALSE(m.contains("message"));
  EXPECT_FALSE(m.contains("lease_token"));

  // So does the hold. The lease is msg/ID's extended attribute user.slimta.lease
  // (16 bytes: token, expiry), not here.
  ClaimResult claim = storage.claim(id, std::chrono::seconds(60));
  storage.hold(id, "ticket 9 \xc3\xa9", 1795000700.5);
  m = python_read(dir.sub("spool/meta/" + id));
  EXPECT_EQ(m["hold_since"].get<double>(), 1795000700.5);
  EXPECT_EQ(m["hold_reason"], "ticket 9 \xc3\xa9");
  EXPECT_FALSE(m.contains("lease_token"));
  auto r = run_command({"python3", "-c",
                        "import os,struct,sys; print(*struct.unpack('>Qd', "
                        "os.getxattr(sys.argv[1], 'user.slimta.lease')))",
                        dir.sub("spool/msg/" + id)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lease(r.out);
  uint64_t token = 0;
  double expires = 0;
  lease >> token >> expires;
  EXPECT_EQ(token, 1u);
  EXPECT_NEAR(expires, claim.lease.expires, 0.001);
}

TEST(FormatPythonTest, PythonReaderRejectsACorruptRecord) {
  testing::TempDir dir;
  DiskStorage storage(dir.sub("spool"));
  std::string id = storage.write(testing::sample_envelope(), 1);
  std::string path = dir.sub("spool/msg/" + id);
  std::string bytes = testing::read_file(path);
  bytes[bytes.size() / 2] ^= 1;
  testing::write_file(dir.sub("bad"), bytes);
  auto r = run_command({"python3", SLIMTA_SOURCE_DIR "/tests/core/read_record.py", dir.sub("bad")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("checksum mismatch"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace slimta
