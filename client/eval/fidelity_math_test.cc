#include "client/eval/fidelity_math.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace kvwire::eval {
namespace {

TEST(FidelityMathTest, ArgmaxTakesTheFirstMaximum) {
  EXPECT_EQ(Argmax(std::vector<float>{0.5f, 2.0f, 2.0f, -1.0f}), 1);
  EXPECT_EQ(Argmax(std::vector<float>{3.0f}), 0);
}

TEST(FidelityMathTest, KlIsExactlyZeroForIdenticalLogits) {
  const std::vector<float> a = {0.1f, -3.0f, 7.25f, 1e-3f, 42.0f};
  EXPECT_EQ(KlDivergence(a, a), 0.0);
  // Shifting logits does not change the distribution.
  std::vector<float> shifted = a;
  for (float& x : shifted) x += 4.0f;
  EXPECT_NEAR(KlDivergence(a, shifted), 0.0, 1e-12);
}

TEST(FidelityMathTest, KlMatchesHandComputation) {
  // P = (0.5, 0.5), Q = softmax(0, ln 3) = (0.25, 0.75):
  // KL = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3).
  const std::vector<float> p = {0.0f, 0.0f};
  const std::vector<float> q = {0.0f, static_cast<float>(std::log(3.0))};
  EXPECT_NEAR(KlDivergence(p, q), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-7);
  EXPECT_GT(KlDivergence(q, p), 0.0);
}

TEST(FidelityMathTest, NegLogLikelihood) {
  const std::vector<float> logits = {0.0f, static_cast<float>(std::log(3.0))};
  EXPECT_NEAR(NegLogLikelihood(logits, 1), -std::log(0.75), 1e-7);
  EXPECT_NEAR(NegLogLikelihood(logits, 0), -std::log(0.25), 1e-7);
}

TEST(FidelityMathTest, SumsAgreementKlAndPerplexity) {
  FidelitySums s;
  EXPECT_TRUE(std::isnan(s.agreement()));
  EXPECT_TRUE(std::isnan(s.perplexity_candidate()));
  const std::vector<float> ref = {2.0f, 0.0f, 0.0f};
  const std::vector<float> same = {1.0f, 0.0f, 0.0f};   // same argmax
  const std::vector<float> other = {0.0f, 2.0f, 0.0f};  // different argmax
  s.AddStep(ref, same);
  s.AddStep(ref, other);
  s.AddStep(ref, ref);
  EXPECT_EQ(s.steps, 3);
  EXPECT_EQ(s.agreements, 2);
  EXPECT_NEAR(s.agreement(), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(s.mean_kl(), (KlDivergence(ref, same) + KlDivergence(ref, other)) / 3.0, 1e-12);
  // Uniform over 3 tokens: perplexity 3 for any token.
  const std::vector<float> uniform = {0.0f, 0.0f, 0.0f};
  s.AddToken(uniform, uniform, 2);
  s.AddToken(uniform, uniform, 0);
  EXPECT_NEAR(s.perplexity_reference(), 3.0, 1e-9);
  EXPECT_NEAR(s.perplexity_candidate(), 3.0, 1e-9);
  FidelitySums t;
  t.Merge(s);
  t.Merge(s);
  EXPECT_EQ(t.steps, 6);
  EXPECT_EQ(t.agreements, 4);
  EXPECT_EQ(t.nll_tokens, 4);
}

TEST(FidelityMathTest, RelativeError) {
  ErrorSums e;
  EXPECT_EQ(e.relative(), 0.0);
  e.Add(std::vector<float>{3.0f, 4.0f}, std::vector<float>{3.0f, 4.5f});
  EXPECT_NEAR(e.relative(), 0.5 / 5.0, 1e-9);
  ErrorSums z;
  z.Add(std::vector<float>{0.0f}, std::vector<float>{1.0f});
  EXPECT_TRUE(std::isnan(z.relative()));
}

TEST(FidelityMathTest, AttentionOutputIsCausalSoftmaxOfScaledScores) {
  // head_dim 4 (scale 1/2). Keys at positions 0, 1, 5; queries at 1 and 5.
  const int D = 4;
  const std::vector<float> q = {2, 0, 0, 0,   // query at position 1
                                0, 2, 0, 0};  // query at position 5
  const std::vector<float> k = {1, 0, 0, 0,  //
                                0, 1, 0, 0,  //
                                1, 1, 0, 0};
  const std::vector<float> v = {1, 0, 0, 0,  //
                                0, 1, 0, 0,  //
                                0, 0, 1, 0};
  const std::vector<int32_t> qpos = {1, 5}, kpos = {0, 1, 5};
  std::vector<float> out(2 * D);
  AttentionOutput(q, qpos, k, v, kpos, D, std::nullopt, out);
  // Query 1 sees keys 0 and 1 with scores 1 and 0.
  const double a = std::exp(1.0) / (std::exp(1.0) + 1.0);
  EXPECT_NEAR(out[0], a, 1e-6);
  EXPECT_NEAR(out[1], 1 - a, 1e-6);
  EXPECT_NEAR(out[2], 0.0, 1e-7);
  // Query 5 sees all three keys with scores 0, 1, 1.
  const double z = 1 + 2 * std::exp(1.0);
  EXPECT_NEAR(out[4], 1 / z, 1e-6);
  EXPECT_NEAR(out[5], std::exp(1.0) / z, 1e-6);
  EXPECT_NEAR(out[6], std::exp(1.0) / z, 1e-6);
  // A sliding window of 2 hides keys 0 and 1 from query 5, and key 0 from nothing else.
  AttentionOutput(q, qpos, k, v, kpos, D, 2, out);
  EXPECT_NEAR(out[0], a, 1e-6);
  EXPECT_NEAR(out[6], 1.0, 1e-6);
  EXPECT_NEAR(out[4], 0.0, 1e-7);
  // A query that sees nothing gets zeros.
  const std::vector<int32_t> late_keys = {7, 8, 9};
  AttentionOutput(q, qpos, k, v, late_keys, D, std::nullopt, out);
  for (float x : out) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace kvwire::eval
