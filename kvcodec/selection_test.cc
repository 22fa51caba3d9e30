// Tests for kvcodec selection: hand-computed answers for every method, pooling, head modes,
// PyramidKV budgets, determinism of the random method, and the error cases.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "kvcodec/kvcodec.h"

namespace kvcodec {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using Kept = std::vector<int32_t>;

CacheShape Shape(int layers, int heads, int tokens) {
  CacheShape s;
  s.num_layers = layers;
  s.num_kv_heads = heads;
  s.num_tokens = tokens;
  s.head_dim = 4;
  return s;
}

ImportanceScores Scores(int layers, int heads, int tokens, std::vector<float> values) {
  ImportanceScores s;
  s.num_layers = layers;
  s.num_kv_heads = heads;
  s.num_tokens = tokens;
  s.values = std::move(values);
  return s;
}

SelectionConfig Config(SelectionMethod method, int budget) {
  SelectionConfig c;
  c.method = method;
  c.budget_tokens = budget;
  c.head_mode = HeadMode::kPerHead;
  // Q2C serves most tests as plain top-k by score: no pooling (Q2CPooling tests it).
  if (method == SelectionMethod::kQ2C) c.kernel_size = 1;
  return c;
}

// Runs Select and fails the test on error.
Selection MustSelect(const SelectionConfig& config, const CacheShape& shape,
                     const ImportanceScores* scores, std::span<const int32_t> ids = {}) {
  absl::StatusOr<Selection> s = Select(config, shape, scores, ids);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : Selection{};
}

Kept Range(int begin, int end) {
  Kept k(end - begin);
  std::iota(k.begin(), k.end(), begin);
  return k;
}

// Reference top-k: a full sort by (score desc, index asc) over the non-mandatory tokens.
Kept ReferenceTopK(const std::vector<double>& scores, const std::vector<bool>& mandatory,
                   int budget) {
  std::vector<int32_t> order;
  Kept kept;
  for (int t = 0; t < static_cast<int>(scores.size()); ++t) {
    (mandatory[t] ? kept : order).push_back(t);
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  });
  const int extra = std::max<int>(0, budget - static_cast<int>(kept.size()));
  for (int i = 0; i < extra && i < static_cast<int>(order.size()); ++i) kept.push_back(order[i]);
  std::sort(kept.begin(), kept.end());
  return kept;
}

// ------------------------------------------------------------------------------------------
// Names
// ------------------------------------------------------------------------------------------
TEST(SelectionMethodTest, NamesRoundTrip) {
  const std::vector<std::pair<SelectionMethod, std::string>> expected = {
      {SelectionMethod::kKeepAll, "keepall"},      {SelectionMethod::kSnapKV, "snapkv"},
      {SelectionMethod::kQ2C, "q2c"},              {SelectionMethod::kH2O, "h2o"},
      {SelectionMethod::kStreamingLLM, "streaming"}, {SelectionMethod::kAnchorRule, "anchor"},
      {SelectionMethod::kRandom, "random"}};
  for (const auto& [method, name] : expected) {
    EXPECT_EQ(SelectionMethodName(method), name);
    absl::StatusOr<SelectionMethod> parsed = ParseSelectionMethod(name);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, method);
  }
}

TEST(SelectionMethodTest, UnknownNameListsValidOnes) {
  for (const char* bad : {"", "SnapKV", "pyramid", "keep-all", "snapkv "}) {
    absl::StatusOr<SelectionMethod> parsed = ParseSelectionMethod(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(),
                HasSubstr("keepall, snapkv, q2c, h2o, streaming, anchor, random"));
  }
}

// ------------------------------------------------------------------------------------------
// KeepAll, kept_tokens, budgets
// ------------------------------------------------------------------------------------------
TEST(SelectionTest, KeepAllKeepsEverything) {
  Selection s = Selection::KeepAll(Shape(2, 3, 5));
  ASSERT_EQ(s.kept.size(), 2u);
  for (const auto& layer : s.kept) {
    ASSERT_EQ(layer.size(), 3u);
    for (const auto& head : layer) EXPECT_THAT(head, ElementsAre(0, 1, 2, 3, 4));
  }
  EXPECT_EQ(s.kept_tokens(), 30u);

  // Select with kKeepAll ignores the budget and needs no scores.
  Selection via_select = MustSelect(Config(SelectionMethod::kKeepAll, 2), Shape(2, 3, 5), nullptr);
  EXPECT_EQ(via_select.kept, s.kept);
}

TEST(SelectionTest, KeptTokensSumsRaggedHeads) {
  Selection s;
  s.kept = {{{0, 1}, {}}, {{3}, {0, 2, 4}}};
  EXPECT_EQ(s.kept_tokens(), 6u);
  EXPECT_EQ(Selection{}.kept_tokens(), 0u);
}

TEST(LayerBudgetsTest, RatioAndTokenBudgets) {
  SelectionConfig c;
  c.keep_ratio = 0.25;
  EXPECT_THAT(LayerBudgets(c, Shape(3, 1, 10)), ElementsAre(3, 3, 3));  // ceil(2.5)
  c.keep_ratio = 0.07;
  // 0.07 * 100 evaluates to 7.000000000000001 in binary; it must stay 7 tokens.
  EXPECT_THAT(LayerBudgets(c, Shape(1, 1, 100)), ElementsAre(7));
  c.keep_ratio = 0.57;  // 56.99999999999999 -> 57
  EXPECT_THAT(LayerBudgets(c, Shape(1, 1, 100)), ElementsAre(57));
  c.keep_ratio = 1e-6;
  EXPECT_THAT(LayerBudgets(c, Shape(1, 1, 30)), ElementsAre(1));  // at least one token
  c.keep_ratio = 1.0;
  EXPECT_THAT(LayerBudgets(c, Shape(2, 1, 30)), ElementsAre(30, 30));
  c.budget_tokens = 7;  // wins over the ratio
  EXPECT_THAT(LayerBudgets(c, Shape(2, 1, 30)), ElementsAre(7, 7));
  c.budget_tokens = 1000;  // clamped to the sequence
  EXPECT_THAT(LayerBudgets(c, Shape(2, 1, 30)), ElementsAre(30, 30));
  EXPECT_THAT(LayerBudgets(c, Shape(2, 1, 0)), ElementsAre(0, 0));
  EXPECT_TRUE(LayerBudgets(c, Shape(0, 1, 30)).empty());
}

