// libFuzzer target: arbitrary bytes as a safetensors file and as a config.json. Any crash,
// sanitizer report or escaped exception is a bug; errors are the expected outcome.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "server/modelio/hf_config.h"
#include "server/modelio/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvwire::modelio;
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensors({data, size}, "fuzz");
  if (header.ok()) {
    // Touch every byte each validated entry claims, so ASan checks the bounds.
    volatile uint8_t sink = 0;
    for (const auto& [name, entry] : header->tensors) {
      for (uint64_t i = 0; i < entry.nbytes; ++i) sink = sink ^ data[entry.file_offset + i];
    }
  }
  (void)ParseModelConfig(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
