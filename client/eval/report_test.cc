#include "client/eval/report.h"

#include <cmath>
#include <string>
#include <vector>

#include "client/eval/plot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvwire::eval {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

EvalRecord Rec(const std::string& config, const std::string& id, double score, uint64_t bytes,
               int agree, int steps) {
  EvalRecord r;
  r.config = config;
  r.codec = config;
  r.example_id = id;
  r.task = "passkey";
  r.score = score;
  r.cached_tokens = 100;
  r.frame_bytes = bytes;
  r.raw_bytes = 1000;
  r.header_bytes = 10;
  r.elements = 500;
  r.kept_elements = 500;
  r.encode_seconds = 0.1;
  r.decode_seconds = 0.2;
  r.generate_seconds = 0.3;
  r.fidelity.steps = steps;
  r.fidelity.agreements = agree;
  r.fidelity.kl_sum = 0.01 * (steps - agree);
  r.key_error = {0.1, 0.3};
  r.value_error = {0.2, std::nan("")};
  return r;
}

std::vector<EvalRecord> Records() {
  return {Rec("full", "a", 1.0, 1000, 4, 4), Rec("full", "b", 0.0, 1000, 4, 4),
          Rec("int8", "a", 1.0, 500, 4, 4),  Rec("int8", "b", 0.0, 500, 3, 4),
          Rec("int4", "a", 0.0, 250, 2, 4),  Rec("int4", "b", 0.0, 250, 2, 4),
          Rec("bad", "a", 0.0, 600, 1, 4),   Rec("bad", "b", 0.0, 600, 1, 4)};
}

std::vector<ConfigLabel> Order() {
  return {{"full", "full", "", ""}, {"int8", "int8", "", ""}, {"int4", "int4", "", ""},
          {"bad", "bad", "", ""}, {"missing", "m", "", ""}};
}

TEST(SummarizeTest, MeansBytesFidelityAndFront) {
  const EvalSummary s = Summarize(Records(), Order(), "full", Quality::kTaskScore);
  ASSERT_EQ(s.configs.size(), 5u);
  const ConfigSummary& full = s.configs[0];
  EXPECT_EQ(full.examples, 2);
  EXPECT_DOUBLE_EQ(full.score, 0.5);
  EXPECT_DOUBLE_EQ(full.score_stderr, 0.5);  // sd 0.7071 / sqrt(2)
  EXPECT_DOUBLE_EQ(full.relative_score, 1.0);
  EXPECT_DOUBLE_EQ(full.bytes_per_request, 1000);
  EXPECT_DOUBLE_EQ(full.bytes_per_token, 10);
  EXPECT_DOUBLE_EQ(full.bits_per_element, 16);
  EXPECT_DOUBLE_EQ(full.bandwidth_fraction, 1.0);
  EXPECT_DOUBLE_EQ(full.seconds_per_request, 0.6);
  const ConfigSummary& int8 = s.configs[1];
  EXPECT_DOUBLE_EQ(int8.fidelity.agreement(), 7.0 / 8.0);
  EXPECT_NEAR(int8.fidelity.mean_kl(), 0.01 / 8, 1e-12);
  EXPECT_DOUBLE_EQ(int8.relative_score, 1.0);
  ASSERT_EQ(int8.key_error_by_layer.size(), 2u);
  EXPECT_DOUBLE_EQ(int8.key_error_by_layer[1], 0.3);
  EXPECT_DOUBLE_EQ(int8.key_error, 0.2);
  EXPECT_DOUBLE_EQ(int8.value_error, 0.2);  // NaN layer skipped
  // Front on task score against bytes: int4 (cheapest), int8 (best score at less than full).
  EXPECT_TRUE(s.configs[2].pareto);
  EXPECT_TRUE(int8.pareto);
  EXPECT_FALSE(full.pareto);  // same score as int8 at twice the bytes
  EXPECT_FALSE(s.configs[3].pareto);
  EXPECT_EQ(s.configs[4].examples, 0);
  EXPECT_FALSE(s.configs[4].pareto);
  EXPECT_TRUE(std::isnan(s.configs[4].score));
  // On agreement the full cache is on the front (agreement 1).
  EXPECT_TRUE(Summarize(Records(), Order(), "full", Quality::kAgreement).configs[0].pareto);
}