TEST(LayerBudgetsTest, PyramidFallsLinearlyAndPreservesMean) {
  SelectionConfig c;
  c.pyramid = true;
  c.pyramid_beta = 20;
  c.budget_tokens = 100;
  const std::vector<int> b = LayerBudgets(c, Shape(8, 2, 1000));
  ASSERT_EQ(b.size(), 8u);
  EXPECT_EQ(b.front(), 195);  // 2 * 100 - 5
  EXPECT_EQ(b.back(), 5);     // 100 / 20
  EXPECT_TRUE(std::is_sorted(b.rbegin(), b.rend())) << "not non-increasing";
  EXPECT_GT(b.front(), b.back());
  EXPECT_EQ(std::accumulate(b.begin(), b.end(), 0), 800);
  // Linear: each budget is within one token of the line 195 - 190 * l / 7.
  for (size_t l = 0; l < b.size(); ++l) EXPECT_NEAR(b[l], 195 - 190.0 * l / 7, 1.0) << l;
}

// Regression: the pyramid was laid over the whole budget, so with SnapKV the last layers got
// budgets below the observation window and kept the window only (and went over budget). As in
// PyramidKV, the line now shapes budget - window and every layer adds the window.
TEST(LayerBudgetsTest, PyramidShapesOnlyTheTokensASnapKVLayerSelects) {
  SelectionConfig c;
  c.method = SelectionMethod::kSnapKV;
  c.window = 32;
  c.pyramid = true;
  c.pyramid_beta = 20;
  c.budget_tokens = 132;  // 100 selected + the window
  const std::vector<int> b = LayerBudgets(c, Shape(8, 2, 1000));
  EXPECT_EQ(b.front(), 32 + 195);
  EXPECT_EQ(b.back(), 32 + 5);
  EXPECT_EQ(std::accumulate(b.begin(), b.end(), 0), 8 * 132);
  for (size_t l = 0; l < b.size(); ++l) EXPECT_NEAR(b[l], 32 + 195 - 190.0 * l / 7, 1.0) << l;
  // The window and a protected span that overlaps it count once.
  c.protect_begin = 990;
  c.protect_end = 1000;
  EXPECT_EQ(LayerBudgets(c, Shape(8, 2, 1000)), b);
  c.protect_begin = 0;
  c.protect_end = 10;
  EXPECT_EQ(LayerBudgets(c, Shape(8, 2, 1000)).back(), 42 + 4);  // 90 selected: last 90 / 20
  // A budget within the window is flat.
  c.protect_end = 0;
  c.budget_tokens = 32;
  EXPECT_THAT(LayerBudgets(c, Shape(3, 2, 1000)), ElementsAre(32, 32, 32));
  // H2O reserves its recent tokens, Q2C its question.
  SelectionConfig h = c;
  h.method = SelectionMethod::kH2O;
  h.recent_tokens = 64;
  h.budget_tokens = 164;
  EXPECT_EQ(LayerBudgets(h, Shape(8, 2, 1000)).back(), 64 + 5);
  SelectionConfig q = c;
  q.method = SelectionMethod::kQ2C;
  q.protect_begin = 980;
  q.protect_end = 1000;
  q.budget_tokens = 120;
  EXPECT_EQ(LayerBudgets(q, Shape(8, 2, 1000)).back(), 20 + 5);
}

TEST(LayerBudgetsTest, PyramidRoundingKeepsExactMean) {
  SelectionConfig c;
  c.pyramid = true;
  for (int layers : {2, 3, 5, 7, 32, 61}) {
    for (int mean : {1, 2, 3, 17, 64, 333}) {
      for (double beta : {1.0, 2.0, 7.0, 20.0}) {
        c.budget_tokens = mean;
        c.pyramid_beta = beta;
        const std::vector<int> b = LayerBudgets(c, Shape(layers, 1, 500));
        EXPECT_EQ(std::accumulate(b.begin(), b.end(), 0), mean * layers)
            << layers << " " << mean << " " << beta;
        EXPECT_TRUE(std::is_sorted(b.rbegin(), b.rend()));
        EXPECT_GE(*std::min_element(b.begin(), b.end()), 1);
        EXPECT_LE(*std::max_element(b.begin(), b.end()), 500);
      }
    }
  }
}

TEST(LayerBudgetsTest, PyramidEdgeCases) {
  SelectionConfig c;
  c.pyramid = true;
  c.pyramid_beta = 20;
  c.budget_tokens = 100;
  EXPECT_THAT(LayerBudgets(c, Shape(1, 1, 1000)), ElementsAre(100));  // one layer: the mean
  c.pyramid_beta = 1;
  EXPECT_THAT(LayerBudgets(c, Shape(4, 1, 1000)), ElementsAre(100, 100, 100, 100));  // flat
  // Keep-all stays keep-all: the first layer cannot exceed the sequence, so the slope flattens.
  c.pyramid_beta = 20;
  c.budget_tokens = 0;
  c.keep_ratio = 1.0;
  EXPECT_THAT(LayerBudgets(c, Shape(4, 1, 50)), ElementsAre(50, 50, 50, 50));
  // mean 600 of 1000: first would be 1170; pinned to 1000, last becomes 200, mean kept.
  c.keep_ratio = 0.6;
  const std::vector<int> b = LayerBudgets(c, Shape(5, 1, 1000));
  EXPECT_THAT(b, ElementsAre(1000, 800, 600, 400, 200));
  // A small mean: last is at least one token.
  c.keep_ratio = 1.0;
  c.budget_tokens = 2;
  EXPECT_THAT(LayerBudgets(c, Shape(3, 1, 1000)), ElementsAre(3, 2, 1));
}

