// Bulk conversions between the cache dtypes and float32.
//
// The scalar converters in dtype.h branch on the exponent, which stops the compiler from
// vectorising a loop over them. The loops here compute every case without branches and select
// with masks, so the compiler vectorises them on any target; bf16 -> float is a plain shift.
// On x86 the float16 paths and float -> bf16 also have hand-written SSE2 (baseline x86-64)
// versions, about 1.5-2x faster than what GCC makes of the loops, mostly because narrowing
// 32-bit lanes to 16 bits is awkward for it. Every path gives bit-for-bit the results of the
// scalar functions (quant_test checks every half pattern and a large sample of float patterns,
// including NaNs, subnormals and the overflow boundary).
#include "kvcodec/dtype.h"

#include <bit>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace kvcodec {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
// bf16 -> float 16 at a time where the CPU has AVX2 (the quantizer converts every input value
// once; the SSE2 loop is half as wide). Returns the count converted.
__attribute__((target("avx2"))) size_t BF16ToFloatAvx2(const unsigned char* p, size_t n,
                                                       float* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * i));
    const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
    const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 8), hi);
  }
  return i;
}
#endif

// Branch-free select: all-ones mask picks a. Written with masks rather than ?: because GCC
// otherwise keeps some selects as branches and then refuses to vectorise the loop.
inline uint32_t Select(bool cond, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  return (a & mask) | (b & ~mask);
}

// Half -> float without branches.
//   normal:    move exponent and mantissa into place and rebias the exponent (15 -> 127).
//   subnormal: the value is mant * 2^-24; the int -> float conversion and the multiply by a
//              power of two are exact, and no float denormal is touched (which would be slow,
//              or flushed to zero under DAZ).
//   inf/NaN:   exponent all ones, mantissa (NaN payload) kept, as HalfToFloat does.
inline uint32_t HalfBitsToFloatBits(uint16_t h) {
  const uint32_t x = h;
  const uint32_t sign = (x & 0x8000u) << 16;
  const uint32_t em = (x & 0x7fffu) << 13;  // exponent and mantissa at float positions
  const uint32_t exp = x & 0x7c00u;
  const uint32_t normal = em + ((127u - 15u) << 23);
  const uint32_t infnan = em | 0x7f800000u;
  const float sub = static_cast<float>(static_cast<int32_t>(x & 0x3ffu)) * 0x1p-24f;
  const uint32_t subnormal = std::bit_cast<uint32_t>(sub);
  uint32_t bits = Select(exp == 0, subnormal, normal);
  bits = Select(exp == 0x7c00u, infnan, bits);
  return bits | sign;
}

// Float -> half, round to nearest even, without branches; same results as FloatToHalf.
//   normal:    rebias the exponent, then add just under half an ulp of the result plus the
//              result's low bit (ties go to even); a carry into the exponent is the correct
//              rounding up to the next binade or to infinity.
//   subnormal: (|f| < 2^-14) adding 0.5f makes the hardware round |f| to a multiple of 2^-24
//              (the ulp of floats in [0.5, 1)) with round-to-nearest-even; the bits above 0.5f
//              are then exactly the half's subnormal mantissa (0x400 when it rounds up to the
//              smallest normal, which is also the right encoding).
//   overflow:  values that round to 65520 or more become infinity; NaN becomes a quiet NaN.
inline uint16_t FloatBitsToHalfBits(uint32_t bits) {
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  uint32_t r = abs - 0x38000000u;
  r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  const float sub = std::bit_cast<float>(abs) + 0.5f;
  const uint32_t s = std::bit_cast<uint32_t>(sub) - 0x3f000000u;
  uint32_t h = Select(abs < 0x38800000u, s, r);
  h = Select(abs >= 0x477ff000u, 0x7c00u, h);
  h = Select(abs > 0x7f800000u, 0x7e00u, h);
  return static_cast<uint16_t>(h | sign);
}

inline uint16_t FloatBitsToBF16Bits(uint32_t bits) {
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x40u;
  const bool is_nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(Select(is_nan, nan, rounded));
}

