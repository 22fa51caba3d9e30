// The fused bf16 paths of the per-token quantizer: bf16 rows straight to packed codes and back,
// for the encoder's and the decoder's common case. They give the same bits as Quantize,
// PackBits and Dequantize (quant_test compares them), through the parameter choice they share
// (quant_internal.h) and explicit SSE2/AVX2 where GCC does not vectorise.
#include <algorithm>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // AVX2 row quantizer, chosen at run time
#endif

#include "absl/status/status.h"
#include "kvcodec/dtype.h"
#include "kvcodec/quant.h"
#include "kvcodec/quant_internal.h"

namespace kvcodec {

namespace {

using quant_internal::ChooseParams;
using quant_internal::kHalfMax;
using quant_internal::MinMax;
using quant_internal::Params;
using quant_internal::QuantizeTokenGroups;
using quant_internal::ValueRangeError;

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
