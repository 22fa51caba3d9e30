// Host-side planning of one section for the kernels: which kernels run in which order, every
// stream's size, the per-head prefix sums the kernels index with, row maps and launch shapes.
// All of it runs (and is tested) on the CPU.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/section_ops.h"
#include "kvcodec/kvcodec.h"

namespace kvwire::gpu {

enum class EncodePath {
  kTokenRows,        // per token: one warp per row, or per delta chain (closed loop)
  kChannelParallel,  // per channel, no delta / open loop / anchor: reduce, finish, codes
  kChannelChain,     // per channel, closed-loop kSeq / kGroupedSeq: one thread per channel
};

struct SectionPlan {
  kvcodec::QuantSpec spec;     // as written (kvcodec canonical form)
  kvcodec::DeltaConfig delta;  // kvcodec::SectionDelta of the config's delta
  SectionGeom geom;            // scalars filled; head_* pointers left null (set per backend)
  // Prefix sums over heads, num_heads + 1 entries each (see SectionGeom).
  std::vector<int64_t> head_rows, head_main, head_ref, head_qgroups, head_chains;
  int64_t rows = 0, main_rows = 0, ref_rows = 0, qgroups = 0, chains = 0;

  // Streams (bytes as on the wire, and as allocated for the kernels).
  uint64_t main_code_bytes = 0;    // packed
  uint64_t main_code_alloc = 0;    // rounded up to whole 32-bit words
  uint64_t main_symbol_bytes = 0;  // the rANS symbol layout
  uint64_t main_param_pairs = 0;
  uint64_t ref_code_bytes = 0;
  uint64_t ref_param_pairs = 0;

  // Encoding.
  EncodePath encode_path = EncodePath::kTokenRows;
  int32_t token_chain_rows = 1;  // TokenRowsArgs::chain_rows
  int64_t token_items = 0;       // TokenRowsArgs::num_items
  uint64_t row_scratch_bytes = 0;
  int warps_per_block = 1;       // TokenRows warps per block (shared memory <= 48 KiB)
  int64_t chunk_rows = 0, max_chunks = 0;  // per-channel reduction
  uint64_t main_words = 0;       // 32-bit words of the packed main codes

  // Decoding: chains (kSeq, kGroupedSeq) or independent rows.
  bool decode_chains = false;

  // The fast paths of kernels/fast_ops.h (no delta, whole-word lanes).
  bool fast_quantize = false;
  bool fast_dequantize = false;
};

// Shared memory a TokenRows block may use.
inline constexpr uint64_t kMaxBlockScratch = 48 * 1024;
// Main rows per chunk of the per-channel reduction.
inline constexpr int64_t kChannelChunkRows = 256;

// Plans an integer-coded section (int8/int4/int3/int2) of `rows_per_head` kept rows per head.
// InvalidArgument for what kvcodec rejects; Unimplemented for a head_dim and group too large
// for a TokenRows warp's shared memory.
absl::StatusOr<SectionPlan> PlanSection(const kvcodec::QuantSpec& spec,
                                        const kvcodec::DeltaConfig& delta, int head_dim,
                                        std::span<const int> rows_per_head);

// Kept rows per head of a selection.
std::vector<int> RowsPerHead(const std::vector<std::vector<int32_t>>& kept);

// Element offsets of every section row (head after head, kept order):
//   CacheRowOffsets:   in a cache [heads, num_tokens, head_dim] (gather on encode, or a scatter
//                      that puts every row back at its token index)
//   PaddedRowOffsets:  in [heads, capacity, head_dim], row i of head h at h * capacity + i (the
//                      decode session's layout: heads padded to the longest); capacity must be
//                      >= every head's row count
absl::StatusOr<std::vector<int64_t>> CacheRowOffsets(
    const std::vector<std::vector<int32_t>>& kept, int num_tokens, int head_dim);
absl::StatusOr<std::vector<int64_t>> PaddedRowOffsets(
    const std::vector<std::vector<int32_t>>& kept, int capacity, int head_dim);

}  // namespace kvwire::gpu