#if defined(__SSE2__)
// Eight floats -> eight halves, the same computation as FloatBitsToHalfBits on SSE2 registers.
// Written by hand because the auto-vectorised loop spends most of its time narrowing 32-bit
// lanes to 16 bits (SSE2 has no unsigned 32 -> 16 pack); here the halves are biased by -0x8000
// so the signed saturating pack is exact, then unbiased.
inline __m128i FloatBitsToHalfBits4(__m128i bits) {
  const __m128i abs = _mm_and_si128(bits, _mm_set1_epi32(0x7fffffff));
  const __m128i sign = _mm_srli_epi32(_mm_andnot_si128(_mm_set1_epi32(0x7fffffff), bits), 16);
  __m128i r = _mm_sub_epi32(abs, _mm_set1_epi32(0x38000000));
  const __m128i odd = _mm_and_si128(_mm_srli_epi32(r, 13), _mm_set1_epi32(1));
  r = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(r, _mm_set1_epi32(0xfff)), odd), 13);
  const __m128 sub_f = _mm_add_ps(_mm_castsi128_ps(abs), _mm_set1_ps(0.5f));
  const __m128i sub = _mm_sub_epi32(_mm_castps_si128(sub_f), _mm_set1_epi32(0x3f000000));
  // abs is below 2^31, so signed compares are the unsigned ones of the scalar code.
  const __m128i is_sub = _mm_cmplt_epi32(abs, _mm_set1_epi32(0x38800000));
  const __m128i is_inf = _mm_cmpgt_epi32(abs, _mm_set1_epi32(0x477fefff));
  const __m128i is_nan = _mm_cmpgt_epi32(abs, _mm_set1_epi32(0x7f800000));
  __m128i h = _mm_or_si128(_mm_and_si128(is_sub, sub), _mm_andnot_si128(is_sub, r));
  h = _mm_or_si128(_mm_and_si128(is_inf, _mm_set1_epi32(0x7c00)), _mm_andnot_si128(is_inf, h));
  h = _mm_or_si128(_mm_and_si128(is_nan, _mm_set1_epi32(0x7e00)), _mm_andnot_si128(is_nan, h));
  return _mm_or_si128(h, sign);
}

// Same as FloatBitsToBF16Bits, four at a time.
inline __m128i FloatBitsToBF16Bits4(__m128i bits) {
  const __m128i odd = _mm_and_si128(_mm_srli_epi32(bits, 16), _mm_set1_epi32(1));
  const __m128i rounded =
      _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(bits, _mm_set1_epi32(0x7fff)), odd), 16);
  const __m128i nan = _mm_or_si128(_mm_srli_epi32(bits, 16), _mm_set1_epi32(0x40));
  const __m128i abs = _mm_and_si128(bits, _mm_set1_epi32(0x7fffffff));
  const __m128i is_nan = _mm_cmpgt_epi32(abs, _mm_set1_epi32(0x7f800000));
  return _mm_or_si128(_mm_and_si128(is_nan, nan), _mm_andnot_si128(is_nan, rounded));
}

// Stores eight 16-bit results held in two registers of 32-bit lanes (values <= 0xffff).
inline void Store16(__m128i a, __m128i b, unsigned char* p) {
  const __m128i bias = _mm_set1_epi32(0x8000);
  const __m128i packed = _mm_packs_epi32(_mm_sub_epi32(a, bias), _mm_sub_epi32(b, bias));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm_xor_si128(packed, _mm_set1_epi16(static_cast<short>(0x8000))));
}
inline __m128i LoadBits(const float* p) { return _mm_castps_si128(_mm_loadu_ps(p)); }

inline __m128i Select4(__m128i mask, __m128i a, __m128i b) {
  return _mm_or_si128(_mm_and_si128(mask, a), _mm_andnot_si128(mask, b));
}

