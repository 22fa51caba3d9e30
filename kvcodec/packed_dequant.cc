// Dequantization of packed 2- and 4-bit codes to bf16 through per-group tables.
//
// Why tables: a group of g channels shares one (scale, offset) pair, so its codes can take only
// 2^bits values. Computing those 4 or 16 bf16 results once per group and looking each code up
// costs a fraction of converting every code to float, scaling and rounding it; with SSSE3 the
// lookup is a byte shuffle of 16 codes at a time, reading the packed bytes as they come off the
// wire (no unpacking pass). The table entries use DequantizeTokenRowsToBF16's arithmetic
// (offset + code * scale in float, no FMA, clamped to the half range, rounded to nearest even),
// so both give the same bits.
#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KVC_HAVE_SSSE3_PATH 1
#endif

#include "kvcodec/dtype.h"
#include "kvcodec/quant.h"
#include "kvcodec/quant_internal.h"

namespace kvcodec {
namespace {

using quant_internal::kHalfMax;

// The bf16 result of every code of one group.
void GroupTable(uint16_t scale_bits, uint16_t offset_bits, int levels, uint16_t* table) {
  const float scale = FiniteHalfToFloat(scale_bits), offset = FiniteHalfToFloat(offset_bits);
  for (int q = 0; q < levels; ++q) {
    float f = offset + static_cast<float>(q) * scale;
    f = std::min(std::max(f, -kHalfMax), kHalfMax);
    table[q] = FloatToBF16(f);
  }
}

// Any group size: each channel's code is read at its bit offset.
void DequantizeScalar(const uint8_t* packed, int bits, const uint16_t* params, size_t rows,
                      int d, int g, uint16_t* out) {
  const int levels = 1 << bits, mask = levels - 1, groups = d / g;
  const size_t row_bytes = static_cast<size_t>(d) * bits / 8;
  uint16_t table[16];
  for (size_t r = 0; r < rows; ++r, packed += row_bytes, out += d) {
    for (int gi = 0; gi < groups; ++gi, params += 2) {
      GroupTable(params[0], params[1], levels, table);
      for (int c = gi * g; c < (gi + 1) * g; ++c) {
        const int bit = c * bits;
        out[c] = table[(packed[bit >> 3] >> (bit & 7)) & mask];
      }
    }
  }
}

#if defined(KVC_HAVE_SSSE3_PATH)
// One group's 16 table entries (entries past the last code are computed too and never
// indexed) as their low bytes and high bytes, with DequantizeTokenRowsToBF16's SSE arithmetic
// and rounding (the arithmetic shift keeps each bf16 pattern in int16 range for packs_epi32).
inline void GroupTableBytes(const uint16_t* param, __m128i* tlo, __m128i* thi) {
  const __m128 vs = _mm_set1_ps(FiniteHalfToFloat(param[0]));
  const __m128 vo = _mm_set1_ps(FiniteHalfToFloat(param[1]));
  const __m128 lo_clamp = _mm_set1_ps(-kHalfMax), hi_clamp = _mm_set1_ps(kHalfMax);
  const __m128i one = _mm_set1_epi32(1), bias = _mm_set1_epi32(0x7fff);
  __m128i e[4];
  for (int k = 0; k < 4; ++k) {
    const __m128 q = _mm_setr_ps(4.0f * k, 4.0f * k + 1, 4.0f * k + 2, 4.0f * k + 3);
    __m128 f = _mm_add_ps(vo, _mm_mul_ps(q, vs));
    f = _mm_min_ps(_mm_max_ps(f, lo_clamp), hi_clamp);
    const __m128i b = _mm_castps_si128(f);
    const __m128i lsb = _mm_and_si128(_mm_srli_epi32(b, 16), one);
    e[k] = _mm_srai_epi32(_mm_add_epi32(b, _mm_add_epi32(bias, lsb)), 16);
  }
  const __m128i t0 = _mm_packs_epi32(e[0], e[1]), t1 = _mm_packs_epi32(e[2], e[3]);
  const __m128i byte_mask = _mm_set1_epi16(0x00ff);
  *tlo = _mm_packus_epi16(_mm_and_si128(t0, byte_mask), _mm_and_si128(t1, byte_mask));
  *thi = _mm_packus_epi16(_mm_srli_epi16(t0, 8), _mm_srli_epi16(t1, 8));
}

// 16 codes -> their 16 bf16 table entries, as two vectors of 8 (codes 0-7, codes 8-15).
__attribute__((target("ssse3"))) inline void Lookup(__m128i tlo, __m128i thi, __m128i codes,
                                                   __m128i& w0, __m128i& w1) {
  const __m128i lo = _mm_shuffle_epi8(tlo, codes), hi = _mm_shuffle_epi8(thi, codes);
  w0 = _mm_unpacklo_epi8(lo, hi);
  w1 = _mm_unpackhi_epi8(lo, hi);
}

// Groups whose packed bytes are whole 16-byte vectors (g * bits a multiple of 128).
__attribute__((target("ssse3"))) void DequantizeShuffle(const uint8_t* packed, int bits,
                                                        const uint16_t* params, size_t rows,
                                                        int d, int g, uint16_t* out) {
  const size_t groups = rows * static_cast<size_t>(d / g);
  const size_t vectors = static_cast<size_t>(g) * bits / 128;
  const __m128i low_nibble = _mm_set1_epi8(0x0f), low_pair = _mm_set1_epi8(0x03);
  for (size_t gi = 0; gi < groups; ++gi, params += 2) {
    __m128i tlo, thi;
    GroupTableBytes(params, &tlo, &thi);
    for (size_t v = 0; v < vectors; ++v, packed += 16, out += 128 / bits) {
      const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
      __m128i* o = reinterpret_cast<__m128i*>(out);
      if (bits == 4) {
        // Byte j holds channel 2j (low nibble) and 2j + 1 (high nibble).
        __m128i e0, e1, o0, o1;
        Lookup(tlo, thi, _mm_and_si128(s, low_nibble), e0, e1);
        Lookup(tlo, thi, _mm_and_si128(_mm_srli_epi16(s, 4), low_nibble), o0, o1);
        _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(e0, o0));
        _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(e0, o0));
        _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(e1, o1));
        _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(e1, o1));
      } else {
        // bits == 2: byte j holds channels 4j .. 4j + 3, two bits each from the bottom.
        __m128i c[4][2];
        for (int k = 0; k < 4; ++k) {
          Lookup(tlo, thi, _mm_and_si128(_mm_srli_epi16(s, 2 * k), low_pair), c[k][0], c[k][1]);
        }
        for (int h = 0; h < 2; ++h) {  // bytes 0-7, then 8-15
          const __m128i a_lo = _mm_unpacklo_epi16(c[0][h], c[1][h]);
          const __m128i a_hi = _mm_unpackhi_epi16(c[0][h], c[1][h]);
          const __m128i b_lo = _mm_unpacklo_epi16(c[2][h], c[3][h]);
          const __m128i b_hi = _mm_unpackhi_epi16(c[2][h], c[3][h]);
          _mm_storeu_si128(o + 4 * h + 0, _mm_unpacklo_epi32(a_lo, b_lo));
          _mm_storeu_si128(o + 4 * h + 1, _mm_unpackhi_epi32(a_lo, b_lo));
          _mm_storeu_si128(o + 4 * h + 2, _mm_unpacklo_epi32(a_hi, b_hi));
          _mm_storeu_si128(o + 4 * h + 3, _mm_unpackhi_epi32(a_hi, b_hi));
        }
      }
    }
  }
}


