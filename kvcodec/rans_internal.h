// Internal to kvcodec's rANS coder (rans.h): the constants of the stream format (documented at
// the top of rans.cc) and what the encoder (rans_encode.cc), the decoder (rans.cc) and the
// table code (rans_tables.cc) share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kvcodec/rans_wide.h"

namespace kvcodec::rans_internal {

constexpr int kProbBits = 12;
constexpr uint32_t kProbScale = 1u << kProbBits;  // M
constexpr uint32_t kStateLow = 1u << 16;          // L: states live in [L, 2^32)
constexpr int kMaxContextsLog2 = 6;               // at most 64 contexts
constexpr int kMaxLanesLog2 = 5;                  // at most 32 lanes
constexpr int kWideLanes = rans_wide::kLanes;     // 32
constexpr uint8_t kTag = 0xB3;
// Rows per block of the blocked column order (part of the format; see the top of rans.cc).
constexpr size_t kBlockRows = 256;
// Streams shorter than this use one lane: 7 extra final states (28 bytes) would be a visible
// overhead, and such streams decode in microseconds anyway.
constexpr size_t kMultiLaneMinSymbols = 4096;
// Streams from this length on use 32 lanes (vectorised decoding, see rans_wide.h); their 128
// bytes of final states are then under 0.1% of the stream for quantized KV codes.
constexpr size_t kWideLaneMinSymbols = size_t{1} << 16;
// The encoder considers only context splits whose contexts average at least this many symbols
// (and at least half the alphabet size).
constexpr size_t kMinSymbolsPerContext = 32;

inline uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void Store16(uint8_t* p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  // One 16-bit store: GCC emits the byte-wise form below as two stores.
  const uint16_t w = static_cast<uint16_t>(v);
  std::memcpy(p, &w, 2);
#else
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
#endif
}
inline uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// Branch-free selects for the renormalisation. Whether a state renormalises is data-dependent
// and often near 50/50, so a branch mispredicts constantly; GCC turns the plain conditional
// expression into a jump, so on x86-64 the two conditional moves are spelled out. Elsewhere,
// masks.
template <typename Ptr>
inline void MaskSelect(bool cond, uint32_t new_x, Ptr new_p, uint32_t& x, Ptr& p) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  const uintptr_t pmask = uintptr_t{0} - static_cast<uintptr_t>(cond);
  x ^= (x ^ new_x) & mask;
  p = reinterpret_cast<Ptr>(
      reinterpret_cast<uintptr_t>(p) ^
      ((reinterpret_cast<uintptr_t>(p) ^ reinterpret_cast<uintptr_t>(new_p)) & pmask));
}

// if (x > limit) { x = new_x; p = new_p; }
inline void SelectIfAbove(uint32_t limit, uint32_t new_x, uint8_t* new_p, uint32_t& x,
                          uint8_t*& p) {
#if defined(__x86_64__) && defined(__GNUC__)
  asm("cmpl %[lim], %[x]\n\t"
      "cmoval %[nx], %[x]\n\t"
      "cmovaq %[np], %[p]"
      : [x] "+r"(x), [p] "+r"(p)
      : [lim] "rm"(limit), [nx] "r"(new_x), [np] "r"(new_p)
      : "cc");
#else
  MaskSelect(x > limit, new_x, new_p, x, p);
#endif
}

// if (x < kStateLow) { x = new_x; p = new_p; }
inline void SelectIfLow(uint32_t new_x, const uint8_t* new_p, uint32_t& x, const uint8_t*& p) {
#if defined(__x86_64__) && defined(__GNUC__)
  asm("cmpl %[low], %[x]\n\t"
      "cmovbl %[nx], %[x]\n\t"
      "cmovbq %[np], %[p]"
      : [x] "+r"(x), [p] "+r"(p)
      : [low] "i"(kStateLow), [nx] "r"(new_x), [np] "r"(new_p)
      : "cc");
#else
  MaskSelect(x < kStateLow, new_x, new_p, x, p);
#endif
}

// floor(log2(min(row_len, 64))): the finest context split the encoder considers.
inline int MaxContextsLog2(int row_len) {
  int lg = 0;
  while (lg < kMaxContextsLog2 && (2 << lg) <= row_len) ++lg;
  return lg;
}

inline uint32_t ContextOfColumn(uint64_t col, int row_len, int num_contexts) {
  return static_cast<uint32_t>((col * static_cast<uint64_t>(num_contexts)) /
                               static_cast<uint64_t>(row_len));
}

// Rows coded in blocked column order: with one context plain order already keeps one table
// hot, so it stays plain; otherwise all full rows rounded down to a multiple of 32.
inline size_t BlockedRows(size_t n, size_t row_len, int num_contexts) {
  if (num_contexts <= 1 || row_len <= 1) return 0;
  return (n / row_len) & ~size_t{31};
}

// Varints: unsigned LEB128, canonical, at most 5 bytes, value < 2^32 (rans_tables.cc).
void PutVarint(std::vector<uint8_t>& out, uint32_t v);
int VarintSize(uint32_t v);
bool GetVarint(const uint8_t*& p, const uint8_t* end, uint32_t& v);
// Bitwise OR of all bytes.
uint8_t OrAllBytes(std::span<const uint8_t> bytes);
// c * log2(c), and the order-0 entropy in bits of a histogram with `total` symbols.
double CLog2C(uint64_t c);
double HistogramBits(const uint32_t* counts, int alphabet, uint64_t total);
// Estimated coded bytes of one context (entropy plus table), to rank context splits.
double EstimateContextBytes(const uint32_t* counts, int alphabet, uint64_t total);
// Frequencies >= 1 for present symbols, summing to kProbScale, minimising the coded size.
void NormalizeCounts(const uint32_t* counts, int alphabet, uint64_t total, uint16_t* freq);
// One table in the stream format, and its parser (bounds-checked; validates the sum).
void WriteTable(std::vector<uint8_t>& out, const uint16_t* freq, int alphabet);
absl::Status ReadTable(const uint8_t*& p, const uint8_t* end, int alphabet, int ctx,
                       uint16_t* freq);

}  // namespace kvcodec::rans_internal
