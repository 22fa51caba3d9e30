// Random-weight Hugging Face checkpoints for tests: a config.json plus safetensors weights
// with the real tensor names and shapes, so loaders and the engine can be exercised on
// tiny models without downloading anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/modelio/dtype.h"
#include "server/modelio/hf_config.h"

namespace kvwire::modelio {

// Standard-normal draws that are bit-identical on every platform and standard library:
// xoshiro256** seeded through splitmix64, Marsaglia's polar method, and a logarithm
// computed with plain IEEE arithmetic (std::log and std::normal_distribution are not
// specified precisely enough to be reproducible across libm/libstdc++/libc++).
class DeterministicNormal {
 public:
  explicit DeterministicNormal(uint64_t seed);
  double Next();

 private:
  uint64_t NextBits();
  double Uniform();  // [-1, 1)

  uint64_t s_[4];
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// Writes `dir`/config.json (ToJson of `config` with torch_dtype set to match `dtype`) and
// the weights listed by ExpectedTensorShapes, as one model.safetensors or, when
// max_shard_bytes > 0 and the weights exceed it, as shards plus an index. Values are
// normal with std 0.02 (RMSNorm weights: 1 + that noise), rounded to `dtype` (F32, F16 or
// BF16). Each tensor's stream is seeded from (seed, tensor name), so the values of a
// tensor do not depend on sharding or on the other tensors, and the same seed always
// produces byte-identical files. Memory use is one tensor at a time.
absl::Status WriteRandomCheckpoint(const std::string& dir, const ModelConfig& config,
                                   uint64_t seed, Dtype dtype, size_t max_shard_bytes = 0);

}  // namespace kvwire::modelio
