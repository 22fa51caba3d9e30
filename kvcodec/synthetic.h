// Synthetic KV caches with the structure real ones have, for demos, benchmarks and tests when no
// model is at hand: keys have a few outlier channels of large magnitude (post-RoPE keys do, and
// that is what breaks per-token quantization), RoPE-style rotation of channel pairs along the
// position axis, and values are closer to Gaussian with smaller per-channel spread.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcodec/kvcodec.h"

namespace kvcodec {

struct SyntheticCache {
  CacheShape shape;
  std::vector<std::vector<uint8_t>> keys;    // per layer, [heads, tokens, head_dim] in shape.dtype
  std::vector<std::vector<uint8_t>> values;  // same
  std::vector<int32_t> positions;
  std::vector<LayerView> views() const;
};

SyntheticCache MakeSyntheticCache(const CacheShape& shape, uint64_t seed);

// Attention-like importance scores: a few heavy hitters per head plus the recent window.
ImportanceScores MakeSyntheticScores(const CacheShape& shape, uint64_t seed);

}  // namespace kvcodec
