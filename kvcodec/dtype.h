// Scalar conversions between float32 and the 16-bit float formats a KV cache comes in.
// Internal to kvcodec.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "kvcodec/kvcodec.h"

namespace kvcodec {

#if defined(__x86_64__) && defined(__GNUC__)
// What this CPU runs, for kernels chosen at run time (the build targets baseline x86-64).
inline bool HaveSsse3() {
  static const bool have = __builtin_cpu_supports("ssse3");
  return have;
}
inline bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}
#endif

inline float BF16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// HalfToFloat for finite halves (checked by the caller), without the subnormal loop.
inline float FiniteHalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const float mag =
      (h & 0x7c00u) == 0
          ? static_cast<float>(h & 0x3ffu) * 0x1p-24f
          : std::bit_cast<float>((static_cast<uint32_t>(h & 0x7fffu) << 13) + 0x38000000u);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | sign);
}

// Round to nearest even; overflow saturates to infinity as IEEE does.
inline uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;       // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;      // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {                            // below the smallest normal half
    if (abs < 0x33000000u) return sign;               // rounds to zero
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;                 // 14..24
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return sign | static_cast<uint16_t>(r >> 13);
}

// Reads element i of a buffer of `dtype` as float.
inline float LoadAsFloat(const void* data, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kFloat32: {
      float f;
      std::memcpy(&f, static_cast<const char*>(data) + 4 * i, 4);
      return f;
    }
    case DType::kFloat16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(data) + 2 * i, 2);
      return HalfToFloat(h);
    }
    case DType::kBFloat16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(data) + 2 * i, 2);
      return BF16ToFloat(h);
    }
  }
  return 0;
}

inline void StoreFromFloat(void* data, DType dtype, size_t i, float f) {
  switch (dtype) {
    case DType::kFloat32:
      std::memcpy(static_cast<char*>(data) + 4 * i, &f, 4);
      return;
    case DType::kFloat16: {
      const uint16_t h = FloatToHalf(f);
      std::memcpy(static_cast<char*>(data) + 2 * i, &h, 2);
      return;
    }
    case DType::kBFloat16: {
      const uint16_t h = FloatToBF16(f);
      std::memcpy(static_cast<char*>(data) + 2 * i, &h, 2);
      return;
    }
  }
}

// Converts n elements of `dtype` at `src` to float.
void ToFloat(const void* src, DType dtype, size_t n, float* dst);
// Converts n floats to `dtype`.
void FromFloat(const float* src, size_t n, DType dtype, void* dst);

}  // namespace kvcodec
