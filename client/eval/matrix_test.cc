#include "client/eval/matrix.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::eval {
namespace {

using ::testing::HasSubstr;

TEST(ConfigSpecTest, PresetsTextAndLabels) {
  auto preset = ParseConfigSpec("int4");
  ASSERT_TRUE(preset.ok()) << preset.status();
  EXPECT_EQ(preset->label.name, "int4");
  EXPECT_EQ(preset->label.codec, kvcodec::Preset("int4")->ToString());

  auto text = ParseConfigSpec(" select=snapkv;keep=0.25;plan=*:int4 ");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->codec.selection.method, kvcodec::SelectionMethod::kSnapKV);
  EXPECT_EQ(text->label.name, text->label.codec);  // unlabelled: canonical text

  auto named = ParseConfigSpec("snap25=select=snapkv;keep=0.25");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->label.name, "snap25");
  EXPECT_DOUBLE_EQ(named->codec.selection.keep_ratio, 0.25);

  auto named_preset = ParseConfigSpec("mine=int8");
  ASSERT_TRUE(named_preset.ok());
  EXPECT_EQ(named_preset->label.name, "mine");

  EXPECT_EQ(ParseConfigSpec("plan=*:int9").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseConfigSpec("nosuchpreset").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseConfigSpec("  ").status().code(), absl::StatusCode::kInvalidArgument);
  // Regression: "label=" ran the default (lossless) codec under that label.
  EXPECT_EQ(ParseConfigSpec("foo= ").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigSpecTest, FileWithCommentsAndErrors) {
  const auto path = std::filesystem::temp_directory_path() / "kvwire_matrix_test.txt";
  std::ofstream(path) << "# a matrix\n\nint8\nq25=select=q2c;keep=0.25;plan=*:int4\n";
  auto configs = ReadConfigFile(path.string());
  ASSERT_TRUE(configs.ok()) << configs.status();
  ASSERT_EQ(configs->size(), 2u);
  EXPECT_EQ((*configs)[1].label.name, "q25");
  std::ofstream(path) << "int8\nplan=bogus\n";
  auto bad = ReadConfigFile(path.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(":2:"));
  std::filesystem::remove(path);
  EXPECT_EQ(ReadConfigFile("/nonexistent/m.txt").status().code(), absl::StatusCode::kNotFound);
}

TEST(NamedMatrixTest, EveryMatrixParsesAndStartsWithFull) {
  const ModelShape shape{4, 16};
  for (const std::string& name : MatrixNames()) {
    auto m = NamedMatrix(name, shape);
    ASSERT_TRUE(m.ok()) << name << ": " << m.status();
    ASSERT_GE(m->size(), 2u) << name;
    EXPECT_EQ((*m)[0].label.name, "full");
    EXPECT_TRUE(IsLossless((*m)[0].codec, 4));
    std::set<std::string> names;
    for (const EvalConfig& c : *m) EXPECT_TRUE(names.insert(c.label.name).second) << name << " " << c.label.name;
  }
  EXPECT_EQ(NamedMatrix("nope", shape).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(NamedMatrix("layers", ModelShape{}).ok());
}

TEST(NamedMatrixTest, SelectionGridAndLayerSweep) {
  auto sel = NamedMatrix("selection", ModelShape{2, 16});
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->size(), 1u + 9 * 4);
  EXPECT_EQ((*sel)[1].label.row, "Q2C");
  EXPECT_EQ((*sel)[1].label.column, "10%");
  EXPECT_EQ((*sel)[2].label.column, "25%");
  auto layers = NamedMatrix("layers", ModelShape{3, 16});
  ASSERT_TRUE(layers.ok());
  EXPECT_EQ(layers->size(), 2u + 2 * 3);
  // Only layer 1 at INT4.
  const EvalConfig* only1 = nullptr;
  for (const EvalConfig& c : *layers) {
    if (c.label.name == "int4-only-L1") only1 = &c;
  }
  ASSERT_NE(only1, nullptr);
  auto plan = kvcodec::BitPlan::Parse(only1->codec.bit_plan);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Resolve(0, false).coding, kvcodec::ValueCoding::kRaw);
  EXPECT_EQ(plan->Resolve(1, true).coding, kvcodec::ValueCoding::kInt4);
  EXPECT_EQ(plan->Resolve(2, false).coding, kvcodec::ValueCoding::kRaw);
  // SVD ranks stop below head_dim.
  auto svd = NamedMatrix("svd", ModelShape{2, 16});
  ASSERT_TRUE(svd.ok());
  EXPECT_EQ(svd->size(), 1u + 2);  // full, svd4, svd8
}