TEST(PairedDeltaTest, BeatsOnlyBeyondNoise) {
  std::vector<EvalRecord> r;
  for (int i = 0; i < 20; ++i) {
    const std::string id = std::to_string(i);
    r.push_back(Rec("full", id, 0.5, 1, 1, 1));
    // Noisy: +-0.1 around the reference.
    r.push_back(Rec("noisy", id, i % 2 ? 0.6 : 0.4, 1, 1, 1));
    // Consistently better by 0.2.
    r.push_back(Rec("better", id, 0.7, 1, 1, 1));
  }
  const PairedDelta noisy = PairedScoreDelta(r, "noisy", "full");
  EXPECT_EQ(noisy.examples, 20);
  EXPECT_NEAR(noisy.mean, 0.0, 1e-12);
  EXPECT_GT(noisy.stderr_, 0.0);
  EXPECT_FALSE(BeatsBeyondNoise(noisy));
  const PairedDelta better = PairedScoreDelta(r, "better", "full");
  EXPECT_NEAR(better.mean, 0.2, 1e-12);
  EXPECT_TRUE(BeatsBeyondNoise(better));
  EXPECT_EQ(PairedScoreDelta(r, "none", "full").examples, 0);
  EXPECT_FALSE(BeatsBeyondNoise(PairedScoreDelta(r, "none", "full")));
}

TEST(ReportTest, TableCsvJsonAndSeedTable) {
  EvalSummary s = Summarize(Records(), Order(), "full", Quality::kTaskScore);
  const std::string table = FormatTable(s);
  EXPECT_THAT(table, HasSubstr("int8"));
  EXPECT_THAT(table, HasSubstr("* = on the Pareto front of task_score"));
  EXPECT_THAT(table, HasSubstr("%full"));

  const std::string csv = ToCsv(s);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 6);
  EXPECT_THAT(csv, HasSubstr("int8,int8,,,2,0.5,"));
  EXPECT_THAT(csv, HasSubstr(",0.1;0.3,0.2;,"));  // per-layer lists, NaN empty

  const nlohmann::json j = nlohmann::json::parse(ToJson(s, R"({"model":"m"})"));
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["quality"], "task_score");
  ASSERT_EQ(j["configs"].size(), 5u);
  EXPECT_EQ(j["configs"][1]["agreement"], 0.875);
  EXPECT_TRUE(j["configs"][4]["score"].is_null());

  const std::string md = SeedTable(s, "Quantization");
  EXPECT_THAT(md, HasSubstr("### Quantization"));
  EXPECT_THAT(md, HasSubstr("| int8 | 0.500 | 100.0% |"));

  // Pivot labels give rows x columns.
  std::vector<ConfigLabel> order = {{"full", "full", "", ""},
                                    {"int8", "int8", "INT8", "per-token"},
                                    {"int4", "int4", "INT4", "per-token"},
                                    {"bad", "bad", "INT4", "per-channel"}};
  const std::string pivot = SeedTable(Summarize(Records(), order, "full", Quality::kTaskScore), "Q");
  EXPECT_THAT(pivot, HasSubstr("| Method | per-token | per-channel |"));
  EXPECT_THAT(pivot, HasSubstr("| INT8 | 0.500 (100.0%) | - |"));
  EXPECT_THAT(pivot, HasSubstr("| INT4 | 0.000 (0.0%) | 0.000 (0.0%) |"));
  EXPECT_THAT(pivot, HasSubstr("| full |"));  // unlabelled rows listed below
}

TEST(PlotTest, SvgMarksTheFront) {
  const EvalSummary s = Summarize(Records(), Order(), "full", Quality::kTaskScore);
  const std::string svg = PlotSvg(s, "score <vs> bytes");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_THAT(svg, HasSubstr("</svg>"));
  EXPECT_THAT(svg, HasSubstr("score &lt;vs&gt; bytes"));
  EXPECT_THAT(svg, HasSubstr("<polyline"));
  // Four points with data; two filled (front).
  size_t circles = 0, pos = 0;
  while ((pos = svg.find("<circle", pos)) != std::string::npos) ++circles, ++pos;
  EXPECT_EQ(circles, 4u);
  EXPECT_THAT(svg, Not(HasSubstr("missing")));
  EvalSummary empty;
  EXPECT_THAT(PlotSvg(empty, "t"), HasSubstr("no data"));
}

TEST(QualityTest, Names) {
  EXPECT_EQ(*ParseQuality("kl"), Quality::kKl);
  EXPECT_EQ(QualityName(Quality::kTaskScore), "task_score");
  EXPECT_FALSE(ParseQuality("f1").ok());
}

}  // namespace
}  // namespace kvwire::eval
