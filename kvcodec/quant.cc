// Integer quantization with optional delta coding along the token axis, and bit packing.
//
// Quantizer. Every group of values gets an asymmetric affine quantizer x ~= offset + code * scale
// with code in [0, L], L = 2^bits - 1, and (scale, offset) stored as IEEE half. The encoder picks
// the parameters from the group's min/max, rounds them to half *before* computing the codes (the
// decoder only sees the half values), and rounds them in the safe direction: the offset down and
// the scale up, so that [offset, offset + L * scale] still covers [min, max] after rounding. Every
// element's reconstruction error is then at most scale / 2 (plus float rounding): nothing is
// clamped by more than that. Codes are clamped to [0, L] regardless, which protects against the
// last float ulp.
//
// Input range. Parameters are half floats, so inputs must be finite with |x| <= 65504 (the
// largest half); anything else is InvalidArgument rather than a silently wrong reconstruction.
// With delta coding a residual (x[t] minus a prediction) can exceed the half range even though
// both rows are in range (e.g. 60000 followed by -60000); that is reported as InvalidArgument too.
//
// Delta coding. Within each head, reference rows (IsReferenceRow) are coded at 8 bits per token
// with one parameter pair for the whole row. Every other ("main") row t is coded as the residual
// x[t] - pred[t], where the prediction comes from row p(t): the previous row (sequential modes) or
// the group's anchor row (kAnchor). The decoder always adds the residual to its *reconstruction*
// of row p(t). Closed loop, the encoder predicts from that same reconstruction, so each row's
// error is just its own residual quantization error and does not accumulate. Open loop, the
// encoder predicts from the original row (what seed 003 measured) and errors add up along the
// chain.
//
// Per-channel closed loop needs a group's (scale, offset) before the group's residuals are final:
// a residual depends on the reconstruction of the previous row, which may be in the same group
// and not coded yet. The encoder takes each channel's range [lo, hi] over "base" residuals that
// use the final reconstruction for predecessors outside the group (reference rows, earlier
// groups) and the original value for predecessors inside it. No widening is needed: with
// offset <= lo and offset + L * scale >= hi, rounding to the nearest code and clamping gives an
// error of at most scale / 2 for any value in [lo - scale/2, hi + scale/2], because the end
// cells extend half a step past the grid. By induction along the group, an in-group predecessor
// has error <= scale / 2 (same channel, same quantizer), so the true closed-loop residual (base
// plus that error) lies in that interval and every row's error stays <= scale / 2. Widening the
// range instead would cost a whole step of the L available (a third of the resolution at INT2)
// for nothing. quant_test checks the bound element by element over long sequences.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // AVX2 row quantizer, chosen at run time
#endif

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcodec/dtype.h"
#include "kvcodec/quant.h"

