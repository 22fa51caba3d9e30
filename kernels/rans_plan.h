// Host side of GPU rANS decoding: parses and checks the header, tables and final states of
// kvcodec rANS streams (kvcodec/rans.cc, version 2) into a batch the kernel decodes, and
// decodes a batch on the host with the kernel's own step functions (the reference).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/layout.h"
#include "kernels/rans_ops.h"

namespace kvwire::gpu {

struct RansBatch {
  std::vector<RansStreamDesc> streams;
  std::vector<RansTable> tables;
  std::vector<uint8_t> data;  // every stream's 16-bit words, back to back
  uint64_t out_bytes = 0;     // the output buffer must hold this many bytes
};

// Checks `stream` as kvcodec::RansDecode does before it decodes (same errors) and appends it
// to `batch`: its num_symbols symbols will be written at byte out_offset of the output.
absl::Status AddRansStream(std::span<const uint8_t> stream, uint64_t num_symbols, int row_len,
                           int alphabet_bits, uint64_t out_offset, RansBatch* batch);

// The kernel's work on the host: every stream of `batch` into `out` (out_bytes long). A stream
// with 8 lanes runs the lane-parallel step (RansLaneDecode / RansLaneRefill, lanes emulated in
// order), others the serial one, exactly as the CUDA kernel chooses.
absl::Status RansDecodeOnHost(const RansBatch& batch, std::span<uint8_t> out);

// The same on arguments pointing into host memory (the reference backend's kernel).
void RansDecodeItemsOnHost(const RansDecodeArgs& a);

// The status of stream i as kvcodec reports the same defect.
absl::Status RansStatusToError(uint64_t status, size_t stream_index);

}  // namespace kvwire::gpu