TEST(SelectionTest, PyramidBudgetsDriveKeptCounts) {
  const int layers = 6, heads = 2, tokens = 64;
  std::vector<float> v(layers * heads * tokens);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 37) % 101);
  ImportanceScores scores = Scores(layers, heads, tokens, v);
  SelectionConfig c = Config(SelectionMethod::kQ2C, 16);
  c.pyramid = true;
  c.pyramid_beta = 4;
  const std::vector<int> budgets = LayerBudgets(c, Shape(layers, heads, tokens));
  Selection s = MustSelect(c, Shape(layers, heads, tokens), &scores);
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < heads; ++h) EXPECT_EQ(s.kept[l][h].size(), size_t(budgets[l])) << l;
  }
  EXPECT_EQ(s.kept_tokens(), uint64_t(16 * layers * heads));
}

// ------------------------------------------------------------------------------------------
// Top-k by score (Q2C), ties, budgets
// ------------------------------------------------------------------------------------------
TEST(SelectionTest, Q2CKeepsTopScoresPerHead) {
  // One layer, two heads, 6 tokens.
  ImportanceScores scores = Scores(1, 2, 6, {0.1f, 0.9f, 0.3f, 0.8f, 0.0f, 0.2f,  //
                                             0.5f, 0.0f, 0.0f, 0.1f, 0.7f, 0.6f});
  Selection s = MustSelect(Config(SelectionMethod::kQ2C, 2), Shape(1, 2, 6), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(1, 3));
  EXPECT_THAT(s.kept[0][1], ElementsAre(4, 5));
}

// Regression: Q2C ranked raw scores, and on the bundled target it kept the pass key's first
// digit without the rest (0% of full at 25% where SnapKV's pooled ranking kept 100%). Q2C now
// pools like SnapKV, the context on each side of the question separately.
TEST(SelectionTest, Q2CPoolsTheContextOnEachSideOfTheQuestion) {
  // Question at [8, 10); its own scores are large and must not lift tokens 7 and 10.
  ImportanceScores scores =
      Scores(1, 1, 12, {0.1f, 0.0f, 0.0f, 0.9f, 0.0f, 0.2f, 0.0f, 0.3f, 5.0f, 5.0f, 0.0f, 0.05f});
  SelectionConfig c = Config(SelectionMethod::kQ2C, 5);
  c.protect_begin = 8;
  c.protect_end = 10;
  c.kernel_size = 3;
  c.pooling = Pooling::kMax;
  // Pooled: 0.1 0.1 0.9 0.9 0.9 0.2 0.3 0.3 | question | 0.05 0.05.
  EXPECT_THAT(MustSelect(c, Shape(1, 1, 12), &scores).kept[0][0], ElementsAre(2, 3, 4, 8, 9));
  c.kernel_size = 1;  // the raw ranking: 0.9, 0.3, 0.2
  EXPECT_THAT(MustSelect(c, Shape(1, 1, 12), &scores).kept[0][0], ElementsAre(3, 5, 7, 8, 9));
  c.kernel_size = 3;
  c.pooling = Pooling::kAvg;
  // Averages: t2 0.3, t3 0.3, t4 0.367, t6 0.167, t7 0.15, t1 0.033, t10 0.025.
  EXPECT_THAT(MustSelect(c, Shape(1, 1, 12), &scores).kept[0][0], ElementsAre(2, 3, 4, 8, 9));
}

TEST(SelectionTest, TiesGoToLowerTokenIndex) {
  ImportanceScores scores = Scores(1, 1, 8, {1, 2, 2, 2, 0, 2, 2, 1});
  Selection s = MustSelect(Config(SelectionMethod::kQ2C, 3), Shape(1, 1, 8), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(1, 2, 3));
  ImportanceScores flat = Scores(1, 1, 8, std::vector<float>(8, 0.5f));
  s = MustSelect(Config(SelectionMethod::kQ2C, 5), Shape(1, 1, 8), &flat);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3, 4));
}

TEST(SelectionTest, BudgetLargerThanSequenceKeepsAll) {
  ImportanceScores scores = Scores(1, 1, 5, {3, 1, 4, 1, 5});
  for (SelectionMethod m : {SelectionMethod::kQ2C, SelectionMethod::kSnapKV,
                            SelectionMethod::kH2O, SelectionMethod::kRandom}) {
    Selection s = MustSelect(Config(m, 100), Shape(1, 1, 5), &scores);
    EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3, 4)) << SelectionMethodName(m);
  }
}

TEST(SelectionTest, KeepRatioBudget) {
  ImportanceScores scores = Scores(1, 1, 10, {0, 9, 1, 8, 2, 7, 3, 6, 4, 5});
  SelectionConfig c = Config(SelectionMethod::kQ2C, 0);
  c.keep_ratio = 0.25;  // ceil(2.5) = 3
  Selection s = MustSelect(c, Shape(1, 1, 10), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(1, 3, 5));
}

