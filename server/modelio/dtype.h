// Element types of the safetensors format and scalar float conversions.
//
// modelio deliberately has its own copy of the 16-bit float conversions rather than
// depending on kvcodec: checkpoint I/O must build and be fuzzed with nothing but absl
// and nlohmann_json.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace kvwire::modelio {

// Every fixed-width element type the safetensors specification defines. Sub-byte types
// (F4, F6_*) are not supported: their byte size is not an integer, and no model this
// project loads uses them.
enum class Dtype : uint8_t {
  kBool,
  kU8,
  kI8,
  kF8E4M3,
  kF8E5M2,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

// The name safetensors headers use ("F32", "BF16", "F8_E4M3", ...).
std::string_view DtypeName(Dtype dtype);

// Inverse of DtypeName; nullopt for a name that is not a supported dtype. Case-sensitive,
// as the format is.
std::optional<Dtype> ParseDtype(std::string_view name);

// Bytes per element (1, 2, 4 or 8).
size_t DtypeSize(Dtype dtype);

// True for F16, BF16, F32, F64 (the types model weights come in that we can convert).
bool IsFloatDtype(Dtype dtype);

// The `torch_dtype` string a config.json uses for the floating types ("float32",
// "float16", "bfloat16", "float64"); empty for the rest.
std::string_view TorchDtypeName(Dtype dtype);

// ---- Scalar conversions. All round to nearest, ties to even, like torch's .to(). ----

inline float BF16ToFloat(uint16_t v) {
  // bf16 is the top half of a float32, so widening is exact.
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

inline uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    // NaN: truncating could clear every mantissa bit left and produce infinity, so
    // force a quiet-NaN bit.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Adding 0x7fff rounds up anything above the halfway point; the extra lsb term makes
  // an exact tie round up only when the kept part is odd (ties to even). A carry out of
  // the mantissa correctly bumps the exponent, up to infinity.
  const uint32_t lsb = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7fffu + lsb) >> 16);
}

float HalfToFloat(uint16_t v);
uint16_t FloatToHalf(float f);

}  // namespace kvwire::modelio