TEST(LosslessTest, OnlyKeepAllRawWithoutDelta) {
  EXPECT_TRUE(IsLossless(*kvcodec::Preset("full"), 3));
  EXPECT_TRUE(IsLossless(*kvcodec::Preset("full-rans"), 3));
  EXPECT_TRUE(IsLossless(*kvcodec::Preset("full-zstd"), 3));
  EXPECT_FALSE(IsLossless(*kvcodec::Preset("int8"), 3));
  EXPECT_FALSE(IsLossless(*kvcodec::Preset("snapkv50"), 3));
  EXPECT_FALSE(IsLossless(*kvcodec::CodecConfig::Parse("plan=*:raw,2:int4"), 3));
  EXPECT_TRUE(IsLossless(*kvcodec::CodecConfig::Parse("plan=*:raw,2:int4"), 2));
}

// A summary of a layers run with hand-set quality values (agreement).
EvalSummary LayersSummary(const std::vector<double>& alone, const std::vector<double>& keep,
                          double all, double full) {
  EvalSummary s;
  s.quality = Quality::kAgreement;
  auto add = [&](const std::string& name, double agreement) {
    ConfigSummary c;
    c.label.name = name;
    if (name == "all-int4") c.label.codec = "plan=*:int4";
    c.examples = 1;
    c.score = std::nan("");  // a fidelity-only run: no task scores
    c.fidelity.steps = 1000;
    c.fidelity.agreements = static_cast<int64_t>(agreement * 1000);
    s.configs.push_back(c);
  };
  add("full", full);
  add("all-int4", all);
  for (size_t l = 0; l < alone.size(); ++l) {
    add("int4-only-L" + std::to_string(l), alone[l]);
    add("fp16-keep-L" + std::to_string(l), keep[l]);
  }
  return s;
}

TEST(LayerSensitivityTest, NamesTheBottleneckLikeSeed003) {
  // Layer 0 carries the loss: alone at INT4 it costs what all layers cost; kept raw it recovers.
  const EvalSummary s =
      LayersSummary({0.78, 1.0, 0.99, 1.0}, {1.0, 0.77, 0.78, 0.77}, 0.77, 1.0);
  auto r = AnalyzeLayers(s, 4, Quality::kAgreement);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bits, "int4");
  EXPECT_NEAR(r->total_loss, 0.23, 1e-9);
  EXPECT_EQ(r->bottlenecks, std::vector<int>{0});
  EXPECT_EQ(r->proposed_plan, "*:int4/token,0:raw");
  const std::string md = LayerSensitivityTable(*r);
  EXPECT_THAT(md, HasSubstr("| **0** |"));
  EXPECT_THAT(md, HasSubstr("`*:int4/token,0:raw`"));
}

TEST(LayerSensitivityTest, NoLossNoBottleneckAndMissingRuns) {
  const EvalSummary flat = LayersSummary({1, 1}, {1, 1}, 1.0, 1.0);
  auto r = AnalyzeLayers(flat, 2, Quality::kAgreement);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->bottlenecks.empty());
  EXPECT_EQ(r->proposed_plan, "*:int4/token");
  EXPECT_EQ(AnalyzeLayers(flat, 3, Quality::kAgreement).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(AnalyzeLayers(flat, 2, Quality::kTaskScore).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(AnalyzeLayers(EvalSummary{}, 2, Quality::kAgreement).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvwire::eval