TEST(SelectionTest, MatchesFullSortReference) {
  // Coarse scores (many ties) on a longer sequence, against a full-sort reference.
  const int layers = 3, heads = 4, tokens = 997;
  std::mt19937_64 rng(7);
  std::vector<float> v(layers * heads * tokens);
  for (float& x : v) x = static_cast<float>(rng() % 13);
  ImportanceScores scores = Scores(layers, heads, tokens, v);
  for (int budget : {1, 10, 100, 500, 996, 997}) {
    SelectionConfig c = Config(SelectionMethod::kQ2C, budget);
    c.protect_begin = 100;
    c.protect_end = 120;
    Selection s = MustSelect(c, Shape(layers, heads, tokens), &scores);
    std::vector<bool> mandatory(tokens, false);
    for (int t = 100; t < 120; ++t) mandatory[t] = true;
    for (int l = 0; l < layers; ++l) {
      for (int h = 0; h < heads; ++h) {
        std::vector<double> row(tokens);
        for (int t = 0; t < tokens; ++t) row[t] = scores.at(l, h, t);
        EXPECT_EQ(s.kept[l][h], ReferenceTopK(row, mandatory, budget)) << budget;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// SnapKV
// ------------------------------------------------------------------------------------------
// Prefix (8 tokens) then a window of 2 with large scores that must not leak into pooling.
const std::vector<float> kSnapScores = {1, 0, 0, 6, 0, 0, 3, 3, 9, 9};

SelectionConfig SnapConfig(int kernel, Pooling pooling) {
  SelectionConfig c = Config(SelectionMethod::kSnapKV, 4);  // window 2 + 2 chosen
  c.window = 2;
  c.kernel_size = kernel;
  c.pooling = pooling;
  return c;
}

TEST(SnapKVTest, MaxPoolingByHand) {
  // max over [t-1, t+1] clipped to the prefix [0, 8):
  //   t: 0 1 2 3 4 5 6 7
  //      1 1 6 6 6 3 3 3   (t=7 would be 9 if the window leaked in)
  // top 2: t=2, t=3; plus the window 8, 9.
  ImportanceScores scores = Scores(1, 1, 10, kSnapScores);
  Selection s = MustSelect(SnapConfig(3, Pooling::kMax), Shape(1, 1, 10), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(2, 3, 8, 9));
}

TEST(SnapKVTest, AvgPoolingByHand) {
  // mean over [t-1, t+1] clipped to [0, 8), dividing by the in-range count:
  //   t: 0   1    2 3 4 5 6 7
  //      0.5 1/3  2 2 2 1 2 3   (t=7 is (3+3)/2; zero padding would give 2 and tie)
  // top 2: t=7 (3), then the first of the 2s, t=2.
  ImportanceScores scores = Scores(1, 1, 10, kSnapScores);
  Selection s = MustSelect(SnapConfig(3, Pooling::kAvg), Shape(1, 1, 10), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(2, 7, 8, 9));
}

TEST(SnapKVTest, KernelOneIsRawScores) {
  // Raw prefix top 2: t=3 (6), then the tie 6/7 at 3 goes to t=6.
  ImportanceScores scores = Scores(1, 1, 10, kSnapScores);
  Selection s = MustSelect(SnapConfig(1, Pooling::kMax), Shape(1, 1, 10), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(3, 6, 8, 9));
}

TEST(SnapKVTest, LargeKernelsMatchBruteForce) {
  // Kernels above the direct-summation limit use prefix sums; with integer scores both paths
  // are exact, so the selection must equal a brute-force pooling reference.
  const int tokens = 400, window = 16, budget = 60;
  std::mt19937_64 rng(11);
  std::vector<float> v(tokens);
  for (float& x : v) x = static_cast<float>(rng() % 50);
  ImportanceScores scores = Scores(1, 1, tokens, v);
  const int prefix = tokens - window;
  std::vector<bool> mandatory(tokens, false);
  for (int t = prefix; t < tokens; ++t) mandatory[t] = true;
  for (int kernel : {5, 63, 65, 101, 1001}) {
    for (Pooling pooling : {Pooling::kMax, Pooling::kAvg}) {
      SelectionConfig c = Config(SelectionMethod::kSnapKV, budget);
      c.window = window;
      c.kernel_size = kernel;
      c.pooling = pooling;
      Selection s = MustSelect(c, Shape(1, 1, tokens), &scores);
      std::vector<double> pooled(tokens, 0);
      for (int t = 0; t < prefix; ++t) {
        const int lo = std::max(0, t - kernel / 2), hi = std::min(prefix - 1, t + kernel / 2);
        double acc = pooling == Pooling::kMax ? -1 : 0;
        for (int j = lo; j <= hi; ++j) acc = pooling == Pooling::kMax ? std::max<double>(acc, v[j])
                                                                      : acc + v[j];
        pooled[t] = pooling == Pooling::kMax ? acc : acc / (hi - lo + 1);
      }
      EXPECT_EQ(s.kept[0][0], ReferenceTopK(pooled, mandatory, budget))
          << "kernel " << kernel << " pooling " << int(pooling);
    }
  }
}

TEST(SnapKVTest, WindowLongerThanPromptKeepsAll) {
  ImportanceScores scores = Scores(1, 2, 5, std::vector<float>(10, 1.0f));
  SelectionConfig c = Config(SelectionMethod::kSnapKV, 2);
  c.window = 32;
  Selection s = MustSelect(c, Shape(1, 2, 5), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(s.kept[0][1], ElementsAre(0, 1, 2, 3, 4));
}

TEST(SnapKVTest, WindowIsKeptEvenOverBudget) {
  ImportanceScores scores = Scores(1, 1, 10, kSnapScores);
  SelectionConfig c = SnapConfig(3, Pooling::kMax);
  c.window = 5;
  c.budget_tokens = 3;
  Selection s = MustSelect(c, Shape(1, 1, 10), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(5, 6, 7, 8, 9));
}

TEST(SnapKVTest, SharedModeSumsPooledScores) {
  // Two heads; max pooling with kernel 3, window 1, budget 2 (1 chosen from the prefix):
  //   head 0 prefix: 5 0 0 0 0 -> pooled 5 5 0 0 0
  //   head 1 prefix: 0 0 3 3 0 -> pooled 0 3 3 3 3
  //   sum of pooled:                      5 8 3 3 3 -> t=1
  // Summing raw scores first (5 0 3 3 0) would pick t=0.
  ImportanceScores scores = Scores(1, 2, 6, {5, 0, 0, 0, 0, 100,  //
                                             0, 0, 3, 3, 0, 100});
  SelectionConfig c = Config(SelectionMethod::kSnapKV, 2);
  c.window = 1;
  c.kernel_size = 3;
  c.head_mode = HeadMode::kShared;
  Selection s = MustSelect(c, Shape(1, 2, 6), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(1, 5));
  EXPECT_THAT(s.kept[0][1], ElementsAre(1, 5));
}

// ------------------------------------------------------------------------------------------
// H2O, StreamingLLM, anchor rule
// ------------------------------------------------------------------------------------------
TEST(H2OTest, RecentTokensPlusHeavyHitters) {
  ImportanceScores scores = Scores(1, 1, 10, {5, 1, 7, 2, 6, 0, 0, 0, 0, 0});
  SelectionConfig c = Config(SelectionMethod::kH2O, 5);
  c.recent_tokens = 3;
  Selection s = MustSelect(c, Shape(1, 1, 10), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(2, 4, 7, 8, 9));
}

// Regression: H2O kept a fixed 64 recent tokens, more than a 10% budget of a 530-token prompt
// (it went over budget and kept almost no heavy hitters). By default it now splits each layer's
// budget evenly between recent tokens and heavy hitters, as the H2O paper does.
TEST(H2OTest, AutoRecentIsHalfOfEachLayersBudget) {
  ImportanceScores scores = Scores(2, 1, 12, {9, 1, 8, 2, 7, 0, 0, 0, 0, 0, 0, 0,  //
                                              9, 1, 8, 2, 7, 0, 0, 0, 0, 0, 0, 0});
  SelectionConfig c = Config(SelectionMethod::kH2O, 6);
  ASSERT_EQ(c.recent_tokens, SelectionConfig::kRecentAuto);
  Selection s = MustSelect(c, Shape(2, 1, 12), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 2, 4, 9, 10, 11));
  // Pyramid budgets 9 and 3: recent 4 and 1.
  c.pyramid = true;
  c.pyramid_beta = 2;
  ASSERT_THAT(LayerBudgets(c, Shape(2, 1, 12)), ElementsAre(9, 3));
  s = MustSelect(c, Shape(2, 1, 12), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3, 4, 8, 9, 10, 11));
  EXPECT_THAT(s.kept[1][0], ElementsAre(0, 2, 11));
  // The text form names it and round-trips.
  auto parsed = CodecConfig::Parse("select=h2o;keep=0.1;recent=auto");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->selection.recent_tokens, SelectionConfig::kRecentAuto);
  EXPECT_THAT(parsed->ToString(), HasSubstr(";recent=auto;"));
  EXPECT_EQ(CodecConfig::Parse(parsed->ToString())->selection.recent_tokens,
            SelectionConfig::kRecentAuto);
}

TEST(StreamingTest, SinksAndRecentOnly) {
  SelectionConfig c = Config(SelectionMethod::kStreamingLLM, 5);  // window = budget - sinks
  c.sink_tokens = 2;
  c.recent_tokens = 1;  // H2O's parameter: StreamingLLM ignores it
  Selection s = MustSelect(c, Shape(2, 2, 20), nullptr);  // needs no scores
  for (const auto& layer : s.kept) {
    for (const auto& head : layer) EXPECT_THAT(head, ElementsAre(0, 1, 17, 18, 19));
  }
}

TEST(StreamingTest, SmallBudgetShrinksRecentNotSinks) {
  SelectionConfig c = Config(SelectionMethod::kStreamingLLM, 4);
  c.sink_tokens = 2;
  c.recent_tokens = 5;
  Selection s = MustSelect(c, Shape(1, 1, 20), nullptr);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 18, 19));
  c.budget_tokens = 1;  // sinks alone exceed the budget: kept anyway, no recent
  s = MustSelect(c, Shape(1, 1, 20), nullptr);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1));
}

