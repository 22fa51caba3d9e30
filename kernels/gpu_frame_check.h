// Frame-level checks shared by kernels_test (host reference backend) and cuda_kernels_test:
// EncodeFrameOn / DecodeFrameOn against kvcodec::EncodeFrame / DecodeFrame.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/synthetic.h"

namespace kvwire::gpu::testing {

// Configurations covering every section coding, axis, delta mode, entropy coder, chunking and
// selection kind (shared, per head, adaptive).
std::vector<std::string> FrameConfigs();

// A synthetic cache of `shape` encoded with `config` by EncodeFrameOn (cache in backend memory)
// and by kvcodec must give the same bytes; the frame decoded by DecodeFrameOn (both layouts)
// and by kvcodec must give the same values.
::testing::AssertionResult FrameMatchesKvcodec(Backend& backend, const kvcodec::CacheShape& shape,
                                               const std::string& config, uint64_t seed);

// DecodeFrameOn and kvcodec::DecodeFrame agree: both fail with the same status, or both succeed
// with the same values. *rejected counts failures.
::testing::AssertionResult DecodeMatchesKvcodec(Backend& backend, std::span<const uint8_t> frame,
                                                int* rejected = nullptr,
                                                std::string_view fingerprint = {});
// The same, and kvcodec must reject the frame.
::testing::AssertionResult DecodeFailsAsKvcodec(Backend& backend, std::span<const uint8_t> frame,
                                                std::string_view fingerprint);

// The frame with byte i flipped if it lies in a chunk body, that chunk's checksum and the
// trailer's recomputed (so the defect reaches the stream parsers); empty otherwise.
std::vector<uint8_t> FlipInsideChunk(std::span<const uint8_t> frame, size_t i);
// The same for several bytes (all must lie in chunk bodies).
std::vector<uint8_t> FlipInsideChunks(std::span<const uint8_t> frame, std::span<const size_t> bytes);

// EncodeFrameOn fails exactly as kvcodec::EncodeFrame does.
::testing::AssertionResult EncodeFailsAsKvcodec(Backend& backend, const kvcodec::SyntheticCache& cache,
                                                const kvcodec::CodecConfig& config,
                                                const kvcodec::Selection& selection);

}  // namespace kvwire::gpu::testing