namespace kvcodec {
namespace {

constexpr float kHalfMax = 65504.0f;

int CodingBits(ValueCoding coding) {
  switch (coding) {
    case ValueCoding::kInt8:
      return 8;
    case ValueCoding::kInt4:
      return 4;
    case ValueCoding::kInt3:
      return 3;
    case ValueCoding::kInt2:
      return 2;
    default:
      return 0;
  }
}

// ---- half helpers ------------------------------------------------------------------------------

bool HalfIsFinite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// Float -> half rounded towards -infinity (up = false) or +infinity (up = true). Works on the
// magnitude: rounding a positive value up, or a negative one down, moves away from zero, the
// other two cases truncate. Input must not be NaN. Magnitudes that need more than 65504 become
// infinity when rounding away from zero and 65504 when truncating. No branches on the data
// beyond the subnormal split, since this runs once per quantization group.
uint16_t HalfDirected(float f, bool up) {
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
uint16_t HalfRoundDown(float f) { return HalfDirected(f, false); }
uint16_t HalfRoundUp(float f) { return HalfDirected(f, true); }

// One group's quantizer as stored (half bits) and as used (floats).
struct Params {
  uint16_t scale_bits = 0;
  uint16_t offset_bits = 0;
  float scale = 0;
  float offset = 0;
  float inv_scale = 0;  // 0 when scale is 0: every code is then 0
};

void FinishParams(Params* p) {
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

absl::Status ValueRangeError() {
  return absl::InvalidArgumentError(
      "values must be finite with |x| <= 65504 (the half-float range) to be quantized");
}
absl::Status ResidualRangeError() {
  return absl::InvalidArgumentError(
      "delta residual or its quantizer offset exceeds the half-float range (|x| > 65504)");
}

// ---- kernels (plain loops the compiler vectorises) ---------------------------------------------

// True if every value is finite and |x| <= 65504. NaN fails the comparison, so it is caught too.
bool AllInHalfRange(const float* x, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>(!(std::fabs(x[i]) <= kHalfMax));
  return bad == 0;
}

// Min and max of n >= 1 values; returns false if any value is NaN (NaN is otherwise ignored by
// the comparisons). GCC does not vectorise a float min/max reduction without -ffast-math, so
// the x86 build uses SSE2 (part of the x86-64 baseline) explicitly; other targets get the plain
// loop.
bool MinMax(const float* x, size_t n, float* lo, float* hi) {
  float mn = x[0], mx = x[0];
  bool nan = false;
  size_t i = 0;
#if defined(__SSE2__)
  if (n >= 8) {
    __m128 mn0 = _mm_loadu_ps(x), mn1 = _mm_loadu_ps(x + 4);
    __m128 mx0 = mn0, mx1 = mn1;
    __m128 bad = _mm_or_ps(_mm_cmpunord_ps(mn0, mn0), _mm_cmpunord_ps(mn1, mn1));
    for (i = 8; i + 8 <= n; i += 8) {
      const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
      mn0 = _mm_min_ps(a, mn0);  // with a NaN in a, minps/maxps return the second operand
      mn1 = _mm_min_ps(b, mn1);
      mx0 = _mm_max_ps(a, mx0);
      mx1 = _mm_max_ps(b, mx1);
      bad = _mm_or_ps(bad, _mm_or_ps(_mm_cmpunord_ps(a, a), _mm_cmpunord_ps(b, b)));
    }
    alignas(16) float lmn[4], lmx[4];
    _mm_store_ps(lmn, _mm_min_ps(mn0, mn1));
    _mm_store_ps(lmx, _mm_max_ps(mx0, mx1));
    nan = _mm_movemask_ps(bad) != 0;
    for (int j = 0; j < 4; ++j) {
      mn = std::min(mn, lmn[j]);
      mx = std::max(mx, lmx[j]);
    }
  }
#endif
  for (; i < n; ++i) {
    nan |= std::isnan(x[i]);
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  nan |= std::isnan(mn) || std::isnan(mx);  // x[0] itself may have been NaN
  *lo = mn;
  *hi = mx;
  return !nan;
}

// code = clamp(round((x - offset) / scale), 0, L). Clamping in float first makes the conversion
// safe; + 0.5 and truncation rounds half up (values are >= 0 there).
void QuantizeSpan(const float* __restrict x, size_t n, float offset, float inv_scale, float levels,
                  uint8_t* __restrict codes) {
  for (size_t i = 0; i < n; ++i) {
    float v = (x[i] - offset) * inv_scale;
    v = std::max(v, 0.0f);
    v = std::min(v, levels);
    codes[i] = static_cast<uint8_t>(static_cast<int32_t>(v + 0.5f));
  }
}

// out = offset + code * scale, plus pred when given (delta rows). The encoder's closed loop uses
// these same functions, so its reconstruction is the decoder's bit for bit. Every input was in
// [-65504, 65504], so the reconstruction is clamped to that range: this can only bring it closer
// to the original, and it keeps a top code (offset + L * scale may overshoot 65504 by up to a
// step) from becoming infinity when the caller converts the section back to float16.
// The clamp is a separate pass over data still in L1: GCC will not turn a float min/max into
// minps/maxps without -ffast-math (NaN and signed-zero rules) and vectorises the compare-and-
// select form poorly, so the x86 build uses SSE2 directly.
void ClampToHalfRange(float* out, size_t n) {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128 lo = _mm_set1_ps(-kHalfMax), hi = _mm_set1_ps(kHalfMax);
  for (; i + 4 <= n; i += 4) {
    _mm_storeu_ps(out + i, _mm_min_ps(_mm_max_ps(_mm_loadu_ps(out + i), lo), hi));
  }
#endif
  for (; i < n; ++i) out[i] = std::min(std::max(out[i], -kHalfMax), kHalfMax);
}
void DequantSpan(const uint8_t* __restrict codes, size_t n, float offset, float scale,
                 float* __restrict out) {
  for (size_t i = 0; i < n; ++i) out[i] = offset + static_cast<float>(codes[i]) * scale;
  ClampToHalfRange(out, n);
}
void DequantSpanAdd(const uint8_t* __restrict codes, size_t n, float offset, float scale,
                    const float* __restrict pred, float* __restrict out) {
  for (size_t i = 0; i < n; ++i) out[i] = pred[i] + (offset + static_cast<float>(codes[i]) * scale);
  ClampToHalfRange(out, n);
}

// Per-channel variants: one quantizer per channel.
void QuantizeRowChannels(const float* __restrict x, int d, const float* __restrict offset,
                         const float* __restrict inv_scale, float levels,
                         uint8_t* __restrict codes) {
  for (int c = 0; c < d; ++c) {
    float v = (x[c] - offset[c]) * inv_scale[c];
    v = std::max(v, 0.0f);
    v = std::min(v, levels);
    codes[c] = static_cast<uint8_t>(static_cast<int32_t>(v + 0.5f));
  }
}
void DequantRowChannels(const uint8_t* __restrict codes, int d, const float* __restrict offset,
                        const float* __restrict scale, float* __restrict out) {
  for (int c = 0; c < d; ++c) out[c] = offset[c] + static_cast<float>(codes[c]) * scale[c];
  ClampToHalfRange(out, d);
}
void DequantRowChannelsAdd(const uint8_t* __restrict codes, int d, const float* __restrict offset,
                           const float* __restrict scale, const float* __restrict pred,
                           float* __restrict out) {
  for (int c = 0; c < d; ++c) {
    out[c] = pred[c] + (offset[c] + static_cast<float>(codes[c]) * scale[c]);
  }
  ClampToHalfRange(out, d);
}
void UpdateMinMax(const float* __restrict x, int d, float* __restrict lo, float* __restrict hi) {
  for (int c = 0; c < d; ++c) {
    lo[c] = std::min(lo[c], x[c]);
    hi[c] = std::max(hi[c], x[c]);
  }
}
void Subtract(const float* __restrict a, const float* __restrict b, int d, float* __restrict out) {
  for (int c = 0; c < d; ++c) out[c] = a[c] - b[c];
}

// Quantizes `groups` consecutive groups of g values each (per-token groups: whole rows when
// g == d): codes[groups * g], params[2 * groups]. When recon is given, also writes the decoder's
// reconstruction (pred + dequantized value, or the dequantized value when pred is null). Returns
// false if a value or a parameter is outside the half range (the caller knows which it can be).
// Works in batches: all min/max first, then all parameters, then all codes, which keeps the
// per-group scalar work off the critical path.
bool QuantizeTokenGroups(const float* x, size_t groups, int g, float levels, uint8_t* codes,
                         uint16_t* params, const float* pred, float* recon) {
  constexpr size_t kBatch = 64;
  float lo[kBatch], hi[kBatch];
  Params p[kBatch];
  for (size_t b0 = 0; b0 < groups; b0 += kBatch) {
    const size_t nb = std::min(kBatch, groups - b0);
    const float* xb = x + b0 * g;
    bool ok = true;
    for (size_t j = 0; j < nb; ++j) {
      ok &= MinMax(xb + j * g, g, &lo[j], &hi[j]);
      ok &= lo[j] >= -kHalfMax && hi[j] <= kHalfMax;
    }
    for (size_t j = 0; j < nb; ++j) ok &= ChooseParams(lo[j], hi[j], levels, &p[j]);
    if (!ok) return false;
    for (size_t j = 0; j < nb; ++j) {
      const size_t off = (b0 + j) * g;
      QuantizeSpan(x + off, g, p[j].offset, p[j].inv_scale, levels, codes + off);
      params[2 * (b0 + j)] = p[j].scale_bits;
      params[2 * (b0 + j) + 1] = p[j].offset_bits;
      if (recon != nullptr) {
        if (pred != nullptr) {
          DequantSpanAdd(codes + off, g, p[j].offset, p[j].scale, pred + off, recon + off);
        } else {
          DequantSpan(codes + off, g, p[j].offset, p[j].scale, recon + off);
        }
      }
    }
  }
  return true;
}

// Resolved token-group size for per-token (channels) or per-channel (rows; 0 = all `rows`).
int TokenGroup(const QuantSpec& spec, int head_dim) {
  return spec.group_size > 0 ? spec.group_size : head_dim;
}
size_t RowGroup(const QuantSpec& spec, size_t rows) {
  return spec.group_size > 0 ? static_cast<size_t>(spec.group_size) : rows;
}

size_t RefRowsInHead(const DeltaConfig& delta, int rows) {
  if (rows <= 0) return 0;
  switch (delta.mode) {
    case DeltaMode::kNone:
      return 0;
    case DeltaMode::kSequential:
      return 1;
    case DeltaMode::kGroupedSequential:
    case DeltaMode::kAnchor: {
      const size_t g = static_cast<size_t>(std::max(delta.group_size, 1));
      return (static_cast<size_t>(rows) + g - 1) / g;
    }
  }
  return 0;
}

// Row whose reconstruction predicts main row t (head-local).
int PredRow(const DeltaConfig& delta, int t) {
  if (delta.mode == DeltaMode::kAnchor) return t - t % delta.group_size;
  return t - 1;
}

// Decodes (scale, offset) half pairs into float arrays.
void LoadParams(const uint16_t* params, int n, float* scale, float* offset) {
  for (int i = 0; i < n; ++i) {
    scale[i] = FiniteHalfToFloat(params[2 * i]);
    offset[i] = FiniteHalfToFloat(params[2 * i + 1]);
  }
}

// Per-head working rows for per-channel quantization and residuals.
struct ChannelScratch {
  std::vector<float> lo, hi, offset, scale, inv, residual;
  explicit ChannelScratch(int d) : lo(d), hi(d), offset(d), scale(d), inv(d), residual(d) {}
};

}  // namespace

size_t SectionShape::num_rows() const {
  size_t n = 0;
  for (int r : rows_per_head) n += static_cast<size_t>(std::max(r, 0));
  return n;
}

bool IsReferenceRow(const DeltaConfig& delta, int row_in_head) {
  switch (delta.mode) {
    case DeltaMode::kNone:
      return false;
    case DeltaMode::kSequential:
      return row_in_head == 0;
    case DeltaMode::kGroupedSequential:
    case DeltaMode::kAnchor:
      return row_in_head % std::max(delta.group_size, 1) == 0;
  }
  return false;
}

absl::Status CheckQuantSpec(const QuantSpec& spec, const SectionShape& shape) {
  if (shape.head_dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim must be >= 1, got ", shape.head_dim));
  }
  for (int r : shape.rows_per_head) {
    if (r < 0) return absl::InvalidArgumentError("negative row count in section shape");
  }
  if (static_cast<uint8_t>(spec.coding) > static_cast<uint8_t>(ValueCoding::kLowRank)) {
    return absl::InvalidArgumentError("unknown value coding");
  }
  if (spec.axis != QuantAxis::kPerToken && spec.axis != QuantAxis::kPerChannel) {
    return absl::InvalidArgumentError("unknown quantization axis");
  }
  if (spec.coding == ValueCoding::kLowRank) {
    if (spec.rank < 1) {
      return absl::InvalidArgumentError(absl::StrCat("low rank needs rank >= 1, got ", spec.rank));
    }
    return absl::OkStatus();
  }
  if (!spec.is_integer()) return absl::OkStatus();  // raw / fp16 / bf16 take no parameters
  if (spec.group_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group size must be >= 0, got ", spec.group_size));
  }
  if (spec.axis == QuantAxis::kPerToken && spec.group_size > 0 &&
      shape.head_dim % spec.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("per-token group size ", spec.group_size,
                                                   " does not divide head_dim ", shape.head_dim));
  }
  return absl::OkStatus();
}

absl::Status CheckDeltaConfig(const DeltaConfig& delta) {
  switch (delta.mode) {
    case DeltaMode::kNone:
    case DeltaMode::kSequential:
      return absl::OkStatus();
    case DeltaMode::kGroupedSequential:
    case DeltaMode::kAnchor:
      // A group of 1 would make every row a reference: that is just INT8 with extra steps.
      if (delta.group_size < 2) {
        return absl::InvalidArgumentError(
            absl::StrCat("delta group size must be >= 2, got ", delta.group_size));
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown delta mode");
}

size_t NumRefRows(const DeltaConfig& delta, const SectionShape& shape) {
  size_t n = 0;
  for (int r : shape.rows_per_head) n += RefRowsInHead(delta, r);
  return n;
}

size_t NumMainRows(const DeltaConfig& delta, const SectionShape& shape) {
  return shape.num_rows() - NumRefRows(delta, shape);
}

size_t NumMainParams(const QuantSpec& spec, const DeltaConfig& delta, const SectionShape& shape) {
  if (shape.head_dim < 1 || spec.group_size < 0) return 0;
  const size_t d = static_cast<size_t>(shape.head_dim);
  if (spec.axis == QuantAxis::kPerToken) {
    const size_t g = static_cast<size_t>(TokenGroup(spec, shape.head_dim));
    return NumMainRows(delta, shape) * (d / g) * 2;
  }
  size_t groups = 0;
  for (int r : shape.rows_per_head) {
    const size_t main = static_cast<size_t>(std::max(r, 0)) - RefRowsInHead(delta, r);
    if (main == 0) continue;
    const size_t g = RowGroup(spec, main);
    groups += (main + g - 1) / g;
  }
  return groups * d * 2;
}

absl::StatusOr<QuantizedSection> Quantize(const QuantSpec& spec, const DeltaConfig& delta,
                                          const SectionShape& shape,
                                          std::span<const float> values) {
  if (absl::Status s = CheckQuantSpec(spec, shape); !s.ok()) return s;
  if (!spec.is_integer()) {
    return absl::InvalidArgumentError("Quantize needs an integer coding (int8/int4/int3/int2)");
  }
  if (absl::Status s = CheckDeltaConfig(delta); !s.ok()) return s;
  if (values.size() != shape.num_elements()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Quantize got ", values.size(), " values for a section of ", shape.num_elements()));
  }
  // Parameters are half floats: see the file comment. The per-token path without delta checks
  // each group as it finds its min/max, saving a pass over the data.
  const bool fused_check = delta.mode == DeltaMode::kNone && spec.axis == QuantAxis::kPerToken;
  if (!fused_check && !AllInHalfRange(values.data(), values.size())) return ValueRangeError();

  const int d = shape.head_dim;
  const float levels = static_cast<float>((1 << CodingBits(spec.coding)) - 1);
  const bool per_token = spec.axis == QuantAxis::kPerToken;
  const int tg = TokenGroup(spec, d);

  QuantizedSection q;
  q.main_codes.resize(NumMainRows(delta, shape) * d);
  q.main_params.resize(NumMainParams(spec, delta, shape));
  q.ref_codes.resize(NumRefRows(delta, shape) * d);
  q.ref_params.resize(2 * NumRefRows(delta, shape));
  uint8_t* main_codes = q.main_codes.data();
  uint16_t* main_params = q.main_params.data();
  uint8_t* ref_codes = q.ref_codes.data();
  uint16_t* ref_params = q.ref_params.data();

  // Without delta and per token, the section is just rows: no per-head state.
  if (delta.mode == DeltaMode::kNone && per_token) {
    const size_t groups = shape.num_rows() * (d / tg);
    if (!QuantizeTokenGroups(values.data(), groups, tg, levels, main_codes, main_params, nullptr,
                             nullptr)) {
      return ValueRangeError();
    }
    return q;
  }

  ChannelScratch scratch(d);
  std::vector<float> recon;     // the head's reconstruction (delta only)
  std::vector<int> main_index;  // head-local row -> index among the head's main rows, -1 = ref
  std::vector<int> main_rows;   // head-local indices of the main rows
  const float* head = values.data();
  for (int rows : shape.rows_per_head) {
    const float* x = head;
    head += static_cast<size_t>(rows) * d;
    if (rows == 0) continue;

    if (delta.mode == DeltaMode::kNone) {  // per channel, every row is a main row
      const size_t group = RowGroup(spec, rows);
      for (size_t r0 = 0; r0 < static_cast<size_t>(rows); r0 += group) {
        const size_t r1 = std::min<size_t>(rows, r0 + group);
        std::copy(x + r0 * d, x + r0 * d + d, scratch.lo.begin());
        std::copy(x + r0 * d, x + r0 * d + d, scratch.hi.begin());
        for (size_t r = r0 + 1; r < r1; ++r) {
          UpdateMinMax(x + r * d, d, scratch.lo.data(), scratch.hi.data());
        }
        for (int c = 0; c < d; ++c) {
          Params p;
          ChooseParams(scratch.lo[c], scratch.hi[c], levels, &p);  // in range: cannot fail
          *main_params++ = p.scale_bits;
          *main_params++ = p.offset_bits;
          scratch.offset[c] = p.offset;
          scratch.inv[c] = p.inv_scale;
        }
        for (size_t r = r0; r < r1; ++r) {
          QuantizeRowChannels(x + r * d, d, scratch.offset.data(), scratch.inv.data(), levels,
                              main_codes);
          main_codes += d;
        }
      }
      continue;
    }

    // Delta coding. 1) Reference rows: 8 bits, one pair per row, from the original values.
    recon.resize(static_cast<size_t>(rows) * d);
    main_index.assign(rows, -1);
    main_rows.clear();
    for (int t = 0; t < rows; ++t) {
      if (IsReferenceRow(delta, t)) {
        QuantizeTokenGroups(x + static_cast<size_t>(t) * d, 1, d, 255.0f, ref_codes, ref_params,
                            nullptr, recon.data() + static_cast<size_t>(t) * d);
        ref_codes += d;
        ref_params += 2;
      } else {
        main_index[t] = static_cast<int>(main_rows.size());
        main_rows.push_back(t);
      }
    }
    // The row the residual of t is taken against: the decoder's reconstruction (closed loop) or
    // the original (open loop).
    auto pred_of = [&](int t) -> const float* {
      const size_t p = static_cast<size_t>(PredRow(delta, t)) * d;
      return delta.closed_loop ? recon.data() + p : x + p;
    };

    // 2) Main rows, per token: each row's exact residual is known when it is coded.
    if (per_token) {
      for (int t : main_rows) {
        const float* pred = pred_of(t);
        Subtract(x + static_cast<size_t>(t) * d, pred, d, scratch.residual.data());
        float* row_recon = delta.closed_loop ? recon.data() + static_cast<size_t>(t) * d : nullptr;
        if (!QuantizeTokenGroups(scratch.residual.data(), d / tg, tg, levels, main_codes,
                                 main_params, pred, row_recon)) {
          return ResidualRangeError();
        }
        main_codes += d;
        main_params += 2 * (d / tg);
      }
      continue;
    }

    // 2) Main rows, per channel, in groups of main rows.
    const size_t nmain = main_rows.size();
    if (nmain == 0) continue;
    const size_t group = RowGroup(spec, nmain);
    for (size_t m0 = 0; m0 < nmain; m0 += group) {
      const size_t m1 = std::min(nmain, m0 + group);
      // Residual range over the base residuals (file comment): final reconstructions for
      // predecessors outside the group, original values for those inside it.
      for (size_t m = m0; m < m1; ++m) {
        const int t = main_rows[m];
        const int p = PredRow(delta, t);
        const bool in_group = main_index[p] >= static_cast<int>(m0);
        const float* base = (delta.closed_loop && !in_group)
                                ? recon.data() + static_cast<size_t>(p) * d
                                : x + static_cast<size_t>(p) * d;
        Subtract(x + static_cast<size_t>(t) * d, base, d, scratch.residual.data());
        if (m == m0) {
          std::copy(scratch.residual.begin(), scratch.residual.end(), scratch.lo.begin());
          std::copy(scratch.residual.begin(), scratch.residual.end(), scratch.hi.begin());
        } else {
          UpdateMinMax(scratch.residual.data(), d, scratch.lo.data(), scratch.hi.data());
        }
      }
      for (int c = 0; c < d; ++c) {
        Params p;
        if (!ChooseParams(scratch.lo[c], scratch.hi[c], levels, &p)) {
          return ResidualRangeError();
        }
        *main_params++ = p.scale_bits;
        *main_params++ = p.offset_bits;
        scratch.offset[c] = p.offset;
        scratch.scale[c] = p.scale;
        scratch.inv[c] = p.inv_scale;
      }
      for (size_t m = m0; m < m1; ++m) {
        const int t = main_rows[m];
        const float* pred = pred_of(t);
        Subtract(x + static_cast<size_t>(t) * d, pred, d, scratch.residual.data());
        QuantizeRowChannels(scratch.residual.data(), d, scratch.offset.data(), scratch.inv.data(),
                            levels, main_codes);
        if (delta.closed_loop) {
          DequantRowChannelsAdd(main_codes, d, scratch.offset.data(), scratch.scale.data(), pred,
                                recon.data() + static_cast<size_t>(t) * d);
        }
        main_codes += d;
      }
    }
  }
  return q;
}

absl::Status Dequantize(const QuantSpec& spec, const DeltaConfig& delta, const SectionShape& shape,
                        const QuantizedSection& q, std::span<float> out) {
  if (absl::Status s = CheckQuantSpec(spec, shape); !s.ok()) return s;
  if (!spec.is_integer()) {
    return absl::InvalidArgumentError("Dequantize needs an integer coding (int8/int4/int3/int2)");
  }
  if (absl::Status s = CheckDeltaConfig(delta); !s.ok()) return s;
  const int d = shape.head_dim;
  const size_t main_rows_total = NumMainRows(delta, shape);
  const size_t ref_rows_total = NumRefRows(delta, shape);
  // Every size is checked before anything is read, so a malformed section can never make the
  // loops below read or write out of bounds.
  if (out.size() != shape.num_elements()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Dequantize output has ", out.size(), " elements, section has ", shape.num_elements()));
  }
  if (q.main_codes.size() != main_rows_total * d ||
      q.main_params.size() != NumMainParams(spec, delta, shape) ||
      q.ref_codes.size() != ref_rows_total * d || q.ref_params.size() != 2 * ref_rows_total) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantized section sizes do not match its shape: main codes ", q.main_codes.size(), "/",
        main_rows_total * d, ", main params ", q.main_params.size(), "/",
        NumMainParams(spec, delta, shape), ", ref codes ", q.ref_codes.size(), "/",
        ref_rows_total * d, ", ref params ", q.ref_params.size(), "/", 2 * ref_rows_total));
  }
  // Codes must fit the width: any code >= 2^bits has a bit at or above `bits` set.
  const int bits = CodingBits(spec.coding);
  uint8_t any = 0;
  for (uint8_t c : q.main_codes) any |= c;
  if (bits < 8 && (any >> bits) != 0) {
    return absl::DataLossError(absl::StrCat("quantized code out of range for ", bits, " bits"));
  }
  // Infinite or NaN parameters would poison the reconstruction (and, through delta, every later
  // row); no encoder produces them.
  uint32_t bad = 0;
  for (uint16_t p : q.main_params) bad |= static_cast<uint32_t>((p & 0x7c00u) == 0x7c00u);
  for (uint16_t p : q.ref_params) bad |= static_cast<uint32_t>((p & 0x7c00u) == 0x7c00u);
  if (bad) return absl::DataLossError("quantization scale or offset is not a finite half float");

  const bool per_token = spec.axis == QuantAxis::kPerToken;
  const int tg = TokenGroup(spec, d);
  const uint8_t* main_codes = q.main_codes.data();
  const uint16_t* main_params = q.main_params.data();
  const uint8_t* ref_codes = q.ref_codes.data();
  const uint16_t* ref_params = q.ref_params.data();

  if (delta.mode == DeltaMode::kNone && per_token) {
    const size_t rows = shape.num_rows();
    float* o = out.data();
    for (size_t r = 0; r < rows; ++r) {
      for (int c0 = 0; c0 < d; c0 += tg) {
        DequantSpan(main_codes, tg, FiniteHalfToFloat(main_params[1]),
                    FiniteHalfToFloat(main_params[0]), o);
        main_codes += tg;
        main_params += 2;
        o += tg;
      }
    }
    return absl::OkStatus();
  }

  std::vector<float> scale(d), offset(d);
  float* head = out.data();
  for (int rows : shape.rows_per_head) {
    float* y = head;
    head += static_cast<size_t>(rows) * d;
    if (rows == 0) continue;
    if (delta.mode == DeltaMode::kNone) {  // per channel
      const size_t group = RowGroup(spec, rows);
      for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
        if (r % group == 0) {
          LoadParams(main_params, d, scale.data(), offset.data());
          main_params += 2 * d;
        }
        DequantRowChannels(main_codes, d, offset.data(), scale.data(), y + r * d);
        main_codes += d;
      }
      continue;
    }
    // Delta: rows in order, so every prediction row is reconstructed before it is used.
    const size_t nmain = static_cast<size_t>(rows) - RefRowsInHead(delta, rows);
    const size_t group = std::max<size_t>(RowGroup(spec, nmain), 1);
    size_t m = 0;
    for (int t = 0; t < rows; ++t) {
      float* row = y + static_cast<size_t>(t) * d;
      if (IsReferenceRow(delta, t)) {
        DequantSpan(ref_codes, d, FiniteHalfToFloat(ref_params[1]),
                    FiniteHalfToFloat(ref_params[0]), row);
        ref_codes += d;
        ref_params += 2;
        continue;
      }
      const float* pred = y + static_cast<size_t>(PredRow(delta, t)) * d;
      if (per_token) {
        for (int c0 = 0; c0 < d; c0 += tg) {
          DequantSpanAdd(main_codes + c0, tg, FiniteHalfToFloat(main_params[1]),
                         FiniteHalfToFloat(main_params[0]), pred + c0, row + c0);
          main_params += 2;
        }
      } else {
        if (m % group == 0) {
          LoadParams(main_params, d, scale.data(), offset.data());
          main_params += 2 * d;
        }
        DequantRowChannelsAdd(main_codes, d, offset.data(), scale.data(), pred, row);
      }
      main_codes += d;
      ++m;
    }
  }
  return absl::OkStatus();
}

// ---- bit packing -------------------------------------------------------------------------------

std::vector<uint8_t> PackBits(std::span<const uint8_t> codes, int bits) {
  // bits outside 1..8 is a programming error; an empty result makes UnpackBits fail loudly.
  if (bits < 1 || bits > 8) return {};
  const size_t n = codes.size();
  std::vector<uint8_t> out((n * bits + 7) / 8);
  const uint8_t* c = codes.data();
  uint8_t* o = out.data();
  switch (bits) {
    case 8:
      if (n) std::memcpy(o, c, n);
      return out;
    case 4: {
      const size_t pairs = n / 2;
      for (size_t i = 0; i < pairs; ++i) {
        o[i] = static_cast<uint8_t>((c[2 * i] & 0xfu) | (c[2 * i + 1] & 0xfu) << 4);
      }
      if (n & 1) o[pairs] = c[n - 1] & 0xfu;
      return out;
    }
    case 2: {
      const size_t quads = n / 4;
      for (size_t i = 0; i < quads; ++i) {
        o[i] = static_cast<uint8_t>((c[4 * i] & 3u) | (c[4 * i + 1] & 3u) << 2 |
                                    (c[4 * i + 2] & 3u) << 4 | (c[4 * i + 3] & 3u) << 6);
      }
      uint8_t last = 0;
      for (size_t i = quads * 4; i < n; ++i) last |= (c[i] & 3u) << (2 * (i - quads * 4));
      if (n % 4) o[quads] = last;
      return out;
    }
    default: {
      // Generic: accumulate into a 64-bit register, flush whole bytes.
      const uint32_t mask = (1u << bits) - 1;
      uint64_t acc = 0;
      int filled = 0;
      size_t j = 0;
      for (size_t i = 0; i < n; ++i) {
        acc |= static_cast<uint64_t>(c[i] & mask) << filled;
        filled += bits;
        while (filled >= 8) {
          o[j++] = static_cast<uint8_t>(acc);
          acc >>= 8;
          filled -= 8;
        }
      }
      if (filled > 0) o[j] = static_cast<uint8_t>(acc);
      return out;
    }
  }
}

absl::Status UnpackBits(std::span<const uint8_t> packed, int bits, size_t n,
                        std::span<uint8_t> out) {
  if (bits < 1 || bits > 8) {
    return absl::InvalidArgumentError(absl::StrCat("code width must be 1..8 bits, got ", bits));
  }
  // n * bits cannot overflow for any n that fits in memory as codes (n <= 2^61 for 64-bit size_t
  // would be needed); guard anyway so a hostile count cannot wrap the check.
  if (n > std::numeric_limits<size_t>::max() / 8) {
    return absl::InvalidArgumentError("code count too large");
  }
  const size_t want = (n * static_cast<size_t>(bits) + 7) / 8;
  if (packed.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("packed codes: ", packed.size(),
                                                   " bytes, expected ", want, " for ", n,
                                                   " codes of ", bits, " bits"));
  }
  if (out.size() < n) {
    return absl::InvalidArgumentError(
        absl::StrCat("unpack output holds ", out.size(), " codes, need ", n));
  }
  const uint8_t* p = packed.data();
  uint8_t* o = out.data();
  switch (bits) {
    case 8:
      if (n) std::memcpy(o, p, n);
      return absl::OkStatus();
    case 4: {
      const size_t pairs = n / 2;
      for (size_t i = 0; i < pairs; ++i) {
        o[2 * i] = p[i] & 0xfu;
        o[2 * i + 1] = p[i] >> 4;
      }
      if (n & 1) o[n - 1] = p[pairs] & 0xfu;
      return absl::OkStatus();
    }
    case 2: {
      const size_t quads = n / 4;
      for (size_t i = 0; i < quads; ++i) {
        o[4 * i] = p[i] & 3u;
        o[4 * i + 1] = (p[i] >> 2) & 3u;
        o[4 * i + 2] = (p[i] >> 4) & 3u;
        o[4 * i + 3] = p[i] >> 6;
      }
      for (size_t i = quads * 4; i < n; ++i) o[i] = (p[quads] >> (2 * (i - quads * 4))) & 3u;
      return absl::OkStatus();
    }
    default: {
      const uint32_t mask = (1u << bits) - 1;
      uint64_t acc = 0;
      int filled = 0;
      size_t j = 0;
      for (size_t i = 0; i < n; ++i) {
        if (filled < bits) {  // bits <= 8, so one byte always suffices
          acc |= static_cast<uint64_t>(p[j++]) << filled;
          filled += 8;
        }
        o[i] = static_cast<uint8_t>(acc & mask);
        acc >>= bits;
        filled -= bits;
      }
      return absl::OkStatus();
    }
  }
}

}  // namespace kvcodec