TEST(StreamingTest, OverlapsCountOnce) {
  SelectionConfig c = Config(SelectionMethod::kStreamingLLM, 100);
  c.sink_tokens = 4;
  c.recent_tokens = 4;
  Selection s = MustSelect(c, Shape(1, 1, 6), nullptr);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3, 4, 5));
  // Protected tokens in the recent window do not use budget twice.
  c.budget_tokens = 5;
  c.sink_tokens = 1;
  c.recent_tokens = 10;
  c.protect_begin = 18;
  c.protect_end = 20;
  s = MustSelect(c, Shape(1, 1, 20), nullptr);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 16, 17, 18, 19));
}

TEST(StreamingTest, PyramidShrinksRecentPerLayer) {
  SelectionConfig c = Config(SelectionMethod::kStreamingLLM, 6);
  c.sink_tokens = 1;
  c.recent_tokens = 100;
  c.pyramid = true;
  c.pyramid_beta = 3;  // budgets 10, 6, 2
  Selection s = MustSelect(c, Shape(3, 1, 50), nullptr);
  EXPECT_THAT(s.kept[0][0], ElementsAreArray([] {
                Kept k = {0};
                for (int t = 41; t < 50; ++t) k.push_back(t);
                return k;
              }()));
  EXPECT_THAT(s.kept[1][0], ElementsAre(0, 45, 46, 47, 48, 49));
  EXPECT_THAT(s.kept[2][0], ElementsAre(0, 49));
}

TEST(AnchorTest, SinksRecentAnchorIdsThenScores) {
  // ids: token 5 and 9 are "punctuation" (id 13), the rest ordinary.
  const std::vector<int32_t> ids = {100, 101, 102, 103, 104, 13, 106, 107, 108, 13, 110, 111};
  ImportanceScores scores =
      Scores(1, 1, 12, {9, 0, 0, 4, 0, 0, 8, 0, 0, 0, 0, 9});
  SelectionConfig c = Config(SelectionMethod::kAnchorRule, 7);
  c.sink_tokens = 1;
  c.recent_tokens = 2;
  c.anchor_token_ids = {13, 999};
  // Mandatory: 0 (sink), 10, 11 (recent), 5, 9 (anchors) = 5; then 2 by score: 6 (8), 3 (4).
  Selection s = MustSelect(c, Shape(1, 1, 12), &scores, ids);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 3, 5, 6, 9, 10, 11));
}

TEST(AnchorTest, NeedsOneTokenIdPerToken) {
  ImportanceScores scores = Scores(1, 1, 4, {1, 2, 3, 4});
  SelectionConfig c = Config(SelectionMethod::kAnchorRule, 2);
  const std::vector<int32_t> short_ids = {1, 2, 3};
  absl::StatusOr<Selection> s = Select(c, Shape(1, 1, 4), &scores, short_ids);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  s = Select(c, Shape(1, 1, 4), &scores);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------
// Head modes
// ------------------------------------------------------------------------------------------
// Head 0 has all the strong scores; head 1 is weak everywhere.
const std::vector<float> kSkewed = {9, 8, 7, 6, 0, 0,  //
                                    1, 0, 0, 0, 0, 2};

TEST(HeadModeTest, PerHeadEachKeepsItsOwnTop) {
  ImportanceScores scores = Scores(1, 2, 6, kSkewed);
  Selection s = MustSelect(Config(SelectionMethod::kQ2C, 2), Shape(1, 2, 6), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1));
  EXPECT_THAT(s.kept[0][1], ElementsAre(0, 5));
}

