// The libFuzzer entry point of one target, chosen by SLIMTA_FUZZ_TARGET at build time.
#include <string_view>

#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  slimta::fuzz::SLIMTA_FUZZ_TARGET(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
