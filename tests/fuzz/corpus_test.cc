// Every fuzz target over its checked-in corpus (tests/fuzz/corpus/TARGET/): the inputs
// libFuzzer found interesting, and the seeds. In CI this also runs under ASan + UBSan.
#include <gtest/gtest.h>

#include <filesystem>

#include "fuzz/fuzz_targets.h"
#include "support/test_util.h"

namespace slimta {
namespace {

class FuzzCorpusTest : public ::testing::TestWithParam<fuzz::NamedTarget> {};

TEST_P(FuzzCorpusTest, EveryInputOfTheCorpusPasses) {
  std::filesystem::path dir =
      std::filesystem::path(SLIMTA_SOURCE_DIR) / "tests/fuzz/corpus" / GetParam().name;
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  size_t inputs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::string data = testing::read_file(entry.path());
    GetParam().run(data);
    // Every prefix too: truncated input is what a network peer sends most.
    for (size_t n = 0; n < data.size() && n < 4096; n += 1 + n / 16)
      GetParam().run(std::string_view(data).substr(0, n));
    ++inputs;
  }
  EXPECT_GE(inputs, 3u) << "the corpus of " << GetParam().name << " is too small";
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpusTest, ::testing::ValuesIn(fuzz::kTargets),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace slimta