// Same as HalfBitsToFloatBits for four halves held in 32-bit lanes.
inline __m128 HalfBitsToFloat4(__m128i x) {
  const __m128i sign = _mm_slli_epi32(_mm_and_si128(x, _mm_set1_epi32(0x8000)), 16);
  const __m128i em = _mm_slli_epi32(_mm_and_si128(x, _mm_set1_epi32(0x7fff)), 13);
  const __m128i exp = _mm_and_si128(x, _mm_set1_epi32(0x7c00));
  const __m128i normal = _mm_add_epi32(em, _mm_set1_epi32((127 - 15) << 23));
  const __m128i infnan = _mm_or_si128(em, _mm_set1_epi32(0x7f800000));
  const __m128 sub =
      _mm_mul_ps(_mm_cvtepi32_ps(_mm_and_si128(x, _mm_set1_epi32(0x3ff))), _mm_set1_ps(0x1p-24f));
  __m128i bits = Select4(_mm_cmpeq_epi32(exp, _mm_setzero_si128()), _mm_castps_si128(sub), normal);
  bits = Select4(_mm_cmpeq_epi32(exp, _mm_set1_epi32(0x7c00)), infnan, bits);
  return _mm_castsi128_ps(_mm_or_si128(bits, sign));
}
#endif

}  // namespace

void ToFloat(const void* src, DType dtype, size_t n, float* dst) {
  if (n == 0) return;
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kFloat16: {
      // The buffers may be unaligned byte buffers, so elements go through memcpy, which the
      // compiler turns into plain (vectorised) loads and stores.
      const auto* p = static_cast<const unsigned char*>(src);
      size_t i = 0;
#if defined(__SSE2__)
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
        _mm_storeu_ps(dst + i, HalfBitsToFloat4(_mm_unpacklo_epi16(h, _mm_setzero_si128())));
        _mm_storeu_ps(dst + i + 4, HalfBitsToFloat4(_mm_unpackhi_epi16(h, _mm_setzero_si128())));
      }
#endif
      for (; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = std::bit_cast<float>(HalfBitsToFloatBits(h));
      }
      return;
    }
    case DType::kBFloat16: {
      const auto* p = static_cast<const unsigned char*>(src);
      size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
      if (n >= 16 && HaveAvx2()) i = BF16ToFloatAvx2(p, n, dst);
#endif
#if defined(__SSE2__)
      // bf16 is the top half of a float: interleave zeros below each value.
      const __m128i zero = _mm_setzero_si128();
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
        _mm_storeu_ps(dst + i, _mm_castsi128_ps(_mm_unpacklo_epi16(zero, h)));
        _mm_storeu_ps(dst + i + 4, _mm_castsi128_ps(_mm_unpackhi_epi16(zero, h)));
      }
#endif
      for (; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
      }
      return;
    }
  }
}

void FromFloat(const float* src, size_t n, DType dtype, void* dst) {
  if (n == 0) return;
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kFloat16: {
      auto* p = static_cast<unsigned char*>(dst);
      size_t i = 0;
#if defined(__SSE2__)
      for (; i + 8 <= n; i += 8) {
        Store16(FloatBitsToHalfBits4(LoadBits(src + i)),
                FloatBitsToHalfBits4(LoadBits(src + i + 4)), p + 2 * i);
      }
#endif
      for (; i < n; ++i) {
        const uint16_t h = FloatBitsToHalfBits(std::bit_cast<uint32_t>(src[i]));
        std::memcpy(p + 2 * i, &h, 2);
      }
      return;
    }
    case DType::kBFloat16: {
      auto* p = static_cast<unsigned char*>(dst);
      size_t i = 0;
#if defined(__SSE2__)
      for (; i + 8 <= n; i += 8) {
        Store16(FloatBitsToBF16Bits4(LoadBits(src + i)),
                FloatBitsToBF16Bits4(LoadBits(src + i + 4)), p + 2 * i);
      }
#endif
      for (; i < n; ++i) {
        const uint16_t h = FloatBitsToBF16Bits(std::bit_cast<uint32_t>(src[i]));
        std::memcpy(p + 2 * i, &h, 2);
      }
      return;
    }
  }
}

}  // namespace kvcodec
