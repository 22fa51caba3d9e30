#include "server/shadow/sampler.h"

#include <algorithm>
#include <cmath>

namespace kvwire::shadow {
namespace {

double ClampRate(double rate) { return std::isnan(rate) ? 0.0 : std::clamp(rate, 0.0, 1.0); }

uint64_t SeedOrRandom(uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

RequestSampler::RequestSampler(double rate, uint64_t seed)
    : rate_(ClampRate(rate)), rng_(SeedOrRandom(seed)) {}

bool RequestSampler::Sample() {
  if (rate_ <= 0) return false;
  if (rate_ >= 1) return true;
  std::lock_guard<std::mutex> lock(mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < rate_;
}

}  // namespace kvwire::shadow
