// Which requests get a shadow pass: an independent draw per request with probability `rate`
// (the prefill node's --shadow-rate), so the sampled share of any stretch of traffic is
// Binomial(n, rate) and no traffic pattern can hide from it.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>

namespace kvwire::shadow {

class RequestSampler {
 public:
  // `rate` is clamped to [0, 1] (NaN counts as 0). `seed` 0 draws one from std::random_device,
  // so replicas do not sample the same requests; tests pass a fixed seed.
  explicit RequestSampler(double rate, uint64_t seed = 0);

  // True for a sampled request. Thread-safe. Rate 0 never samples and rate 1 always does,
  // whatever the generator says.
  bool Sample();
  double rate() const { return rate_; }

 private:
  const double rate_;
  std::mutex mu_;
  std::mt19937_64 rng_;
};

}  // namespace kvwire::shadow
