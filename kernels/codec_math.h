// Scalar arithmetic of the codec, compiled into both the CUDA kernels and the host reference.
// Every function here computes bit for bit what kvcodec computes (kvcodec/quant.cc,
// kvcodec/dtype.cc); reference_test.cc checks that through whole sections.
//
// Why the explicit arithmetic: kvcodec's x86-64 build evaluates offset + code * scale as a
// multiply then an add, each rounded. nvcc would contract that into one FMA (a different
// result), so on the device every operation goes through the _rn intrinsics, which are never
// contracted. Division is IEEE round-to-nearest on both sides (no fast math anywhere).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/layout.h"

namespace kvwire::gpu {

KVW_HD uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
KVW_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

KVW_HD float Add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
KVW_HD float Sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
KVW_HD float Mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
KVW_HD float Div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

KVW_HD int Popcount(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

// std::min / std::max exactly as the C++ library defines them (ties and NaN keep `a`).
KVW_HD float StdMin(float a, float b) { return b < a ? b : a; }
KVW_HD float StdMax(float a, float b) { return a < b ? b : a; }

// ---- element types ----------------------------------------------------------------------------

// Half -> float for every pattern (kvcodec::ToFloat's branch-free form).
KVW_HD float HalfToFloat(uint16_t h) {
  const uint32_t x = h;
  const uint32_t sign = (x & 0x8000u) << 16;
  const uint32_t em = (x & 0x7fffu) << 13;
  const uint32_t exp = x & 0x7c00u;
  uint32_t bits = em + ((127u - 15u) << 23);
  if (exp == 0) bits = FloatBits(Mul(static_cast<float>(static_cast<int32_t>(x & 0x3ffu)), 0x1p-24f));
  if (exp == 0x7c00u) bits = em | 0x7f800000u;
  return BitsFloat(bits | sign);
}

// Float -> half, round to nearest even (kvcodec::FromFloat's branch-free form).
KVW_HD uint16_t FloatToHalf(float f) {
  const uint32_t bits = FloatBits(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  uint32_t r = abs - 0x38000000u;
  r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  uint32_t h = r;
  if (abs < 0x38800000u) h = FloatBits(Add(BitsFloat(abs), 0.5f)) - 0x3f000000u;
  if (abs >= 0x477ff000u) h = 0x7c00u;
  if (abs > 0x7f800000u) h = 0x7e00u;
  return static_cast<uint16_t>(h | sign);
}

KVW_HD float BF16ToFloat(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

// Float -> bfloat16, round to nearest even; NaN stays NaN.
KVW_HD uint16_t FloatToBF16(float f) {
  const uint32_t bits = FloatBits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// Element i of a buffer of `dtype`, as float.
KVW_HD float LoadElement(const void* base, int dtype, uint64_t i) {
  if (dtype == kF32) return static_cast<const float*>(base)[i];
  const uint16_t h = static_cast<const uint16_t*>(base)[i];
  return dtype == kF16 ? HalfToFloat(h) : BF16ToFloat(h);
}
KVW_HD void StoreElement(void* base, int dtype, uint64_t i, float v) {
  if (dtype == kF32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<uint16_t*>(base)[i] = dtype == kF16 ? FloatToHalf(v) : FloatToBF16(v);
  }
}

// ---- quantizer parameters (kvcodec/quant.cc) ---------------------------------------------------

KVW_HD bool HalfIsFinite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// Half bits of f rounded towards -inf (up = false) or +inf (up = true); quant.cc's HalfDirected.
KVW_HD uint16_t HalfDirected(float f, bool up) {
  const uint32_t bits = FloatBits(f);
  const uint32_t sign = bits >> 31;
  const uint32_t abs = bits & 0x7fffffffu;
  const bool away = up != (sign != 0);
  uint32_t mag;
  bool exact;
  if (abs < 0x38800000u) {
    const float m = Mul(BitsFloat(abs), 0x1p24f);
    mag = static_cast<uint32_t>(m);
    exact = static_cast<float>(mag) == m;
  } else {
    const uint32_t capped = abs < 0x47800000u ? abs : 0x47800000u;
    const uint32_t r = capped - 0x38000000u;
    mag = r >> 13;
    exact = (r & 0x1fffu) == 0 && abs <= 0x47800000u;
  }
  mag += (away && !exact) ? 1u : 0u;
  const uint32_t cap = away ? 0x7c00u : 0x7bffu;
  mag = mag < cap ? mag : cap;
  return static_cast<uint16_t>(sign << 15 | mag);
}

// HalfToFloat for finite halves (quant.cc's FiniteHalfToFloat).
KVW_HD float FiniteHalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const float mag = (h & 0x7c00u) == 0
                        ? Mul(static_cast<float>(h & 0x3ffu), 0x1p-24f)
                        : BitsFloat((static_cast<uint32_t>(h & 0x7fffu) << 13) + 0x38000000u);
  return BitsFloat(FloatBits(mag) | sign);
}

// One quantizer as stored and as used.
struct Quantizer {
  ParamPair bits;
  float scale;
  float offset;
  float inv_scale;  // 0 when scale is 0: every code is then 0
};

KVW_HD Quantizer MakeQuantizer(ParamPair p) {
  Quantizer q;
  q.bits = p;
  q.scale = FiniteHalfToFloat(p.scale);
  q.offset = FiniteHalfToFloat(p.offset);
  q.inv_scale = q.scale > 0 ? Div(1.0f, q.scale) : 0.0f;
  return q;
}

// Parameters for values in [lo, hi] with `levels` steps (quant.cc's ChooseParams). False if
// a parameter is not a finite half.
KVW_HD bool ChooseQuantizer(float lo, float hi, float levels, Quantizer* q) {
  const uint16_t offset = HalfDirected(lo, false);
  if (!HalfIsFinite(offset)) return false;
  const uint16_t scale = HalfDirected(Div(Sub(hi, FiniteHalfToFloat(offset)), levels), true);
  if (!HalfIsFinite(scale)) return false;
  *q = MakeQuantizer(ParamPair{scale, offset});
  return true;
}

// code = clamp(round((x - offset) / scale), 0, L) (quant.cc's QuantizeSpan).
KVW_HD uint32_t QuantizeValue(float x, const Quantizer& q, float levels) {
  float v = Mul(Sub(x, q.offset), q.inv_scale);
  v = StdMax(v, 0.0f);
  v = StdMin(v, levels);
  return static_cast<uint32_t>(static_cast<int32_t>(Add(v, 0.5f)));
}

KVW_HD float ClampToHalfRange(float v) { return StdMin(StdMax(v, -kHalfMax), kHalfMax); }

// offset + code * scale, clamped to the half range (quant.cc's DequantSpan).
KVW_HD float DequantizeValue(uint32_t code, float offset, float scale) {
  return ClampToHalfRange(Add(offset, Mul(static_cast<float>(code), scale)));
}
// pred + (offset + code * scale), clamped (quant.cc's DequantSpanAdd).
KVW_HD float DequantizeAdd(float pred, uint32_t code, float offset, float scale) {
  return ClampToHalfRange(Add(pred, Add(offset, Mul(static_cast<float>(code), scale))));
}

// ---- min / max with kvcodec's choice between +0 and -0 -----------------------------------------
//
// The minimum of a group is unique except for the sign of a zero, and that sign reaches the
// stream: HalfDirected(-0) is the half -0. kvcodec's MinMax keeps the first of equal values in
// a fixed visiting order (on x86-64: x[0], then the SSE lanes in pairs, then the tail), so
// among the elements that equal the minimum the one with the smallest key below wins, and
// any reduction order that compares (value, key) pairs reproduces it.

// Key of element i of a per-token group of n (quant.cc's MinMax, SSE2 path: eight lanes
// x[l], x[l + 8], ... for l < 8 over the first n & ~7 elements; lane 4 + j beats lane j on a
// tie, pair j beats pair j + 1; x[0] is the starting value; then the tail in order).
KVW_HD int32_t TokenGroupKey(int32_t i, int32_t n) {
  if (n < 8) return i;
  if (i == 0) return 0;
  const int32_t full = n & ~7, per_lane = full / 8;
  if (i >= full) return 1 + 8 * per_lane + (i - full);
  const int32_t lane = i & 7, pair = lane & 3, rank = lane < 4 ? 1 : 0;
  return 1 + (2 * pair + rank) * per_lane + (i >> 3);
}

// Running min and max of (value, key) pairs; `bad` records a NaN.
struct MinMax {
  float lo;
  int32_t lo_key;
  float hi;
  int32_t hi_key;
  bool bad;
};

KVW_HD MinMax EmptyMinMax() {
  return MinMax{BitsFloat(0x7f800000u), INT32_MAX, BitsFloat(0xff800000u), INT32_MAX, false};
}

KVW_HD void PushMinMax(MinMax& m, float v, int32_t key) {
  if (!(v == v)) {
    m.bad = true;
    return;
  }
  if (v < m.lo || (v == m.lo && key < m.lo_key)) {
    m.lo = v;
    m.lo_key = key;
  }
  if (v > m.hi || (v == m.hi && key < m.hi_key)) {
    m.hi = v;
    m.hi_key = key;
  }
}

KVW_HD MinMax MergeMinMax(const MinMax& a, const MinMax& b) {
  MinMax m = a;
  m.bad = a.bad || b.bad;
  if (b.lo < m.lo || (b.lo == m.lo && b.lo_key < m.lo_key)) {
    m.lo = b.lo;
    m.lo_key = b.lo_key;
  }
  if (b.hi > m.hi || (b.hi == m.hi && b.hi_key < m.hi_key)) {
    m.hi = b.hi;
    m.hi_key = b.hi_key;
  }
  return m;
}

// The quantizer of a token group whose values span `m`: false (q untouched) for a group with
// a NaN, a value beyond the half range, or parameters that are not finite halves, which
// kvcodec's Quantize rejects.
KVW_HD bool ChooseGroupQuantizer(const MinMax& m, float levels, Quantizer* q) {
  return !m.bad && m.lo >= -kHalfMax && m.hi <= kHalfMax && ChooseQuantizer(m.lo, m.hi, levels, q);
}

// min / max of two values when the caller does not care which of two equal values (+0 / -0)
// comes back, nor about NaN (it checks for NaN separately).
KVW_HD float FastMin(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fminf(a, b);
#else
  return StdMin(a, b);
#endif
}
KVW_HD float FastMax(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fmaxf(a, b);
#else
  return StdMax(a, b);
#endif
}

KVW_HD bool InHalfRange(float v) { return (v < 0 ? -v : v) <= kHalfMax; }  // false for NaN

// ---- code streams ------------------------------------------------------------------------------

// Code i of a packed stream.
KVW_HD uint32_t PackedCodeAt(const uint8_t* packed, uint64_t i, int bits) {
  const uint64_t bit = i * static_cast<uint64_t>(bits);
  const uint64_t byte = bit >> 3;
  const uint32_t shift = static_cast<uint32_t>(bit & 7);
  uint32_t v = packed[byte];
  if (shift + bits > 8) v |= static_cast<uint32_t>(packed[byte + 1]) << 8;
  return (v >> shift) & ((1u << bits) - 1);
}

// Code (row, c) of a stream in the rANS symbol layout.
KVW_HD uint32_t SymbolCodeAt(const uint8_t* symbols, uint64_t row, int c, int head_dim, int bits) {
  const int k = CodesPerSymbol(bits);
  const uint8_t s = symbols[row * static_cast<uint64_t>(SymbolRowLen(head_dim, bits)) + c / k];
  return (s >> ((c % k) * bits)) & ((1u << bits) - 1);
}

KVW_HD uint32_t CodeAt(const uint8_t* codes, CodeLayout layout, uint64_t row, int c, int head_dim,
                       int bits) {
  return layout == CodeLayout::kPacked
             ? PackedCodeAt(codes, row * static_cast<uint64_t>(head_dim) + c, bits)
             : SymbolCodeAt(codes, row, c, head_dim, bits);
}

// Word w (bits [32 w, 32 w + 32)) of the packed stream of codes code_at(i), i < n.
template <typename CodeFn>
KVW_HD uint32_t PackedWord(uint64_t w, int bits, uint64_t n, CodeFn code_at) {
  const uint64_t bit0 = 32 * w;
  const uint64_t first = bit0 / bits;
  uint64_t end = (bit0 + 32 + bits - 1) / bits;
  end = end < n ? end : n;
  uint64_t acc = 0;
  for (uint64_t i = first; i < end; ++i) {
    const int64_t shift = static_cast<int64_t>(i * bits) - static_cast<int64_t>(bit0);
    const uint64_t code = code_at(i);
    acc |= shift >= 0 ? code << shift : code >> -shift;
  }
  return static_cast<uint32_t>(acc);
}

}  // namespace kvwire::gpu
