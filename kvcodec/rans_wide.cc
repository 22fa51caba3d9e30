#include "kvcodec/rans_wide.h"

#include <array>
#include <atomic>
#include <cstring>

#include "kvcodec/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KVC_RANS_WIDE_X86 1
#endif

namespace kvcodec::rans_wide {

void BuildSlotTable(const uint16_t* freq, int alphabet, uint32_t* table) {
  uint32_t cum = 0;
  for (int s = 0; s < alphabet; ++s) {
    const uint32_t f = freq[s];
    const uint32_t base = static_cast<uint32_t>(s) << 24 | (f & 0xfffu);
    for (uint32_t j = 0; j < f && cum + j < kSlots; ++j) table[cum + j] = base | j << 12;
    cum += f;
  }
}

void Transpose(const uint8_t* in, size_t rows, size_t row_len, uint8_t* out) {
#if defined(KVC_RANS_WIDE_X86)
  if (rows % 16 == 0 && row_len % 16 == 0) {
    // 16 x 16 tiles. Interleaving the bytes of vectors i and i + 8 into vectors 2i and 2i + 1
    // rotates the 8-bit (vector, byte) index of every element left by one; four rounds swap the
    // vector and byte indices, which is the transpose.
    for (size_t c0 = 0; c0 < row_len; c0 += 16) {
      for (size_t r0 = 0; r0 < rows; r0 += 16) {
        __m128i m[16], t[16];
        for (int i = 0; i < 16; ++i) {
          m[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + (c0 + i) * rows + r0));
        }
        for (int round = 0; round < 4; ++round) {
          for (int i = 0; i < 8; ++i) {
            t[2 * i] = _mm_unpacklo_epi8(m[i], m[i + 8]);
            t[2 * i + 1] = _mm_unpackhi_epi8(m[i], m[i + 8]);
          }
          std::memcpy(m, t, sizeof(m));
        }
        for (int j = 0; j < 16; ++j) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (r0 + j) * row_len + c0), m[j]);
        }
      }
    }
    return;
  }
#endif
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < row_len; ++c) out[r * row_len + c] = in[c * rows + r];
  }
}

#if defined(KVC_RANS_WIDE_X86)
namespace {

// kRefill[m][j]: for renormalisation mask m (bit j: lane j needs a word), the index among the
// 8 words at the read position of lane j's word: the lanes below it that also need one.
struct alignas(32) RefillRow {
  uint32_t idx[8];
};
constexpr std::array<RefillRow, 256> MakeRefillTable() {
  std::array<RefillRow, 256> t{};
  for (uint32_t m = 0; m < 256; ++m) {
    uint32_t below = 0;
    for (int j = 0; j < 8; ++j) {
      t[m].idx[j] = (m >> j) & 1u ? below : 0;
      below += (m >> j) & 1u;
    }
  }
  return t;
}
alignas(32) constexpr std::array<RefillRow, 256> kRefill = MakeRefillTable();

// One decode step of 8 lanes: x -> the state after its symbol (renormalised); returns the
// symbols (one per 32-bit lane). Bit for bit the scalar DecodeStep + Refill of rans.cc.
__attribute__((target("avx2,popcnt"), always_inline)) inline __m256i Step(
    __m256i& x, const uint32_t* table, const uint8_t*& p) {
  const __m256i low12 = _mm256_set1_epi32(0xfff);
  const __m256i slot = _mm256_and_si256(x, low12);
  const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(table), slot, 4);
  const __m256i freq = _mm256_and_si256(e, low12);
  const __m256i bias = _mm256_and_si256(_mm256_srli_epi32(e, 12), low12);
  x = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srli_epi32(x, 12)), bias);
  const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(x, 16), _mm256_setzero_si256());
  const int mask = _mm256_movemask_ps(_mm256_castsi256_ps(need));
  const __m256i words =
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i w = _mm256_permutevar8x32_epi32(
      words, _mm256_load_si256(reinterpret_cast<const __m256i*>(kRefill[mask].idx)));
  x = _mm256_blendv_epi8(x, _mm256_or_si256(_mm256_slli_epi32(x, 16), w), need);
  p += 2 * _mm_popcnt_u32(static_cast<unsigned>(mask));
  return _mm256_srli_epi32(e, 24);
}

__attribute__((target("avx2,popcnt"))) const uint8_t* DecodeRunAvx2(const uint32_t* table,
                                                                   uint8_t* out, size_t units,
                                                                   const uint8_t* p,
                                                                   uint32_t* states) {
  __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states));
  __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 8));
  __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 16));
  __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 24));
  // packus leaves the 4-byte quarters of the four symbol vectors in the order 0,2,4,6,1,3,5,7.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; units > 0; --units, out += kLanes) {
    const __m256i s0 = Step(x0, table, p);
    const __m256i s1 = Step(x1, table, p);
    const __m256i s2 = Step(x2, table, p);
    const __m256i s3 = Step(x3, table, p);
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(s0, s1),
                                              _mm256_packus_epi32(s2, s3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm256_permutevar8x32_epi32(bytes, order));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states), x0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 8), x1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 16), x2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 24), x3);
  return p;
}

}  // namespace
#endif

namespace {
std::atomic<bool> g_disabled{false};
}  // namespace

void DisableForTesting(bool disabled) { g_disabled = disabled; }

bool Available() {
#if defined(KVC_RANS_WIDE_X86)
  return HaveAvx2() && !g_disabled;
#else
  return false;
#endif
}

const uint8_t* DecodeRun(const uint32_t* table, uint8_t* out, size_t units, const uint8_t* p,
                         uint32_t* states) {
#if defined(KVC_RANS_WIDE_X86)
  return DecodeRunAvx2(table, out, units, p, states);
#else
  (void)table, (void)out, (void)units, (void)states;
  return p;
#endif
}

}  // namespace kvcodec::rans_wide