namespace kvcodec {

namespace {

// A row's codes (one per byte) into PackBits layout, bits 8, 4 or 2.
void PackRowCodes(const uint8_t* codes, int d, int bits, uint8_t* packed) {
  switch (bits) {
    case 8:
      std::memcpy(packed, codes, d);
      break;
    case 4: {
      int j = 0;
#if defined(__SSE2__)
      // 16-bit lane k holds codes 2k (low byte) and 2k + 1 (high byte): fold them into one.
      const __m128i low = _mm_set1_epi16(0x00ff);
      for (; j + 16 <= d / 2; j += 16) {
        const __m128i a = _mm_load_si128(reinterpret_cast<const __m128i*>(codes + 2 * j));
        const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(codes + 2 * j + 16));
        const __m128i fa = _mm_or_si128(_mm_and_si128(a, low), _mm_srli_epi16(a, 4));
        const __m128i fb = _mm_or_si128(_mm_and_si128(b, low), _mm_srli_epi16(b, 4));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(packed + j),
                         _mm_packus_epi16(_mm_and_si128(fa, low), _mm_and_si128(fb, low)));
      }
#endif
      for (; j < d / 2; ++j) packed[j] = static_cast<uint8_t>(codes[2 * j] | codes[2 * j + 1] << 4);
      break;
    }
    default:  // 2
      for (int j = 0; j < d / 4; ++j) {
        packed[j] = static_cast<uint8_t>(codes[4 * j] | codes[4 * j + 1] << 2 | codes[4 * j + 2] << 4 |
                                         codes[4 * j + 3] << 6);
      }
      break;
  }
}

