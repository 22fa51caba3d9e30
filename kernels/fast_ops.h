// Fast paths of the two hottest kernels, per-token quantization without delta and
// dequantization without delta, for the common shapes: head_dim = 16 * 2^k (<= 512), codes of
// 8, 4 or 2 bits, per-token groups that are multiples of 16 channels. Every lane then owns 16
// consecutive channels of a row, its codes fill whole 32-bit words (no neighbour shares them),
// and a row is d / 16 lanes: values stay in registers, loads and stores are 16-byte vectors,
// and a group's min/max is a butterfly over at most 32 lanes.
//
// The work is split into per-lane phases so that the host reference runs the same functions
// (lanes in a loop) that the kernel runs (lanes in a warp).
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/codec_math.h"
#include "kernels/section_ops.h"

namespace kvwire::gpu {

inline constexpr int kFastElems = 16;  // channels per lane

// Whether rows of head_dim channels at `bits`, in per-token groups of token_group channels
// (per channel: pass head_dim), take the fast paths.
KVW_HD constexpr bool FastRowsEligible(int head_dim, int bits, int token_group) {
  const bool pow2_lanes = head_dim % kFastElems == 0 && head_dim / kFastElems <= 32 &&
                          ((head_dim / kFastElems) & (head_dim / kFastElems - 1)) == 0;
  return pow2_lanes && (bits == 8 || bits == 4 || bits == 2) && token_group % kFastElems == 0 &&
         head_dim % token_group == 0;
}
static_assert(FastRowsEligible(128, 4, 128) && FastRowsEligible(128, 2, 32) &&
                  FastRowsEligible(64, 8, 16) && !FastRowsEligible(128, 3, 128) &&
                  !FastRowsEligible(96, 4, 96) && !FastRowsEligible(128, 4, 8),
              "fast rows: 16-channel lanes, whole words, power-of-two lanes per row");

// 16 consecutive elements of `src` from element `at` (16-byte aligned on the device: row
// offsets are multiples of head_dim).
KVW_HD void LoadLane(const void* src, int dtype, uint64_t at, float* x) {
#if defined(__CUDA_ARCH__)
  if (dtype == kF32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(src) + at);
    for (int v = 0; v < 4; ++v) {
      const float4 f = p[v];
      x[4 * v] = f.x;
      x[4 * v + 1] = f.y;
      x[4 * v + 2] = f.z;
      x[4 * v + 3] = f.w;
    }
    return;
  }
  const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(src) + at);
  for (int v = 0; v < 2; ++v) {
    const uint4 q = p[v];
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
    for (int i = 0; i < 4; ++i) {
      const uint16_t lo = static_cast<uint16_t>(w[i]), hi = static_cast<uint16_t>(w[i] >> 16);
      x[8 * v + 2 * i] = dtype == kF16 ? HalfToFloat(lo) : BF16ToFloat(lo);
      x[8 * v + 2 * i + 1] = dtype == kF16 ? HalfToFloat(hi) : BF16ToFloat(hi);
    }
  }
#else
  for (int i = 0; i < kFastElems; ++i) x[i] = LoadElement(src, dtype, at + i);
#endif
}

// Stores 16 values at element `at` of `dst` in `dtype` (aligned as LoadLane).
KVW_HD void StoreLane(void* dst, int dtype, uint64_t at, const float* y) {
#if defined(__CUDA_ARCH__)
  if (dtype == kF32) {
    float4* p = reinterpret_cast<float4*>(static_cast<float*>(dst) + at);
    for (int v = 0; v < 4; ++v) p[v] = make_float4(y[4 * v], y[4 * v + 1], y[4 * v + 2], y[4 * v + 3]);
    return;
  }
  uint4* p = reinterpret_cast<uint4*>(static_cast<uint16_t*>(dst) + at);
  for (int v = 0; v < 2; ++v) {
    uint32_t w[4];
    for (int i = 0; i < 4; ++i) {
      const float a = y[8 * v + 2 * i], b = y[8 * v + 2 * i + 1];
      const uint32_t lo = dtype == kF16 ? FloatToHalf(a) : FloatToBF16(a);
      const uint32_t hi = dtype == kF16 ? FloatToHalf(b) : FloatToBF16(b);
      w[i] = lo | hi << 16;
    }
    p[v] = make_uint4(w[0], w[1], w[2], w[3]);
  }
#else
  for (int i = 0; i < kFastElems; ++i) StoreElement(dst, dtype, at + i, y[i]);
#endif
}

// ---- quantization: phase A (per lane), group reduction (across lanes), phase B (per lane) ----

// Row and first channel of lane `lane` (global lane index over the section's rows).
KVW_HD void FastLanePosition(int head_dim, uint64_t lane, int64_t* row, int* c0) {
  const uint64_t per_row = static_cast<uint64_t>(head_dim / kFastElems);
  *row = static_cast<int64_t>(lane / per_row);
  *c0 = static_cast<int>(lane % per_row) * kFastElems;
}

