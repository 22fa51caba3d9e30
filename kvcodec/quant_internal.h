// Internal to kvcodec's quantizer (quant.h): what the general quantizer (quant.cc) and the fused
// bf16 row paths (quant_bf16.cc) share, so that both choose the same parameters bit for bit.
// The rounding rules are explained at the top of quant.cc.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kvcodec/dtype.h"

namespace kvcodec::quant_internal {

constexpr float kHalfMax = 65504.0f;

inline bool HalfIsFinite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// Float -> half rounded towards -infinity (up = false) or +infinity (up = true). Works on the
// magnitude: rounding a positive value up, or a negative one down, moves away from zero, the
// other two cases truncate. Input must not be NaN. Magnitudes that need more than 65504 become
// infinity when rounding away from zero and 65504 when truncating. No branches on the data
// beyond the subnormal split, since this runs once per quantization group.
inline uint16_t HalfDirected(float f, bool up) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t sign = bits >> 31;
  const uint32_t abs = bits & 0x7fffffffu;
  const bool away = up != (sign != 0);
  uint32_t mag;
  bool exact;
  if (abs < 0x38800000u) {  // below 2^-14: half subnormals, in units of 2^-24 (scaling is exact)
    const float m = std::bit_cast<float>(abs) * 0x1p24f;
    mag = static_cast<uint32_t>(m);
    exact = static_cast<float>(mag) == m;
  } else {
    const uint32_t r = std::min(abs, 0x47800000u) - 0x38000000u;  // rebias; cap at 2^16
    mag = r >> 13;
    exact = (r & 0x1fffu) == 0 && abs <= 0x47800000u;
  }
  mag += (away && !exact) ? 1u : 0u;  // a carry into the exponent is the right next value
  mag = std::min(mag, away ? 0x7c00u : 0x7bffu);
  return static_cast<uint16_t>(sign << 15 | mag);
}
inline uint16_t HalfRoundDown(float f) { return HalfDirected(f, false); }
inline uint16_t HalfRoundUp(float f) { return HalfDirected(f, true); }

// One group's quantizer as stored (half bits) and as used (floats).
struct Params {
  uint16_t scale_bits = 0;
  uint16_t offset_bits = 0;
  float scale = 0;
  float offset = 0;
  float inv_scale = 0;  // 0 when scale is 0: every code is then 0
};

inline void FinishParams(Params* p) {
  p->scale = FiniteHalfToFloat(p->scale_bits);
  p->offset = FiniteHalfToFloat(p->offset_bits);
  p->inv_scale = p->scale > 0 ? 1.0f / p->scale : 0.0f;
}

// Chooses half (scale, offset) for values in [lo, hi] with `levels` = L steps such that
// offset <= lo and offset + L * scale >= hi (see the file comment). Returns false if a parameter
// is not a finite half (only possible for delta residuals). Inline and short: callers batch many
// groups so that one group's serial chain (round offset, compute and round the scale, take the
// reciprocal) overlaps with the others'.
inline bool ChooseParams(float lo, float hi, float levels, Params* p) {
  const uint16_t offset = HalfRoundDown(lo);
  if (!HalfIsFinite(offset)) return false;
  const uint16_t scale = HalfRoundUp((hi - FiniteHalfToFloat(offset)) / levels);
  if (!HalfIsFinite(scale)) return false;
  p->scale_bits = scale;
  p->offset_bits = offset;
  FinishParams(p);
  return true;
}

// InvalidArgument for a value that is not finite or outside the half range.
absl::Status ValueRangeError();

// Min and max of n >= 1 values; returns false if any value is NaN (NaN is otherwise ignored by
// the comparisons). GCC does not vectorise a float min/max reduction without -ffast-math, so
// the x86 build uses SSE2 (part of the x86-64 baseline) explicitly; other targets get the plain
// loop.
bool MinMax(const float* x, size_t n, float* lo, float* hi);

// Quantizes `groups` consecutive groups of g values each (per-token groups: whole rows when
// g == d): codes[groups * g], params[2 * groups]. When recon is given, also writes the decoder's
// reconstruction (pred + dequantized value, or the dequantized value when pred is null). Returns
// false if a value or a parameter is outside the half range (the caller knows which it can be).
// Works in batches: all min/max first, then all parameters, then all codes, which keeps the
// per-group scalar work off the critical path.
bool QuantizeTokenGroups(const float* x, size_t groups, int g, float levels, uint8_t* codes,
                         uint16_t* params, const float* pred, float* recon);

}  // namespace kvcodec::quant_internal