// 4-bit codes, groups of 64k channels: DequantizeShuffle 32 bytes (64 channels) at a time.
// AVX2 shuffles and unpacks work within 128-bit halves, so each half produces channels
// 32 apart and the stores recombine the halves.
__attribute__((target("avx2"))) void DequantizeInt4Avx2(const uint8_t* packed,
                                                        const uint16_t* params, size_t rows,
                                                        int d, int g, uint16_t* out) {
  const size_t groups = rows * static_cast<size_t>(d / g);
  const int vectors = g / 64;
  const __m256i low_nibble = _mm256_set1_epi8(0x0f);
  for (size_t gi = 0; gi < groups; ++gi, params += 2) {
    __m128i tlo, thi;
    GroupTableBytes(params, &tlo, &thi);
    const __m256i tlo2 = _mm256_broadcastsi128_si256(tlo), thi2 = _mm256_broadcastsi128_si256(thi);
    for (int v = 0; v < vectors; ++v, packed += 32, out += 64) {
      const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed));
      const __m256i even = _mm256_and_si256(s, low_nibble);                         // channel 2j
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi16(s, 4), low_nibble);   // 2j + 1
      const __m256i el = _mm256_shuffle_epi8(tlo2, even), eh = _mm256_shuffle_epi8(thi2, even);
      const __m256i ol = _mm256_shuffle_epi8(tlo2, odd), oh = _mm256_shuffle_epi8(thi2, odd);
      const __m256i e0 = _mm256_unpacklo_epi8(el, eh), e1 = _mm256_unpackhi_epi8(el, eh);
      const __m256i o0 = _mm256_unpacklo_epi8(ol, oh), o1 = _mm256_unpackhi_epi8(ol, oh);
      // Low halves: channels 0-7, 8-15, 16-23, 24-31; high halves: 32-39, ..., 56-63.
      const __m256i r0 = _mm256_unpacklo_epi16(e0, o0), r1 = _mm256_unpackhi_epi16(e0, o0);
      const __m256i r2 = _mm256_unpacklo_epi16(e1, o1), r3 = _mm256_unpackhi_epi16(e1, o1);
      __m256i* o = reinterpret_cast<__m256i*>(out);
      _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(r0, r1, 0x20));
      _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(r2, r3, 0x20));
      _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(r0, r1, 0x31));
      _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(r2, r3, 0x31));
    }
  }
}
#endif

}  // namespace

bool PackedRowsSupported(int bits, int head_dim) {
  return (bits == 2 || bits == 4 || bits == 8) && head_dim > 0 && (head_dim * bits) % 8 == 0;
}

void DequantizePackedTokenRowsToBF16(const uint8_t* packed, int bits, const uint16_t* params,
                                     size_t rows, int head_dim, int group, uint16_t* out) {
  if (bits == 8) return DequantizeTokenRowsToBF16(packed, params, rows, head_dim, group, out);
#if defined(KVC_HAVE_SSSE3_PATH)
  if (bits == 4 && group % 64 == 0 && HaveAvx2()) {
    return DequantizeInt4Avx2(packed, params, rows, head_dim, group, out);
  }
  if ((group * bits) % 128 == 0 && HaveSsse3()) {
    return DequantizeShuffle(packed, bits, params, rows, head_dim, group, out);
  }
#endif
  DequantizeScalar(packed, bits, params, rows, head_dim, group, out);
}

}  // namespace kvcodec
