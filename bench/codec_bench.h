// `kvwire bench codec` and `kvwire codec-demo`: codec figures on a synthetic cache.
#pragma once

#include <string>
#include <vector>

namespace kvwire {

struct CodecBenchOptions {
  int tokens = 4096;
  int layers = 28;
  int kv_heads = 4;
  int head_dim = 128;
  int reps = 3;
  bool json = false;
  uint64_t seed = 1;
  std::vector<std::string> presets;  // empty: the default list
};

// Prints encode/decode GB/s per preset beside memcpy and zstd -1 measured in the same run.
int RunCodecBench(const CodecBenchOptions& options);

// Prints bytes, bits per element, bandwidth, reconstruction error and speed per preset.
int RunCodecDemo(const CodecBenchOptions& options);

}  // namespace kvwire
