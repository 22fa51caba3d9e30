#include "kvcodec/synthetic.h"

#include <cmath>

#include "kvcodec/dtype.h"

namespace kvcodec {
namespace {

// splitmix64: tiny, fast and identical on every platform (std distributions are not).
struct Rng {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform() { return (Next() >> 11) * (1.0 / 9007199254740992.0); }
  // Box-Muller; the spare value is kept for the next call.
  double Normal() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    const double u = std::max(Uniform(), 1e-300), v = Uniform();
    const double r = std::sqrt(-2.0 * std::log(u));
    spare = r * std::sin(2 * M_PI * v);
    has_spare = true;
    return r * std::cos(2 * M_PI * v);
  }
  bool has_spare = false;
  double spare = 0;
};

}  // namespace

std::vector<LayerView> SyntheticCache::views() const {
  std::vector<LayerView> v(keys.size());
  for (size_t l = 0; l < keys.size(); ++l) v[l] = {keys[l].data(), values[l].data()};
  return v;
}

SyntheticCache MakeSyntheticCache(const CacheShape& shape, uint64_t seed) {
  SyntheticCache c;
  c.shape = shape;
  const int d = shape.head_dim, half = d / 2, t_count = shape.num_tokens;
  const size_t per_layer = static_cast<size_t>(shape.num_kv_heads) * t_count * d;
  const size_t esize = DTypeSize(shape.dtype);
  c.positions.resize(t_count);
  for (int t = 0; t < t_count; ++t) c.positions[t] = t;
  std::vector<float> k(per_layer), v(per_layer);
  std::vector<float> mean(d), scale(d), vscale(d), prev(d);
  for (int l = 0; l < shape.num_layers; ++l) {
    Rng rng{seed * 1000003 + l};
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      for (int ch = 0; ch < d; ++ch) {
        mean[ch] = static_cast<float>(0.3 * rng.Normal());
        // About 3% of key channels are outliers, 5-15x larger than the rest.
        scale[ch] = rng.Uniform() < 0.03 ? static_cast<float>(5 + 10 * rng.Uniform())
                                         : static_cast<float>(0.5 + 0.5 * rng.Uniform());
        vscale[ch] = static_cast<float>(0.3 + 0.7 * rng.Uniform());
        prev[ch] = 0;
      }
      for (int t = 0; t < t_count; ++t) {
        float* kr = &k[(static_cast<size_t>(h) * t_count + t) * d];
        float* vr = &v[(static_cast<size_t>(h) * t_count + t) * d];
        for (int ch = 0; ch < d; ++ch) {
          kr[ch] = mean[ch] * scale[ch] + 0.5f * scale[ch] * static_cast<float>(rng.Normal());
          // Values drift slowly (AR(1)), which is what delta coding hopes to exploit.
          prev[ch] = 0.3f * prev[ch] + vscale[ch] * static_cast<float>(rng.Normal());
          vr[ch] = prev[ch];
        }
        // RoPE: rotate channel pairs (i, i + d/2) by position-dependent angles.
        for (int i = 0; i < half; ++i) {
          const double theta = t * std::pow(10000.0, -2.0 * i / d);
          const float cs = static_cast<float>(std::cos(theta)), sn = static_cast<float>(std::sin(theta));
          const float a = kr[i], b = kr[i + half];
          kr[i] = a * cs - b * sn;
          kr[i + half] = a * sn + b * cs;
        }
      }
    }
    c.keys.emplace_back(per_layer * esize);
    c.values.emplace_back(per_layer * esize);
    FromFloat(k.data(), per_layer, shape.dtype, c.keys.back().data());
    FromFloat(v.data(), per_layer, shape.dtype, c.values.back().data());
  }
  return c;
}

ImportanceScores MakeSyntheticScores(const CacheShape& shape, uint64_t seed) {
  ImportanceScores s;
  s.num_layers = shape.num_layers;
  s.num_kv_heads = shape.num_kv_heads;
  s.num_tokens = shape.num_tokens;
  s.values.resize(static_cast<size_t>(shape.num_layers) * shape.num_kv_heads * shape.num_tokens);
  Rng rng{seed ^ 0x5c0e5ull};
  for (size_t i = 0; i < s.values.size(); ++i) {
    // Heavy-tailed: most tokens get little attention, a few get a lot.
    const double u = rng.Uniform();
    s.values[i] = static_cast<float>(0.01 * u + (u > 0.95 ? 1.0 * rng.Uniform() : 0.0));
  }
  for (int l = 0; l < shape.num_layers; ++l) {
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      float* row = &s.values[(static_cast<size_t>(l) * shape.num_kv_heads + h) * shape.num_tokens];
      for (int t = 0; t < std::min(4, shape.num_tokens); ++t) row[t] += 2.0f;  // attention sinks
    }
  }
  return s;
}

}  // namespace kvcodec