void RowsToFloat(std::span<const void* const> rows, int d, float* x) {
  for (const void* r : rows) {
    ToFloat(r, DType::kBFloat16, d, x);
    x += d;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// Min and max of a group of 32k finite-checked values, 8 lanes wide with two accumulators.
// They do not depend on the visiting order except for the sign of a zero, which reaches the
// stream (HalfRoundDown(-0) is the half -0) and which MinMax's SSE2 order decides, so a group
// whose min or max is zero is measured again by MinMax. False on NaN.
__attribute__((target("avx2"))) bool MinMaxAvx2(const float* x, int g, float* lo, float* hi) {
  __m256 mn0 = _mm256_loadu_ps(x), mn1 = _mm256_loadu_ps(x + 8);
  __m256 mx0 = mn0, mx1 = mn1;
  __m256 bad = _mm256_or_ps(_mm256_cmp_ps(mn0, mn0, _CMP_UNORD_Q), _mm256_cmp_ps(mn1, mn1, _CMP_UNORD_Q));
  for (int c = 16; c < g; c += 16) {
    const __m256 a = _mm256_loadu_ps(x + c), b = _mm256_loadu_ps(x + c + 8);
    mn0 = _mm256_min_ps(a, mn0);
    mn1 = _mm256_min_ps(b, mn1);
    mx0 = _mm256_max_ps(a, mx0);
    mx1 = _mm256_max_ps(b, mx1);
    bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q), _mm256_cmp_ps(b, b, _CMP_UNORD_Q)));
  }
  if (_mm256_movemask_ps(bad) != 0) return false;
  const __m256 mn = _mm256_min_ps(mn0, mn1), mx = _mm256_max_ps(mx0, mx1);
  __m128 l = _mm_min_ps(_mm256_castps256_ps128(mn), _mm256_extractf128_ps(mn, 1));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  l = _mm_min_ps(l, _mm_movehl_ps(l, l));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  *lo = _mm_cvtss_f32(_mm_min_ss(l, _mm_shuffle_ps(l, l, 1)));
  *hi = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
  if (*lo == 0.0f || *hi == 0.0f) return MinMax(x, g, lo, hi);
  return true;
}

