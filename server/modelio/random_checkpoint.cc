// Compiled with -ffp-contract=off (see CMakeLists.txt): a fused multiply-add would round
// differently from the separate multiply and add, and the point of this file is that the
// same seed gives the same bits with any compiler and target.
#include "server/modelio/random_checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/modelio/checkpoint_layout.h"
#include "server/modelio/file_util.h"
#include "server/modelio/safetensors_writer.h"
#include "server/modelio/status_macros.h"

namespace kvwire::modelio {
namespace {

constexpr double kStd = 0.02;  // transformers' initializer_range for these families

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Natural log for x in (0, 1], using only operations IEEE 754 specifies exactly (frexp,
// +, -, *, /), so every platform gets the same bits. x = m * 2^e with m in [sqrt(1/2),
// sqrt(2)); ln(m) = 2 atanh(z), z = (m-1)/(m+1), |z| < 0.172, whose odd power series has
// converged to double precision after 13 terms.
double PortableLog(double x) {
  int e = 0;
  double m = std::frexp(x, &e);  // m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  const double z = (m - 1.0) / (m + 1.0);
  const double z2 = z * z;
  double term = z;
  double sum = 0.0;
  for (int k = 0; k < 13; ++k) {
    sum += term / static_cast<double>(2 * k + 1);
    term *= z2;
  }
  return 2.0 * sum + static_cast<double>(e) * 0.69314718055994530942;
}

// FNV-1a: a fixed, documented hash, so a tensor's stream never depends on std::hash.
uint64_t HashName(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

bool IsNormWeight(std::string_view name) {
  return absl::EndsWith(internal::AV(name), "layernorm.weight") || name == "model.norm.weight";
}

void StoreValue(float v, Dtype dtype, uint8_t* out) {
  switch (dtype) {
    case Dtype::kF32:
      std::memcpy(out, &v, 4);
      return;
    case Dtype::kF16: {
      const uint16_t h = FloatToHalf(v);
      std::memcpy(out, &h, 2);
      return;
    }
    default: {  // kBF16; other dtypes are rejected before generation starts
      const uint16_t h = FloatToBF16(v);
      std::memcpy(out, &h, 2);
      return;
    }
  }
}

}  // namespace

DeterministicNormal::DeterministicNormal(uint64_t seed) {
  uint64_t state = seed;
  for (uint64_t& word : s_) word = SplitMix64(state);
}

uint64_t DeterministicNormal::NextBits() {  // xoshiro256**
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double DeterministicNormal::Uniform() {
  // 53 random bits -> [0, 1) exactly, then to [-1, 1) (exact: scaling by 2 and
  // subtracting 1 are exact for these values).
  return static_cast<double>(NextBits() >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

double DeterministicNormal::Next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Marsaglia polar: needs no trigonometry, only the log above and sqrt (which IEEE
  // requires to be correctly rounded).
  double u, v, s;
  do {
    u = Uniform();
    v = Uniform();
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  const double f = std::sqrt(-2.0 * PortableLog(s) / s);
  spare_ = v * f;
  has_spare_ = true;
  return u * f;
}

absl::Status WriteRandomCheckpoint(const std::string& dir, const ModelConfig& config,
                                   uint64_t seed, Dtype dtype, size_t max_shard_bytes) {
  MODELIO_RETURN_IF_ERROR(ValidateModelConfig(config));
  if (dtype != Dtype::kF32 && dtype != Dtype::kF16 && dtype != Dtype::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "random checkpoints are F32, F16 or BF16; got ", internal::AV(DtypeName(dtype))));
  }
  ModelConfig written = config;
  written.torch_dtype = std::string(TorchDtypeName(dtype));

  std::vector<TensorSpec> specs;
  for (auto& [name, shape] : ExpectedTensorShapes(written)) {
    specs.push_back({std::move(name), dtype, std::move(shape)});
  }
  const size_t elem = DtypeSize(dtype);
  TensorFiller fill = [&](size_t index, std::span<uint8_t> out) {
    const TensorSpec& spec = specs[index];
    uint64_t mix = seed ^ HashName(spec.name);
    DeterministicNormal rng(SplitMix64(mix));
    const double base = IsNormWeight(spec.name) ? 1.0 : 0.0;
    const size_t n = out.size() / elem;
    for (size_t i = 0; i < n; ++i) {
      const float value = static_cast<float>(base + kStd * rng.Next());
      StoreValue(value, dtype, out.data() + i * elem);
    }
    return absl::OkStatus();
  };

  // Weights first, config last: a directory with a config.json is a complete checkpoint.
  MODELIO_RETURN_IF_ERROR(WriteShardedCheckpoint(dir, specs, fill, max_shard_bytes));
  return internal::WriteFileAtomically(std::filesystem::path(dir) / "config.json",
                                       ToJson(written));
}

}  // namespace kvwire::modelio
