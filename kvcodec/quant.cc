// Integer quantization with optional delta coding along the token axis. Bit packing is in
// bitpack.cc, the fused bf16 row paths in quant_bf16.cc.
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
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcodec/dtype.h"
#include "kvcodec/quant.h"
#include "kvcodec/quant_internal.h"

namespace kvcodec {
namespace quant_internal {

absl::Status ValueRangeError() {
  return absl::InvalidArgumentError(
      "values must be finite with |x| <= 65504 (the half-float range) to be quantized");
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

}  // namespace quant_internal

namespace {

using quant_internal::ChooseParams;
using quant_internal::kHalfMax;
using quant_internal::MinMax;
using quant_internal::Params;
using quant_internal::QuantizeTokenGroups;
using quant_internal::ValueRangeError;

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

}  // namespace

namespace quant_internal {

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

}  // namespace quant_internal

namespace {

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
  const float levels = static_cast<float>((1 << spec.bits()) - 1);
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
  const int bits = spec.bits();
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

}  // namespace kvcodec
