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

void BuildEncodeTable(const uint16_t* freq, int alphabet, EncodeTable* table) {
  uint32_t cum = 0;
  for (int s = 0; s < 256; ++s) {
    const uint32_t f = s < alphabet ? freq[s] : 0;
    table->freq_cum[s] = f | cum << 16;
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

// kCompact[m]: the permutation that moves the lanes set in m, in ascending order, to the top of
// the vector (positions 8 - popcount(m) .. 7), where one store puts their words in the order the
// scalar encoder writes them.
constexpr std::array<RefillRow, 256> MakeCompactTable() {
  std::array<RefillRow, 256> t{};
  for (uint32_t m = 0; m < 256; ++m) {
    int count = 0;
    for (int j = 0; j < 8; ++j) count += (m >> j) & 1u;
    int at = 8 - count;
    for (int j = 0; j < 8; ++j) {
      if ((m >> j) & 1u) t[m].idx[at++] = static_cast<uint32_t>(j);
    }
  }
  return t;
}
alignas(32) constexpr std::array<RefillRow, 256> kCompact = MakeCompactTable();

// One encode step of 8 lanes, bit for bit the scalar EncodeStep of rans.cc: renormalise (emit
// the low 16 bits of the states above freq << 20, below `out`), then x = (x / freq) * M +
// x % freq + cum. The quotient comes from a float estimate (relative error < 2^-20, so within
// 0.5 of x / freq < 2^20) corrected by one step either way.
__attribute__((target("avx2,popcnt"), always_inline)) inline void EncodeStepAvx2(
    __m256i& x, const EncodeTable& t, const uint8_t* sym, uint8_t*& out) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i low16 = _mm256_set1_epi32(0xffff);
  const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sym)));
  const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(t.freq_cum), idx, 4);
  const __m256i freq = _mm256_and_si256(e, low16);
  // 1 / freq: the 12-bit estimate and one Newton step (relative error < 2^-21), cheaper than
  // a second gather.
  const __m256 freq_f = _mm256_cvtepi32_ps(freq);
  __m256 rcp = _mm256_rcp_ps(freq_f);
  rcp = _mm256_mul_ps(rcp, _mm256_sub_ps(_mm256_set1_ps(2.0f), _mm256_mul_ps(freq_f, rcp)));
  const __m256i cum = _mm256_srli_epi32(e, 16);
  // freq 4096 wraps the limit to 2^32 - 1: a lone symbol never renormalises.
  const __m256i limit = _mm256_sub_epi32(_mm256_slli_epi32(freq, 20), one);
  const __m256i need = _mm256_cmpgt_epi32(_mm256_xor_si256(x, sign), _mm256_xor_si256(limit, sign));
  const int mask = _mm256_movemask_ps(_mm256_castsi256_ps(need));
  const __m256i w = _mm256_permutevar8x32_epi32(
      _mm256_and_si256(x, low16),
      _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompact[mask].idx)));
  const __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(w, w), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out - 16), _mm256_castsi256_si128(words));
  out -= 2 * _mm_popcnt_u32(static_cast<unsigned>(mask));
  x = _mm256_blendv_epi8(x, _mm256_srli_epi32(x, 16), need);
  // float(x) for x up to 2^32 - 1: the signed conversion, plus 2^32 where the top bit is set.
  __m256 xf = _mm256_cvtepi32_ps(x);
  xf = _mm256_add_ps(xf, _mm256_and_ps(_mm256_castsi256_ps(_mm256_srai_epi32(x, 31)),
                                       _mm256_set1_ps(4294967296.0f)));
  __m256i q = _mm256_cvttps_epi32(_mm256_mul_ps(xf, rcp));
  __m256i r = _mm256_sub_epi32(x, _mm256_mullo_epi32(q, freq));  // in [-freq, 2 freq)
  const __m256i below = _mm256_cmpgt_epi32(_mm256_setzero_si256(), r);
  q = _mm256_add_epi32(q, below);
  r = _mm256_add_epi32(r, _mm256_and_si256(below, freq));
  const __m256i above = _mm256_cmpgt_epi32(r, _mm256_sub_epi32(freq, one));
  q = _mm256_sub_epi32(q, above);
  r = _mm256_sub_epi32(r, _mm256_and_si256(above, freq));
  x = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(q, 12), r), cum);
}

__attribute__((target("avx2,popcnt"))) uint8_t* EncodeRunAvx2(const EncodeTable& t,
                                                             const uint8_t* sym, size_t units,
                                                             uint8_t* out, uint32_t* states) {
  __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states));
  __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 8));
  __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 16));
  __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 24));
  for (size_t u = units; u-- > 0;) {
    const uint8_t* s = sym + kLanes * u;
    EncodeStepAvx2(x3, t, s + 24, out);
    EncodeStepAvx2(x2, t, s + 16, out);
    EncodeStepAvx2(x1, t, s + 8, out);
    EncodeStepAvx2(x0, t, s, out);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states), x0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 8), x1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 16), x2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 24), x3);
  return out;
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

uint8_t* EncodeRun(const EncodeTable& table, const uint8_t* sym, size_t units, uint8_t* out,
                   uint32_t* states) {
#if defined(KVC_RANS_WIDE_X86)
  return EncodeRunAvx2(table, sym, units, out, states);
#else
  (void)table, (void)sym, (void)units, (void)states;
  return out;
#endif
}

}  // namespace kvcodec::rans_wide
