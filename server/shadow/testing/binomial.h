// Acceptance intervals for sampling-rate tests.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

namespace kvwire::shadow::testing {

// Smallest k with P(X <= k) >= tail and largest k with P(X >= k) >= tail, X ~ Binomial(n, p):
// the two-sided acceptance interval at level 2 * tail.
inline std::pair<int, int> BinomialBounds(int n, double p, double tail) {
  std::vector<double> pmf(n + 1);
  for (int k = 0; k <= n; ++k) {
    pmf[k] = std::exp(std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0) +
                      k * std::log(p) + (n - k) * std::log1p(-p));
  }
  int lo = 0;
  for (double c = pmf[0]; c < tail; c += pmf[++lo]) {
  }
  int hi = n;
  for (double c = pmf[n]; c < tail; c += pmf[--hi]) {
  }
  return {lo, hi};
}

}  // namespace kvwire::shadow::testing