// Phase A: loads the lane's values and their min/max. Keys (kvcodec's tie order) matter only
// when an extreme is a zero, whose sign reaches the stream: equal nonzero values have equal
// bits. So the lane takes plain min/max and looks for the first zero in key order only when an
// extreme is zero; its other keys are left at INT32_MAX, which gives the same merged result.
// An out-of-range value fails the whole section, so its group's quantizer does not matter.
KVW_HD MinMax FastQuantizeLoad(const TokenRowsArgs& a, int64_t row, int c0, float* x) {
  LoadLane(a.src, a.src_dtype, static_cast<uint64_t>(a.src_row[row]) + c0, x);
  bool bad = false;
  float lo = x[0], hi = x[0];
  for (int i = 0; i < kFastElems; ++i) {
    bad |= !InHalfRange(x[i]);
    lo = FastMin(lo, x[i]);
    hi = FastMax(hi, x[i]);
  }
  if (bad) RaiseError(a.error, kErrValueRange);
  MinMax m{lo, INT32_MAX, hi, INT32_MAX, bad};
  if (lo == 0.0f || hi == 0.0f) {
    const int tg = a.g.token_group;
    for (int i = 0; i < kFastElems; ++i) {
      if (x[i] != 0.0f) continue;
      const int32_t key = TokenGroupKey(c0 % tg + i, tg);
      if (lo == 0.0f && key < m.lo_key) m.lo = x[i], m.lo_key = key;
      if (hi == 0.0f && key < m.hi_key) m.hi = x[i], m.hi_key = key;
    }
  }
  return m;
}

// Lanes that share a quantizer (a power of two dividing the lanes of a row).
KVW_HD int FastGroupLanes(int token_group) { return token_group / kFastElems; }

// Phase B: with the group's min/max, the quantizer (the group's first lane stores it) and the
// lane's packed codes. kBits == g.bits (a template so the lane's words stay in registers).
template <int kBits>
KVW_HD void FastQuantizeStore(const TokenRowsArgs& a, int64_t row, int c0, const float* x, const MinMax& m) {
  const SectionGeom& g = a.g;
  constexpr int bits = kBits;
  const int d = g.head_dim, tg = g.token_group;
  const float levels = Levels(bits);
  Quantizer q{};
  const bool ok = ChooseGroupQuantizer(m, levels, &q);
  if (c0 % tg == 0) {
    if (!ok) RaiseError(a.error, kErrValueRange);
    a.main_params[row * (d / tg) + c0 / tg] = q.bits;
  }
  constexpr int n = kFastElems * bits / 32;
  uint32_t words[n] = {};
  for (int i = 0; i < kFastElems; ++i) {
    const uint32_t code = QuantizeValue(x[i], q, levels);
    words[(i * bits) / 32] |= code << ((i * bits) % 32);
  }
  // The row's codes start at a word boundary (d * bits is a multiple of 32).
  uint32_t* out = reinterpret_cast<uint32_t*>(a.main_codes) + (static_cast<uint64_t>(row) * d + c0) * bits / 32;
#if defined(__CUDA_ARCH__)
  if constexpr (n == 4) {
    *reinterpret_cast<uint4*>(out) = make_uint4(words[0], words[1], words[2], words[3]);
  } else if constexpr (n == 2) {
    *reinterpret_cast<uint2*>(out) = make_uint2(words[0], words[1]);
  } else {
    out[0] = words[0];
  }
#else
  for (int i = 0; i < n; ++i) out[i] = words[i];
#endif
}

// Calls f(std::integral_constant<int, bits>) for the widths the fast paths take (host code:
// the launchers and the reference).
template <typename F>
void WithFastBits(int bits, F&& f) {
  if (bits == 8) {
    f(std::integral_constant<int, 8>{});
  } else if (bits == 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 2>{});
  }
}

// ---- dequantization: one lane, no collectives --------------------------------------------------

// Work item `lane`: channels [c0, c0 + 16) of a main row (no delta); kBits == g.bits.
template <int kBits>
KVW_HD void FastDequantItem(const DequantArgs& a, uint64_t lane) {
  const SectionGeom& g = a.g;
  constexpr int bits = kBits;
  const int d = g.head_dim;
  int64_t row;
  int c0;
  FastLanePosition(d, lane, &row, &c0);
  // kPacked and kSymbols are the same bytes for these widths (layout.h).
  const uint32_t* in = reinterpret_cast<const uint32_t*>(a.main_codes) + (static_cast<uint64_t>(row) * d + c0) * bits / 32;
  constexpr int n = kFastElems * bits / 32;
  uint32_t words[n] = {};
#if defined(__CUDA_ARCH__)
  if constexpr (n == 4) {
    const uint4 v = *reinterpret_cast<const uint4*>(in);
    words[0] = v.x, words[1] = v.y, words[2] = v.z, words[3] = v.w;
  } else if constexpr (n == 2) {
    const uint2 v = *reinterpret_cast<const uint2*>(in);
    words[0] = v.x, words[1] = v.y;
  } else {
    words[0] = in[0];
  }
#else
  for (int i = 0; i < n; ++i) words[i] = in[i];
#endif
  constexpr uint32_t mask = (1u << bits) - 1;
  float y[kFastElems];
  if (g.axis == kPerToken) {
    const ParamPair p = a.main_params[row * (d / g.token_group) + c0 / g.token_group];
    const float offset = FiniteHalfToFloat(p.offset), scale = FiniteHalfToFloat(p.scale);
    for (int i = 0; i < kFastElems; ++i) {
      y[i] = DequantizeValue((words[(i * bits) / 32] >> ((i * bits) % 32)) & mask, offset, scale);
    }
  } else {
    const int h = FindHead(g.head_main, g.num_heads, row);
    const ParamPair* p = a.main_params + (g.head_qgroups[h] + (row - g.head_main[h]) /
                                          RowGroupSize(g, g.head_main[h + 1] - g.head_main[h])) * d + c0;
    for (int i = 0; i < kFastElems; ++i) {
      y[i] = DequantizeValue((words[(i * bits) / 32] >> ((i * bits) % 32)) & mask,
                             FiniteHalfToFloat(p[i].offset), FiniteHalfToFloat(p[i].scale));
    }
  }
  StoreLane(a.dst, a.dst_dtype, static_cast<uint64_t>(a.dst_row[row]) + c0, y);
}

}  // namespace kvwire::gpu
