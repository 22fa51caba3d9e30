#include "server/shadow/sampler.h"
#include "server/shadow/testing/binomial.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace kvwire::shadow {
namespace {

using ::kvwire::shadow::testing::BinomialBounds;

TEST(RequestSamplerTest, BinomialBoundsAreTheTextbookOnes) {
  // n = 200, p = 0.25: mean 50, sd 6.1; the 1e-6 tails sit about 4.9 sd out.
  const auto [lo, hi] = BinomialBounds(200, 0.25, 1e-6);
  EXPECT_GE(lo, 18);
  EXPECT_LE(lo, 24);
  EXPECT_GE(hi, 78);
  EXPECT_LE(hi, 84);
}

TEST(RequestSamplerTest, RateIsHonouredWithinBinomialBoundsForManySeeds) {
  const auto [lo, hi] = BinomialBounds(200, 0.25, 1e-6);
  double total = 0;
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    RequestSampler sampler(0.25, seed);
    int sampled = 0;
    for (int i = 0; i < 200; ++i) sampled += sampler.Sample() ? 1 : 0;
    EXPECT_GE(sampled, lo) << "seed " << seed;
    EXPECT_LE(sampled, hi) << "seed " << seed;
    total += sampled;
  }
  // 10000 draws together: within 1e-6 bounds of Binomial(10000, 0.25) (mean 2500, sd 43).
  const auto [tlo, thi] = BinomialBounds(10000, 0.25, 1e-6);
  EXPECT_GE(total, tlo);
  EXPECT_LE(total, thi);
}

TEST(RequestSamplerTest, EdgesAndClamping) {
  RequestSampler never(0, 3), always(1, 3), below(-2, 3), above(7, 3),
      nan(std::numeric_limits<double>::quiet_NaN(), 3);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_FALSE(never.Sample());
    EXPECT_TRUE(always.Sample());
    EXPECT_FALSE(below.Sample());
    EXPECT_TRUE(above.Sample());
    EXPECT_FALSE(nan.Sample());
  }
  EXPECT_EQ(below.rate(), 0);
  EXPECT_EQ(above.rate(), 1);
  EXPECT_EQ(nan.rate(), 0);
}

TEST(RequestSamplerTest, SeedsReproduceAndRandomSeedsDiffer) {
  RequestSampler a(0.5, 42), b(0.5, 42), c(0.5, 0), d(0.5, 0);
  std::string sa, sb, sc, sd;
  for (int i = 0; i < 128; ++i) {
    sa += a.Sample() ? '1' : '0';
    sb += b.Sample() ? '1' : '0';
    sc += c.Sample() ? '1' : '0';
    sd += d.Sample() ? '1' : '0';
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sc, sd);  // equal only with probability 2^-128
}

}  // namespace
}  // namespace kvwire::shadow