// 8 codes: QuantizeSpan's arithmetic, the same operations per element.
__attribute__((target("avx2"))) inline __m256i Codes8(const float* v, __m256 off, __m256 inv,
                                                      __m256 top) {
  __m256 q = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v), off), inv);
  q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), top);
  return _mm256_cvttps_epi32(_mm256_add_ps(q, _mm256_set1_ps(0.5f)));
}

// Codes of a group of 32k values.
__attribute__((target("avx2"))) void CodesAvx2(const float* x, int g, const Params& p, float levels,
                                               uint8_t* codes) {
  const __m256 off = _mm256_set1_ps(p.offset), inv = _mm256_set1_ps(p.inv_scale);
  const __m256 top = _mm256_set1_ps(levels);
  // packs/packus work within 128-bit halves; this puts the dwords back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int c = 0; c < g; c += 32) {
    const __m256i p01 = _mm256_packs_epi32(Codes8(x + c, off, inv, top), Codes8(x + c + 8, off, inv, top));
    const __m256i p23 = _mm256_packs_epi32(Codes8(x + c + 16, off, inv, top), Codes8(x + c + 24, off, inv, top));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + c),
                        _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), order));
  }
}
#endif

#if defined(__SSE2__)
// Codes of a group of 16k values: QuantizeSpan's arithmetic in SSE2 (GCC vectorises its
// NaN-aware std::max/std::min as compare-and-blend, and the narrowing to bytes poorly). Values
// are finite here, where maxps/minps agree with std::max/std::min up to the sign of a zero,
// which + 0.5 and truncation erase.
void CodesSse2(const float* x, int g, const Params& p, float levels, uint8_t* codes) {
  const __m128 off = _mm_set1_ps(p.offset), inv = _mm_set1_ps(p.inv_scale);
  const __m128 zero = _mm_setzero_ps(), top = _mm_set1_ps(levels), half = _mm_set1_ps(0.5f);
  auto code4 = [&](const float* v) {
    __m128 q = _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(v), off), inv);
    q = _mm_min_ps(_mm_max_ps(q, zero), top);
    return _mm_cvttps_epi32(_mm_add_ps(q, half));
  };
  for (int c = 0; c < g; c += 16) {
    const __m128i w0 = _mm_packs_epi32(code4(x + c), code4(x + c + 4));
    const __m128i w1 = _mm_packs_epi32(code4(x + c + 8), code4(x + c + 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + c), _mm_packus_epi16(w0, w1));
  }
}
#endif

}  // namespace

