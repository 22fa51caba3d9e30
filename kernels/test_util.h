// Checks shared by kernels_test (host reference backend) and cuda_kernels_test (CUDA backend):
// each runs a piece of the codec through a Backend and through kvcodec and compares the results
// bit for bit.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kvcodec/kvcodec.h"

namespace kvwire::gpu::testing {

// One layer's keys or values, [heads, tokens, head_dim] in `dtype`, with what makes the codec's
// corner cases happen: outlier channels, constant rows, exact zeros of both signs, ties.
struct CacheCase {
  int heads = 3;
  int tokens = 50;
  int head_dim = 64;
  kvcodec::DType dtype = kvcodec::DType::kBFloat16;
  uint64_t seed = 1;
};
std::vector<uint8_t> MakeCache(const CacheCase& c);
// A selection with uneven, empty and one-row heads.
std::vector<std::vector<int32_t>> MakeKept(const CacheCase& c, uint64_t seed);

struct SectionCase {
  std::string name;
  kvcodec::QuantSpec spec;
  kvcodec::DeltaConfig delta;
};
// Every integer coding x axis x group x delta mode x loop the codec accepts, in a small form.
std::vector<SectionCase> AllSectionCases();

// Encodes with SectionCodec on `backend` and with kvcodec::Quantize + PackBits; then decodes
// both ways (packed and rANS symbol layouts) into `cache.dtype`. Every stream and every decoded
// element must be equal, and errors must be the same status.
::testing::AssertionResult SectionMatchesKvcodec(Backend& backend, const SectionCase& sc,
                                                 const CacheCase& cache,
                                                 const std::vector<std::vector<int32_t>>& kept,
                                                 const std::vector<uint8_t>& data);

// CopyRows against kvcodec's gather (ToFloat) and FromFloat, for every dtype pair and raw.
::testing::AssertionResult CopyRowsMatchesKvcodec(Backend& backend, const CacheCase& cache);

// rANS: streams kvcodec::RansEncode made (many shapes, lane counts and context splits) decode
// on `backend` to the symbols kvcodec::RansDecode returns.
::testing::AssertionResult RansMatchesKvcodec(Backend& backend, uint64_t seed);

// Corrupted rANS streams (flipped, truncated, extended) fail on `backend` with exactly
// kvcodec::RansDecode's status, or decode to the same symbols when kvcodec accepts them.
::testing::AssertionResult RansErrorsMatchKvcodec(Backend& backend, uint64_t seed);

}  // namespace kvwire::gpu::testing
