// The fuzz targets: each takes any bytes and must neither crash, hang, nor read out of
// bounds (ASan), and checks what must hold of its parser's answer. Built two ways
// (tests/CMakeLists.txt): as libFuzzer binaries (-DSLIMTA_FUZZ=ON with clang; see
// scripts/fuzz.sh), and into the test suite, which runs each over its checked-in
// corpus in tests/fuzz/corpus/TARGET/ (and so under ASan + UBSan in CI).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace slimta::fuzz {

using Target = void (*)(std::string_view data);

void smtp_command(std::string_view data);   // SMTP command lines and MAIL/RCPT arguments
void record(std::string_view data);         // the stored record decoder
void message(std::string_view data);        // RFC 5322 message parsing
void address_list(std::string_view data);   // From/To/Cc address lists
void proxy_header(std::string_view data);   // PROXY protocol v1/v2 headers
void smtp_reply(std::string_view data);     // a destination's replies, line by line
void http_head(std::string_view data);      // serve's HTTP checks of a request's head
void cluster_slots(std::string_view data);  // a Redis node's CLUSTER SLOTS reply (RESP)

struct NamedTarget {
  const char* name;  // the corpus directory
  Target run;
};
inline constexpr NamedTarget kTargets[] = {
    {"smtp_command", smtp_command}, {"record", record},
    {"message", message},           {"address_list", address_list},
    {"proxy_header", proxy_header}, {"smtp_reply", smtp_reply},
    {"http_head", http_head},       {"cluster_slots", cluster_slots}};

}  // namespace slimta::fuzz
