// Tests for the low-rank (truncated SVD) section coding.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kvcodec/dtype.h"
#include "kvcodec/quant.h"

namespace kvcodec {
namespace {

SectionShape LrShape(int head_dim, std::vector<int> rows) {
  SectionShape s;
  s.head_dim = head_dim;
  s.rows_per_head = std::move(rows);
  return s;
}

std::vector<float> RandomNormal(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Relative Frobenius error of the round trip at `rank`.
double RoundTripError(int rank, const SectionShape& shape, const std::vector<float>& x,
                      std::vector<float>* y_out = nullptr) {
  auto lr = LowRankEncode(rank, shape, x);
  EXPECT_TRUE(lr.ok()) << lr.status();
  if (!lr.ok()) return 1e9;
  EXPECT_EQ(lr->factors.size(), NumLowRankFactors(rank, shape));
  std::vector<float> y(x.size());
  EXPECT_TRUE(LowRankDecode(rank, shape, *lr, y).ok());
  double e = 0, n = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (x[i] - y[i]) * double(x[i] - y[i]);
    n += double(x[i]) * x[i];
  }
  if (y_out) *y_out = y;
  return std::sqrt(e / n);
}

TEST(LowRank, EffectiveRankAndFactorCount) {
  EXPECT_EQ(EffectiveRank(8, 100, 64), 8);
  EXPECT_EQ(EffectiveRank(100, 50, 16), 16);  // rank > d clamps to d
  EXPECT_EQ(EffectiveRank(10, 5, 16), 5);     // and to the number of rows
  EXPECT_EQ(EffectiveRank(10, 0, 16), 0);
  EXPECT_EQ(EffectiveRank(0, 10, 16), 0);
  const SectionShape shape = LrShape(16, {50, 5, 0});
  EXPECT_EQ(NumLowRankFactors(100, shape), 16u * (50 + 16) + 5u * (5 + 16));
  EXPECT_EQ(NumLowRankFactors(4, shape), 4u * (50 + 16) + 4u * (5 + 16));
}

TEST(LowRank, Rank2MatrixIsReconstructedAtRank2AndAbove) {
  const int rows = 60, d = 32;
  const SectionShape shape = LrShape(d, {rows});
  const std::vector<float> u1 = RandomNormal(rows, 1), u2 = RandomNormal(rows, 2);
  const std::vector<float> v1 = RandomNormal(d, 3), v2 = RandomNormal(d, 4);
  std::vector<float> x(rows * d);
  float max_abs = 0;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < d; ++c) {
      x[r * d + c] = 3.0f * u1[r] * v1[c] + 0.7f * u2[r] * v2[c];
      max_abs = std::max(max_abs, std::fabs(x[r * d + c]));
    }
  }
  for (int rank : {2, 3, 8, 32, 1000}) {
    std::vector<float> y;
    const double err = RoundTripError(rank, shape, x, &y);
    EXPECT_LT(err, 3e-3) << rank;  // half-float factors: ~1e-3 relative
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(y[i], x[i], 5e-3f * max_abs) << rank << " " << i;
    }
  }
  EXPECT_GT(RoundTripError(1, shape, x), 0.05);  // one component is not enough
}

TEST(LowRank, ErrorDecreasesWithRank) {
  const int d = 32;
  const SectionShape shape = LrShape(d, {200, 17});
  // Decaying spectrum, like real keys: column c scaled by 1 / (1 + c / 4).
  std::vector<float> x = RandomNormal(shape.num_elements(), 9);
  for (size_t i = 0; i < x.size(); ++i) x[i] /= 1.0f + static_cast<float>(i % d) / 4.0f;
  double prev = 1e9;
  for (int rank : {1, 2, 4, 8, 16, 24, 32}) {
    const double err = RoundTripError(rank, shape, x);
    EXPECT_LT(err, prev) << rank;
    prev = err;
  }
  EXPECT_LT(prev, 2e-3);  // full rank: only the half rounding remains
}

TEST(LowRank, DeterministicAndSignConvention) {
  const SectionShape shape = LrShape(16, {40, 3});
  const std::vector<float> x = RandomNormal(shape.num_elements(), 5);
  auto a = LowRankEncode(4, shape, x);
  auto b = LowRankEncode(4, shape, x);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->factors, b->factors);
  // B of head 0 starts after A [40, 4]: in each column the largest-magnitude entry is positive.
  const uint16_t* bmat = a->factors.data() + 40 * 4;
  for (int j = 0; j < 4; ++j) {
    float best = 0;
    for (int c = 0; c < 16; ++c) {
      const float v = HalfToFloat(bmat[c * 4 + j]);
      if (std::fabs(v) > std::fabs(best)) best = v;
    }
    EXPECT_GT(best, 0.0f) << j;
  }
}

TEST(LowRank, ZeroAndEmptyHeads) {
  const SectionShape shape = LrShape(8, {0, 6, 1});
  std::vector<float> x(shape.num_elements(), 0.0f);
  for (int c = 0; c < 8; ++c) x[6 * 8 + c] = static_cast<float>(c) - 3.5f;  // the one-row head
  std::vector<float> y;
  auto lr = LowRankEncode(3, shape, x);
  ASSERT_TRUE(lr.ok());
  y.resize(x.size());
  ASSERT_TRUE(LowRankDecode(3, shape, *lr, y).ok());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-2f) << i;
}

TEST(LowRank, RejectsBadInput) {
  const SectionShape shape = LrShape(8, {10});
  std::vector<float> x = RandomNormal(80, 6);
  EXPECT_EQ(LowRankEncode(0, shape, x).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LowRankEncode(2, shape, std::span<const float>(x).subspan(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LowRankEncode(2, LrShape(0, {10}), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bad = x;
  bad[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(LowRankEncode(2, shape, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad[7] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(LowRankEncode(2, shape, bad).status().code(), absl::StatusCode::kInvalidArgument);
  // Row norms beyond the half range cannot be stored in half factors.
  std::vector<float> huge(80, 60000.0f);
  EXPECT_EQ(LowRankEncode(2, shape, huge).status().code(), absl::StatusCode::kInvalidArgument);

  auto lr = LowRankEncode(2, shape, x);
  ASSERT_TRUE(lr.ok());
  std::vector<float> y(80);
  ASSERT_TRUE(LowRankDecode(2, shape, *lr, y).ok());
  LowRankSection b = *lr;
  b.factors.pop_back();
  EXPECT_EQ(LowRankDecode(2, shape, b, y).code(), absl::StatusCode::kInvalidArgument);
  b = *lr;
  b.factors.push_back(0);
  EXPECT_EQ(LowRankDecode(2, shape, b, y).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LowRankDecode(3, shape, *lr, y).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LowRankDecode(0, shape, *lr, y).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> small(79);
  EXPECT_EQ(LowRankDecode(2, shape, *lr, small).code(), absl::StatusCode::kInvalidArgument);
  b = *lr;
  b.factors[3] = 0x7e00;
  EXPECT_EQ(LowRankDecode(2, shape, b, y).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kvcodec