absl::Status QuantizeBF16RowsToPacked(std::span<const void* const> rows, int d, int g, int bits,
                                      uint8_t* packed, uint16_t* params) {
  // Batches of rows in L1: every group's range first, then every group's parameters (scalar
  // chains of dependent steps that overlap across groups), then the codes, as
  // QuantizeTokenGroups orders its work. One row at a time left the parameters on the
  // critical path.
  constexpr int kBatchFloats = 8192;  // >= kMaxPackedRow
  constexpr int kBatchGroups = 1024;  // >= kMaxPackedRow
  alignas(32) float x[kBatchFloats];
  alignas(32) uint8_t codes[kBatchFloats];
  float lo[kBatchGroups], hi[kBatchGroups];
  Params p[kBatchGroups];
  const float levels = static_cast<float>((1 << bits) - 1);
  const int groups_per_row = d / g;
  const size_t row_bytes = static_cast<size_t>(d) * bits / 8;
  const size_t batch_rows = std::max(1, std::min(kBatchFloats / d, kBatchGroups / groups_per_row));
#if defined(__x86_64__) && defined(__GNUC__)
  const bool avx2 = g % 32 == 0 && HaveAvx2();
#endif
  for (size_t r0 = 0; r0 < rows.size(); r0 += batch_rows) {
    const std::span<const void* const> batch = rows.subspan(r0, std::min(batch_rows, rows.size() - r0));
    const int groups = static_cast<int>(batch.size()) * groups_per_row;
    RowsToFloat(batch, d, x);
    uint16_t* batch_params = params + r0 * 2 * groups_per_row;
#if defined(__SSE2__)
    if (g % 16 == 0) {
      bool ok = true;
      for (int j = 0; j < groups; ++j) {
        const float* xg = x + static_cast<size_t>(j) * g;
#if defined(__x86_64__) && defined(__GNUC__)
        ok &= avx2 ? MinMaxAvx2(xg, g, &lo[j], &hi[j]) : MinMax(xg, g, &lo[j], &hi[j]);
#else
        ok &= MinMax(xg, g, &lo[j], &hi[j]);
#endif
        ok &= lo[j] >= -kHalfMax && hi[j] <= kHalfMax;
      }
      for (int j = 0; j < groups; ++j) ok &= ChooseParams(lo[j], hi[j], levels, &p[j]);
      if (!ok) return ValueRangeError();
      for (int j = 0; j < groups; ++j) {
        batch_params[2 * j] = p[j].scale_bits;
        batch_params[2 * j + 1] = p[j].offset_bits;
        const float* xg = x + static_cast<size_t>(j) * g;
#if defined(__x86_64__) && defined(__GNUC__)
        if (avx2) {
          CodesAvx2(xg, g, p[j], levels, codes + static_cast<size_t>(j) * g);
          continue;
        }
#endif
        CodesSse2(xg, g, p[j], levels, codes + static_cast<size_t>(j) * g);
      }
    } else
#endif
    if (!QuantizeTokenGroups(x, static_cast<size_t>(groups), g, levels, codes, batch_params,
                             nullptr, nullptr)) {
      return ValueRangeError();
    }
    for (size_t r = 0; r < batch.size(); ++r) {
      PackRowCodes(codes + r * d, d, bits, packed + (r0 + r) * row_bytes);
    }
  }
  return absl::OkStatus();
}

