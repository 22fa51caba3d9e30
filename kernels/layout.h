// Byte layouts of the codec's streams, shared by the CUDA kernels and host code (ggml style:
// plain structs and constants, sizes pinned by static_asserts). docs/FORMAT.md and
// kvcodec/quant.h are the contract; this header restates the parts the kernels touch, and
// layout_test.cc checks every restated constant against kvcodec.
//
// No absl, no kvcodec includes: nvcc compiles this into device code.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define KVW_HD __host__ __device__ __forceinline__
#else
#define KVW_HD inline
#endif

namespace kvwire::gpu {

// Cache element types, numbered as kvcodec::DType (and the frame header's dtype byte).
enum DTypeCode : int { kF32 = 0, kF16 = 1, kBF16 = 2 };
KVW_HD constexpr int DTypeBytes(int dtype) { return dtype == kF32 ? 4 : 2; }

// Quantization axis and delta modes, numbered as kvcodec::QuantAxis / kvcodec::DeltaMode.
enum AxisCode : int { kPerToken = 0, kPerChannel = 1 };
enum DeltaCode : int { kDeltaNone = 0, kDeltaSeq = 1, kDeltaGroupedSeq = 2, kDeltaAnchor = 3 };

// How a code stream sits in memory.
//   kPacked:  the stored form: every code of the stream, row after row, LSB first at `bits`
//             bits each, rows not padded (a row may start mid-byte).
//   kSymbols: the rANS symbol form (FORMAT.md, Stream): k = CodesPerSymbol(bits) codes of a
//             row per byte, code j at bit j * bits, every row padded to SymbolRowLen bytes.
// For bits 8, and for bits 4 and 2 with head_dim divisible by 4, the two are the same bytes.
enum class CodeLayout : uint8_t { kPacked = 0, kSymbols = 1 };

// One quantizer: value = offset + code * scale, both IEEE half bit patterns, scale first
// (the order of QuantizedSection::main_params).
struct ParamPair {
  uint16_t scale;
  uint16_t offset;
};
static_assert(sizeof(ParamPair) == 4, "a param pair is two halves on the wire");

// 32 codes of kBits bits packed LSB first fill exactly kBits 32-bit words: the unit the
// packing kernels write. Word w of a packed stream holds bits [32 w, 32 w + 32).
template <int kBits>
struct PackedCodes32 {
  uint32_t words[kBits];
};
static_assert(sizeof(PackedCodes32<8>) == 32, "32 INT8 codes are 32 bytes");
static_assert(sizeof(PackedCodes32<4>) == 16, "32 INT4 codes are 16 bytes");
static_assert(sizeof(PackedCodes32<3>) == 12, "32 INT3 codes are 12 bytes");
static_assert(sizeof(PackedCodes32<2>) == 8, "32 INT2 codes are 8 bytes");

KVW_HD constexpr uint64_t PackedBytes(uint64_t codes, int bits) {
  return (codes * static_cast<uint64_t>(bits) + 7) / 8;
}
KVW_HD constexpr uint64_t PackedWords(uint64_t codes, int bits) {
  return (codes * static_cast<uint64_t>(bits) + 31) / 32;
}
KVW_HD constexpr int CodesPerSymbol(int bits) { return bits >= 8 ? 1 : bits >= 3 ? 2 : 4; }
KVW_HD constexpr int SymbolRowLen(int head_dim, int bits) {
  return (head_dim + CodesPerSymbol(bits) - 1) / CodesPerSymbol(bits);
}
// Alphabet bits of a code stream's rANS symbols.
KVW_HD constexpr int SymbolAlphabetBits(int bits) {
  return CodesPerSymbol(bits) * bits < 8 ? CodesPerSymbol(bits) * bits : 8;
}
KVW_HD constexpr float Levels(int bits) { return static_cast<float>((1 << bits) - 1); }

// Llama-3-8B's head_dim: one row of each code width, both layouts.
static_assert(PackedBytes(128, 8) == 128 && PackedBytes(128, 4) == 64 &&
                  PackedBytes(128, 3) == 48 && PackedBytes(128, 2) == 32,
              "a 128-channel row packs to 16 * bits bytes");
static_assert(SymbolRowLen(128, 8) == 128 && SymbolRowLen(128, 4) == 64 &&
                  SymbolRowLen(128, 3) == 64 && SymbolRowLen(128, 2) == 32,
              "a 128-channel row is 128 / k rANS symbols");
static_assert(SymbolAlphabetBits(4) == 8 && SymbolAlphabetBits(3) == 6 &&
                  SymbolAlphabetBits(2) == 8 && SymbolAlphabetBits(8) == 8,
              "k codes of a symbol use k * bits alphabet bits");
static_assert(PackedBytes(3, 4) == 2 && PackedBytes(5, 3) == 2 && PackedWords(33, 1) == 2,
              "partial bytes and words round up");

// Largest values the quantizer's half-float parameters can describe (kvcodec/quant.cc).
inline constexpr float kHalfMax = 65504.0f;

// ---- rANS (kvcodec/rans.cc, stream format version 3) ------------------------------------------
inline constexpr int kRansProbBits = 12;
inline constexpr uint32_t kRansProbScale = 1u << kRansProbBits;
inline constexpr uint32_t kRansStateLow = 1u << 16;
inline constexpr int kRansMaxLanes = 32;  // one warp
inline constexpr int kRansMaxContexts = 64;
inline constexpr uint64_t kRansBlockRows = 256;  // rows per block of the blocked column order
inline constexpr uint8_t kRansTag = 0xB3;

// One context's decoding tables as the kernels read them: per symbol freq | cum << 16, and
// slot -> symbol for the 4096 slots of the probability range.
struct RansTable {
  uint32_t freq_cum[256];
  uint8_t slot_symbol[kRansProbScale];
};
static_assert(sizeof(RansTable) == 256 * 4 + 4096, "a rANS context table is 5 KiB");

// One rANS stream, parsed and checked on the host (kernels/rans_plan.h), decoded on the device.
struct RansStreamDesc {
  uint64_t num_symbols;   // the caller's count (not stored in the stream)
  uint64_t blocked_rows;  // full rows coded in blocked column order (a multiple of 32)
  uint64_t words_offset;  // byte offset of the first 16-bit word in the stream buffer
  uint64_t words_count;   // 16-bit words the stream holds after its final states
  uint64_t tables_offset; // index of context 0's RansTable in the table buffer
  uint64_t out_offset;    // byte offset of symbol 0 in the output buffer
  uint32_t row_len;
  uint32_t num_contexts;
  uint32_t lanes;          // 1, 2, 4, 8 or 32
  uint32_t odd_byte;       // 1 if a lone byte follows the last whole word (always an error)
  uint32_t states[kRansMaxLanes];  // final encoder states = the decoder's initial states
};

}  // namespace kvwire::gpu