TEST(HeadModeTest, SharedUsesSummedScoresForAllHeads) {
  // Sums: 10 8 7 6 0 2 -> {0, 1}; per-head would give head 1 token 5.
  ImportanceScores scores = Scores(1, 2, 6, kSkewed);
  SelectionConfig c = Config(SelectionMethod::kQ2C, 2);
  c.head_mode = HeadMode::kShared;
  Selection s = MustSelect(c, Shape(1, 2, 6), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1));
  EXPECT_THAT(s.kept[0][1], ElementsAre(0, 1));
}

TEST(HeadModeTest, AdaptiveGivesTheStrongHeadMore) {
  // Layer budget 2 heads x 2 = 4 goes to the four best (head, token) pairs: all in head 0.
  ImportanceScores scores = Scores(1, 2, 6, kSkewed);
  SelectionConfig c = Config(SelectionMethod::kQ2C, 2);
  c.head_mode = HeadMode::kAdaptive;
  Selection s = MustSelect(c, Shape(1, 2, 6), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(s.kept[0][1], ElementsAre());
  EXPECT_EQ(s.kept_tokens(), 4u);  // same total as per-head
}

TEST(HeadModeTest, AdaptiveKeepsMandatoryInEveryHead) {
  // Protected token 4 is mandatory: each head keeps it, and the remaining 2 x (3 - 1) = 4 go to
  // the best pairs: head 0 tokens 0..3.
  ImportanceScores scores = Scores(1, 2, 6, kSkewed);
  SelectionConfig c = Config(SelectionMethod::kQ2C, 3);
  c.head_mode = HeadMode::kAdaptive;
  c.protect_begin = 4;
  c.protect_end = 5;
  Selection s = MustSelect(c, Shape(1, 2, 6), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(s.kept[0][1], ElementsAre(4));
}

TEST(HeadModeTest, AdaptiveCapsAHeadAtTheSequenceLength) {
  // Budget 3 of 4 tokens, 2 heads: 6 slots. Head 0 can take only its 4 tokens; 2 go to head 1.
  ImportanceScores scores = Scores(1, 2, 4, {9, 9, 9, 9,  //
                                             1, 2, 1, 3});
  SelectionConfig c = Config(SelectionMethod::kQ2C, 3);
  c.head_mode = HeadMode::kAdaptive;
  Selection s = MustSelect(c, Shape(1, 2, 4), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(s.kept[0][1], ElementsAre(1, 3));
}

// AdaKV's safeguard: each head first keeps its own best 20% of its selected share, so a head
// that scores below every other head's tokens still keeps its best tokens.
TEST(HeadModeTest, AdaptiveGuaranteesEveryHeadAFifthOfItsBudget) {
  std::vector<float> v(40, 1.0f);
  for (int t = 0; t < 20; ++t) v[t] = 9.0f;  // head 0 beats head 1 everywhere
  v[20 + 3] = 5.0f;
  v[20 + 7] = 4.0f;
  ImportanceScores scores = Scores(1, 2, 20, v);
  SelectionConfig c = Config(SelectionMethod::kQ2C, 10);  // 20 slots; 2 guaranteed per head
  c.head_mode = HeadMode::kAdaptive;
  Selection s = MustSelect(c, Shape(1, 2, 20), &scores);
  EXPECT_EQ(s.kept[0][0].size(), 18u);
  EXPECT_THAT(s.kept[0][1], ElementsAre(3, 7));
  EXPECT_EQ(s.kept_tokens(), 20u);
}

TEST(HeadModeTest, AdaptiveTiesPreferLowerTokenThenLowerHead) {
  ImportanceScores scores = Scores(1, 2, 3, {1, 1, 1,  //
                                             1, 1, 1});
  SelectionConfig c = Config(SelectionMethod::kQ2C, 1);
  c.head_mode = HeadMode::kAdaptive;
  Selection s = MustSelect(c, Shape(1, 2, 3), &scores);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0));
  EXPECT_THAT(s.kept[0][1], ElementsAre(0));
}

// ------------------------------------------------------------------------------------------
// Random
// ------------------------------------------------------------------------------------------
TEST(RandomTest, DeterministicForASeedAndDifferentAcrossSeeds) {
  SelectionConfig c = Config(SelectionMethod::kRandom, 20);
  c.seed = 42;
  const CacheShape shape = Shape(3, 2, 200);
  Selection a = MustSelect(c, shape, nullptr);
  Selection b = MustSelect(c, shape, nullptr);
  EXPECT_EQ(a.kept, b.kept);
  for (const auto& layer : a.kept) {
    for (const auto& head : layer) {
      EXPECT_EQ(head.size(), 20u);
      EXPECT_TRUE(std::is_sorted(head.begin(), head.end()));
      EXPECT_EQ(std::set<int32_t>(head.begin(), head.end()).size(), head.size());
    }
  }
  // Heads and layers draw differently in per-head mode.
  EXPECT_NE(a.kept[0][0], a.kept[0][1]);
  EXPECT_NE(a.kept[0][0], a.kept[1][0]);
  c.seed = 43;
  Selection other = MustSelect(c, shape, nullptr);
  EXPECT_NE(a.kept, other.kept);
}

TEST(RandomTest, LayerDrawIsIndependentOfOtherLayers) {
  SelectionConfig c = Config(SelectionMethod::kRandom, 10);
  c.seed = 5;
  Selection one = MustSelect(c, Shape(1, 2, 100), nullptr);
  Selection three = MustSelect(c, Shape(3, 2, 100), nullptr);
  EXPECT_EQ(one.kept[0], three.kept[0]);
}

TEST(RandomTest, StableAcrossPlatforms) {
  // mt19937_64's sequence is fixed by the standard and the draw is done by hand, so this pinned
  // answer must hold for every compiler and standard library. A change here breaks the
  // reproducibility of published random baselines. The answer was cross-checked with an
  // independent Python implementation of mt19937_64 and the SplitMix64 layer seed.
  SelectionConfig c = Config(SelectionMethod::kRandom, 5);
  c.seed = 2024;
  Selection s = MustSelect(c, Shape(1, 1, 40), nullptr);
  EXPECT_THAT(s.kept[0][0], ElementsAre(0, 7, 12, 18, 20));
}

TEST(RandomTest, RoughlyUniform) {
  SelectionConfig c = Config(SelectionMethod::kRandom, 0);
  c.keep_ratio = 0.5;
  c.seed = 1;
  Selection s = MustSelect(c, Shape(1, 1, 4000), nullptr);
  const Kept& k = s.kept[0][0];
  ASSERT_EQ(k.size(), 2000u);
  const auto first_half = std::count_if(k.begin(), k.end(), [](int32_t t) { return t < 2000; });
  EXPECT_NEAR(first_half, 1000, 150);
}

TEST(RandomTest, SharedModeUsesOneSetPerLayer) {
  SelectionConfig c = Config(SelectionMethod::kRandom, 7);
  c.head_mode = HeadMode::kShared;
  Selection s = MustSelect(c, Shape(2, 3, 50), nullptr);
  for (const auto& layer : s.kept) {
    EXPECT_EQ(layer[0].size(), 7u);
    EXPECT_EQ(layer[0], layer[1]);
    EXPECT_EQ(layer[0], layer[2]);
  }
  c.head_mode = HeadMode::kAdaptive;
  s = MustSelect(c, Shape(2, 3, 50), nullptr);
  EXPECT_EQ(s.kept_tokens(), 2u * 3u * 7u);
}

// ------------------------------------------------------------------------------------------
// Protected span, invariants, empty cache
// ------------------------------------------------------------------------------------------
TEST(SelectionTest, ProtectedSpanKeptByEveryMethod) {
  const int tokens = 30;
  std::vector<float> v(2 * tokens);
  for (int i = 0; i < 2 * tokens; ++i) v[i] = static_cast<float>(i % tokens);  // late is high
  ImportanceScores scores = Scores(1, 2, tokens, v);
  std::vector<int32_t> ids(tokens, 7);
  for (SelectionMethod m :
       {SelectionMethod::kSnapKV, SelectionMethod::kQ2C, SelectionMethod::kH2O,
        SelectionMethod::kStreamingLLM, SelectionMethod::kAnchorRule, SelectionMethod::kRandom}) {
    for (HeadMode mode : {HeadMode::kShared, HeadMode::kPerHead, HeadMode::kAdaptive}) {
      SelectionConfig c = Config(m, 8);
      c.head_mode = mode;
      c.window = 2;
      c.sink_tokens = 1;
      c.recent_tokens = 2;
      c.protect_begin = 3;
      c.protect_end = 7;
      Selection s = MustSelect(c, Shape(1, 2, tokens), &scores, ids);
      for (const Kept& k : s.kept[0]) {
        for (int t = 3; t < 7; ++t) {
          EXPECT_TRUE(std::binary_search(k.begin(), k.end(), t))
              << SelectionMethodName(m) << " mode " << int(mode) << " lost " << t;
        }
      }
      // Mandatory tokens over the budget are all kept.
      c.budget_tokens = 1;
      s = MustSelect(c, Shape(1, 2, tokens), &scores, ids);
      const Kept span = Range(3, 7);
      for (const Kept& k : s.kept[0]) {
        EXPECT_TRUE(std::includes(k.begin(), k.end(), span.begin(), span.end()))
            << SelectionMethodName(m);
      }
    }
  }
}

TEST(SelectionTest, OutputSortedUniqueAndSized) {
  const int layers = 4, heads = 3, tokens = 257;
  std::mt19937_64 rng(3);
  std::vector<float> v(layers * heads * tokens);
  for (float& x : v) x = static_cast<float>(rng() % 1000) / 1000.0f;
  ImportanceScores scores = Scores(layers, heads, tokens, v);
  std::vector<int32_t> ids(tokens);
  for (int t = 0; t < tokens; ++t) ids[t] = static_cast<int32_t>(rng() % 50);
  for (int m = 0; m <= 6; ++m) {
    for (HeadMode mode : {HeadMode::kShared, HeadMode::kPerHead, HeadMode::kAdaptive}) {
      for (bool pyramid : {false, true}) {
        SelectionConfig c = Config(static_cast<SelectionMethod>(m), 40);
        c.head_mode = mode;
        c.pyramid = pyramid;
        c.anchor_token_ids = {3};
        c.window = 8;
        c.recent_tokens = 8;
        Selection s = MustSelect(c, Shape(layers, heads, tokens), &scores, ids);
        const std::vector<int> budgets = LayerBudgets(c, Shape(layers, heads, tokens));
        ASSERT_EQ(s.kept.size(), size_t(layers));
        uint64_t layer_total = 0;
        for (int l = 0; l < layers; ++l) {
          ASSERT_EQ(s.kept[l].size(), size_t(heads));
          uint64_t total = 0;
          for (const Kept& k : s.kept[l]) {
            EXPECT_TRUE(std::adjacent_find(k.begin(), k.end(), std::greater_equal<int32_t>()) ==
                        k.end())
                << "not strictly ascending";
            if (!k.empty()) {
              EXPECT_GE(k.front(), 0);
              EXPECT_LT(k.back(), tokens);
            }
            total += k.size();
          }
          // Methods whose mandatory set is a fixed count spend exactly the layer budget, or
          // the mandatory count (window / recent = 8) where that is larger.
          if (m == int(SelectionMethod::kQ2C) || m == int(SelectionMethod::kRandom)) {
            EXPECT_EQ(total, uint64_t(budgets[l]) * heads) << m << " layer " << l;
          } else if (m == int(SelectionMethod::kSnapKV) || m == int(SelectionMethod::kH2O)) {
            EXPECT_EQ(total, uint64_t(std::max(budgets[l], 8)) * heads) << m << " layer " << l;
          }
          layer_total += total;
        }
        EXPECT_EQ(layer_total, s.kept_tokens());
      }
    }
  }
}

TEST(SelectionTest, EmptyCacheKeepsNothing) {
  ImportanceScores scores = Scores(2, 3, 0, {});
  for (int m = 0; m <= 6; ++m) {
    for (HeadMode mode : {HeadMode::kShared, HeadMode::kPerHead, HeadMode::kAdaptive}) {
      SelectionConfig c = Config(static_cast<SelectionMethod>(m), 4);
      c.head_mode = mode;
      Selection s = MustSelect(c, Shape(2, 3, 0), &scores);
      ASSERT_EQ(s.kept.size(), 2u);
      for (const auto& layer : s.kept) {
        ASSERT_EQ(layer.size(), 3u);
        for (const Kept& k : layer) EXPECT_TRUE(k.empty());
      }
      EXPECT_EQ(s.kept_tokens(), 0u);
    }
  }
}

TEST(SelectionTest, LongSequenceIsFast) {
  // 128k tokens, 8 heads, 2 layers, adaptive SnapKV: mainly a guard against quadratic work
  // (the test binary's timeout catches it); also checks the budget is spent exactly.
  const int layers = 2, heads = 8, tokens = 128 * 1024;
  std::mt19937_64 rng(9);
  std::vector<float> v(static_cast<size_t>(layers) * heads * tokens);
  for (float& x : v) x = static_cast<float>(rng() >> 40) * 0x1.0p-24f;
  ImportanceScores scores = Scores(layers, heads, tokens, v);
  for (HeadMode mode : {HeadMode::kShared, HeadMode::kPerHead, HeadMode::kAdaptive}) {
    SelectionConfig c = Config(SelectionMethod::kSnapKV, 4096);
    c.head_mode = mode;
    Selection s = MustSelect(c, Shape(layers, heads, tokens), &scores);
    EXPECT_EQ(s.kept_tokens(), uint64_t(layers) * heads * 4096);
  }
}

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------
absl::StatusCode SelectCode(const SelectionConfig& c, const CacheShape& shape,
                            const ImportanceScores* scores, std::span<const int32_t> ids = {}) {
  return Select(c, shape, scores, ids).status().code();
}

TEST(SelectionErrorTest, BadBudgetsAndRatios) {
  ImportanceScores scores = Scores(1, 1, 4, {1, 2, 3, 4});
  const CacheShape shape = Shape(1, 1, 4);
  for (double ratio : {0.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    SelectionConfig c = Config(SelectionMethod::kQ2C, 0);
    c.keep_ratio = ratio;
    EXPECT_EQ(SelectCode(c, shape, &scores), absl::StatusCode::kInvalidArgument) << ratio;
  }
  SelectionConfig c = Config(SelectionMethod::kQ2C, -1);
  EXPECT_EQ(SelectCode(c, shape, &scores), absl::StatusCode::kInvalidArgument);
  c = Config(SelectionMethod::kQ2C, 2);
  c.pyramid = true;
  c.pyramid_beta = 0.5;
  EXPECT_EQ(SelectCode(c, shape, &scores), absl::StatusCode::kInvalidArgument);
  c.pyramid = false;  // beta is only read by PyramidKV
  EXPECT_EQ(SelectCode(c, shape, &scores), absl::StatusCode::kOk);
}

TEST(SelectionErrorTest, BadSnapKVParameters) {
  ImportanceScores scores = Scores(1, 1, 4, {1, 2, 3, 4});
  for (int kernel : {0, -1, 2, 8}) {
    SelectionConfig c = Config(SelectionMethod::kSnapKV, 2);
    c.kernel_size = kernel;
    EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &scores), absl::StatusCode::kInvalidArgument)
        << kernel;
  }
  SelectionConfig c = Config(SelectionMethod::kSnapKV, 2);
  c.window = -1;
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &scores), absl::StatusCode::kInvalidArgument);
  // An even kernel does not matter to a method that does not pool.
  c = Config(SelectionMethod::kQ2C, 2);
  c.kernel_size = 4;
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &scores), absl::StatusCode::kOk);
}