absl::Status QuantizeBF16RowToPacked(const void* row, int d, int g, int bits, uint8_t* packed,
                                     uint16_t* params) {
  const void* rows[1] = {row};
  return QuantizeBF16RowsToPacked(rows, d, g, bits, packed, params);
}

void DequantizeTokenRowsToBF16(const uint8_t* codes, const uint16_t* params, size_t rows,
                               int head_dim, int group, uint16_t* out) {
  const size_t groups = static_cast<size_t>(rows) * (head_dim / group);
  for (size_t gi = 0; gi < groups; ++gi, params += 2) {
    const float scale = FiniteHalfToFloat(params[0]);
    const float offset = FiniteHalfToFloat(params[1]);
    int c = 0;
#if defined(__SSE2__)
    // 16 codes per step: widen to int32, to float, offset + code * scale (same operation order
    // as DequantSpan, no FMA), clamp to the half range, then round to nearest even into bf16.
    // The arithmetic shift keeps each bf16 pattern in int16 range so packs_epi32 is exact.
    const __m128 vs = _mm_set1_ps(scale), vo = _mm_set1_ps(offset);
    const __m128 lo = _mm_set1_ps(-kHalfMax), hi = _mm_set1_ps(kHalfMax);
    const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi32(1), bias = _mm_set1_epi32(0x7fff);
    auto round4 = [&](__m128i q32) {
      __m128 f = _mm_add_ps(vo, _mm_mul_ps(_mm_cvtepi32_ps(q32), vs));
      f = _mm_min_ps(_mm_max_ps(f, lo), hi);
      const __m128i b = _mm_castps_si128(f);
      const __m128i lsb = _mm_and_si128(_mm_srli_epi32(b, 16), one);
      return _mm_srai_epi32(_mm_add_epi32(b, _mm_add_epi32(bias, lsb)), 16);
    };
    for (; c + 16 <= group; c += 16) {
      const __m128i q8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + c));
      const __m128i q16lo = _mm_unpacklo_epi8(q8, zero), q16hi = _mm_unpackhi_epi8(q8, zero);
      const __m128i r0 = round4(_mm_unpacklo_epi16(q16lo, zero));
      const __m128i r1 = round4(_mm_unpackhi_epi16(q16lo, zero));
      const __m128i r2 = round4(_mm_unpacklo_epi16(q16hi, zero));
      const __m128i r3 = round4(_mm_unpackhi_epi16(q16hi, zero));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm_packs_epi32(r0, r1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c + 8), _mm_packs_epi32(r2, r3));
    }
#endif
    for (; c < group; ++c) {
      float f = offset + static_cast<float>(codes[c]) * scale;
      f = std::min(std::max(f, -kHalfMax), kHalfMax);
      out[c] = FloatToBF16(f);
    }
    codes += group;
    out += group;
  }
}

}  // namespace kvcodec
