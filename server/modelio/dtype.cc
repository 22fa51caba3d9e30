#include "server/modelio/dtype.h"

#include <array>

namespace kvwire::modelio {
namespace {

struct DtypeInfo {
  Dtype dtype;
  std::string_view name;
  size_t size;
};

// Indexed by the enum value; the static_assert below keeps the two in step.
constexpr std::array<DtypeInfo, 15> kDtypes = {{
    {Dtype::kBool, "BOOL", 1},
    {Dtype::kU8, "U8", 1},
    {Dtype::kI8, "I8", 1},
    {Dtype::kF8E4M3, "F8_E4M3", 1},
    {Dtype::kF8E5M2, "F8_E5M2", 1},
    {Dtype::kI16, "I16", 2},
    {Dtype::kU16, "U16", 2},
    {Dtype::kF16, "F16", 2},
    {Dtype::kBF16, "BF16", 2},
    {Dtype::kI32, "I32", 4},
    {Dtype::kU32, "U32", 4},
    {Dtype::kF32, "F32", 4},
    {Dtype::kF64, "F64", 8},
    {Dtype::kI64, "I64", 8},
    {Dtype::kU64, "U64", 8},
}};

constexpr bool TableMatchesEnum() {
  for (size_t i = 0; i < kDtypes.size(); ++i) {
    if (static_cast<size_t>(kDtypes[i].dtype) != i) return false;
  }
  return true;
}
static_assert(TableMatchesEnum(), "kDtypes must be in enum order");

const DtypeInfo& Info(Dtype dtype) { return kDtypes[static_cast<size_t>(dtype)]; }

}  // namespace

std::string_view DtypeName(Dtype dtype) { return Info(dtype).name; }

size_t DtypeSize(Dtype dtype) { return Info(dtype).size; }

std::optional<Dtype> ParseDtype(std::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

bool IsFloatDtype(Dtype dtype) {
  return dtype == Dtype::kF16 || dtype == Dtype::kBF16 || dtype == Dtype::kF32 ||
         dtype == Dtype::kF64;
}

std::string_view TorchDtypeName(Dtype dtype) {
  switch (dtype) {
    case Dtype::kF16:
      return "float16";
    case Dtype::kBF16:
      return "bfloat16";
    case Dtype::kF32:
      return "float32";
    case Dtype::kF64:
      return "float64";
    default:
      return "";
  }
}

float HalfToFloat(uint16_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x8000u) << 16;
  const uint32_t exponent = (v >> 10) & 0x1fu;
  const uint32_t mantissa = v & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: the value is mantissa * 2^-24, which float32 holds exactly, so
    // one exact multiply replaces the usual normalisation loop.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
    return sign ? -magnitude : magnitude;
  }
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;

  if (magnitude > 0x7f800000u) return sign | 0x7e00u;  // NaN -> quiet NaN
  // 65520 (0x477ff000) is the midpoint between the largest half, 65504, and 2^16; the
  // tie goes to the even neighbour, which is infinity. Everything from there up overflows.
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;

  if (magnitude >= 0x38800000u) {  // >= 2^-14: result is a normal half
    // Rebias the exponent in place (127 -> 15), then round off the 13 low mantissa bits.
    // A rounding carry into the exponent field is the correct result.
    const uint32_t rebased = magnitude - ((127u - 15u) << 23);
    const uint32_t lsb = (rebased >> 13) & 1u;
    return sign | static_cast<uint16_t>((rebased + 0xfffu + lsb) >> 13);
  }

  // Subnormal half (or zero): the result counts units of 2^-24. With m the 24-bit
  // significand and e the biased exponent, value / 2^-24 = m * 2^(e - 126), so shift m
  // right by 126 - e (>= 14 here) with round-to-nearest-even.
  const uint32_t exponent = magnitude >> 23;
  const uint32_t shift = 126u - exponent;
  if (shift > 24) return sign;  // below 2^-25 even the largest m rounds to zero
  const uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
  uint32_t units = significand >> shift;
  const uint32_t remainder = significand & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (remainder > half || (remainder == half && (units & 1u))) ++units;
  // units may reach 0x400, which is exactly the encoding of the smallest normal.
  return sign | static_cast<uint16_t>(units);
}

}  // namespace kvwire::modelio