TEST(SelectionErrorTest, MissingOrMismatchedScores) {
  for (SelectionMethod m : {SelectionMethod::kSnapKV, SelectionMethod::kQ2C,
                            SelectionMethod::kH2O, SelectionMethod::kAnchorRule}) {
    absl::StatusOr<Selection> s = Select(Config(m, 2), Shape(1, 1, 4), nullptr,
                                         std::vector<int32_t>{1, 2, 3, 4});
    ASSERT_FALSE(s.ok()) << SelectionMethodName(m);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr("scores"));
  }
  SelectionConfig c = Config(SelectionMethod::kQ2C, 2);
  ImportanceScores wrong_tokens = Scores(1, 1, 5, {1, 2, 3, 4, 5});
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &wrong_tokens), absl::StatusCode::kInvalidArgument);
  ImportanceScores wrong_heads = Scores(1, 2, 4, {1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &wrong_heads), absl::StatusCode::kInvalidArgument);
  ImportanceScores wrong_layers = Scores(2, 1, 4, {1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &wrong_layers), absl::StatusCode::kInvalidArgument);
  ImportanceScores short_values = Scores(1, 1, 4, {1, 2, 3});
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &short_values), absl::StatusCode::kInvalidArgument);
}

TEST(SelectionErrorTest, NonFiniteScores) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity()}) {
    ImportanceScores scores = Scores(1, 2, 3, {1, 2, 3, 4, bad, 6});
    absl::StatusOr<Selection> s = Select(Config(SelectionMethod::kH2O, 2), Shape(1, 2, 3), &scores);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr("head 1, token 1"));
  }
}

TEST(SelectionErrorTest, BadProtectedSpanAndShape) {
  ImportanceScores scores = Scores(1, 1, 4, {1, 2, 3, 4});
  for (auto [begin, end] : std::vector<std::pair<int, int>>{{-1, 2}, {3, 2}, {2, 5}}) {
    SelectionConfig c = Config(SelectionMethod::kQ2C, 2);
    c.protect_begin = begin;
    c.protect_end = end;
    EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), &scores), absl::StatusCode::kInvalidArgument)
        << begin << " " << end;
  }
  EXPECT_EQ(SelectCode(Config(SelectionMethod::kRandom, 2), Shape(1, -1, 4), nullptr),
            absl::StatusCode::kInvalidArgument);
  SelectionConfig c = Config(SelectionMethod::kStreamingLLM, 2);
  c.recent_tokens = -2;  // -1 is kRecentAuto
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), nullptr), absl::StatusCode::kInvalidArgument);
  c = Config(SelectionMethod::kStreamingLLM, 2);
  c.sink_tokens = -1;
  EXPECT_EQ(SelectCode(c, Shape(1, 1, 4), nullptr), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvcodec
