// Frames (docs/FORMAT.md) with the cache in backend memory (GPU memory for the CUDA backend):
// the sections' gather, quantization, dequantization, scatter and rANS decoding run on the
// backend; the frame's records, checksums, selections and zstd / rANS encoding run on the
// host. EncodeFrameOn makes exactly the bytes kvcodec::EncodeFrame makes; DecodeFrameOn gives
// exactly the values and the errors kvcodec::DecodeFrame gives. So a frame encoded on the GPU
// decodes on the CPU to the same values, and the reverse.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kvcodec/kvcodec.h"

namespace kvwire::gpu {

// One layer's keys and values in backend memory, [heads, tokens, head_dim] in the cache dtype.
struct DeviceLayerView {
  const void* keys = nullptr;
  const void* values = nullptr;
};

// kvcodec::EncodeFrame, with the cache in backend memory.
absl::StatusOr<std::vector<uint8_t>> EncodeFrameOn(Backend& backend, const kvcodec::CacheShape& shape,
                                                   const kvcodec::CodecConfig& config,
                                                   std::string_view model_fingerprint,
                                                   std::span<const int32_t> positions,
                                                   std::span<const DeviceLayerView> layers,
                                                   const kvcodec::Selection& selection);

struct DeviceDecodedLayer {
  int layer = 0;
  std::vector<std::vector<int32_t>> kept;
  int capacity = 0;  // rows per head in keys and values
  Buffer keys;       // [heads, capacity, head_dim] in the frame's dtype; rows not written are 0
  Buffer values;
};

struct GpuDecodeOptions {
  // false: the i-th kept row of head h at row h * capacity + i, capacity = the layer's longest
  // head (the decode session's layout: heads padded to the longest).
  // true: every row at its token index, capacity = num_tokens (a full cache with holes).
  bool at_token_index = false;
};

// kvcodec::DecodeFrame into backend memory; also checks every record before using it. The
// layers' buffers belong to `backend`, which must outlive them.
absl::StatusOr<std::vector<DeviceDecodedLayer>> DecodeFrameOn(
    Backend& backend, std::span<const uint8_t> frame, const kvcodec::DecodeLimits& limits = {},
    std::string_view expected_fingerprint = {}, kvcodec::FrameInfo* info = nullptr,
    const GpuDecodeOptions& options = {});

}  // namespace kvwire::gpu
