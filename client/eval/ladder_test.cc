#include "client/eval/ladder.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::eval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParetoFrontTest, KeepsUndominatedPointsInCostOrder) {
  // (cost, quality): c dominates e (cheaper, better); b and f tie on cost, the better stays;
  // d is worse than a cheaper point.
  const std::vector<double> cost = {1, 2, 3, 4, 5, 2, 6};
  const std::vector<double> quality = {0.1, 0.5, 0.7, 0.6, 0.65, 0.4, 0.9};
  EXPECT_THAT(ParetoFront(cost, quality), ElementsAre(0, 1, 2, 6));
}

TEST(ParetoFrontTest, DuplicatesAndNaN) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> cost = {1, 1, nan, 0.5};
  const std::vector<double> quality = {0.5, 0.5, 1.0, nan};
  EXPECT_THAT(ParetoFront(cost, quality), ElementsAre(0));
  EXPECT_TRUE(ParetoFront({}, {}).empty());
}

QualityLadder ThreeRungs() {
  QualityLadder ladder;
  ladder.model_fingerprint = "qwen2-00";
  ladder.quality_metric = "task_score";
  ladder.reference_score = 0.8;
  ladder.rungs = BuildLadderRungs({
      {"int4", "plan=*:int4;entropy=rans", 0.78, 0.975, 130, 100, 4.1},
      {"full", "plan=*:raw", 0.8, 1.0, 512, 100, 16.0},
      {"int2", "plan=*:int2/g32;entropy=rans", 0.5, 0.625, 70, 100, 2.2},
      {"worse", "plan=*:int3", 0.4, 0.5, 100, 100, 3.0},  // dominated by int4... and by int2
  });
  return ladder;
}

TEST(LadderTest, BuildKeepsTheFrontSortedByBytes) {
  const QualityLadder ladder = ThreeRungs();
  ASSERT_EQ(ladder.rungs.size(), 3u);
  EXPECT_EQ(ladder.rungs[0].name, "int2");
  EXPECT_EQ(ladder.rungs[1].name, "int4");
  EXPECT_EQ(ladder.rungs[2].name, "full");
  // A floor on relative score removes rungs before the front is taken.
  auto floor = BuildLadderRungs(
      {{"a", "x", 0.5, 0.625, 70, 0, 0}, {"b", "y", 0.78, 0.975, 130, 0, 0}}, 0.9);
  ASSERT_EQ(floor.size(), 1u);
  EXPECT_EQ(floor[0].name, "b");
}

TEST(LadderTest, JsonRoundTrips) {
  const QualityLadder ladder = ThreeRungs();
  auto parsed = ParseLadder(LadderToJson(ladder));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->model_fingerprint, "qwen2-00");
  EXPECT_EQ(parsed->quality_metric, "task_score");
  EXPECT_DOUBLE_EQ(parsed->reference_score, 0.8);
  ASSERT_EQ(parsed->rungs.size(), 3u);
  EXPECT_EQ(parsed->rungs[1].codec, "plan=*:int4;entropy=rans");
  EXPECT_DOUBLE_EQ(parsed->rungs[1].bytes_per_token, 130);
  EXPECT_DOUBLE_EQ(parsed->rungs[1].fixed_bytes, 100);
}

TEST(LadderTest, ParseRejectsBadLadders) {
  EXPECT_EQ(ParseLadder("[").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ParseLadder(R"({"version":2,"quality_metric":"x","rungs":[]})").status().message()),
              HasSubstr("version"));
  EXPECT_THAT(std::string(ParseLadder(R"({"version":1,"quality_metric":"x","rungs":[]})").status().message()),
              HasSubstr("non-empty"));
  EXPECT_THAT(std::string(ParseLadder(R"({"version":1,"quality_metric":"x","rungs":[
      {"name":"a","codec":"c","score":1,"bytes_per_token":-1}]})").status().message()),
              HasSubstr("negative"));
  EXPECT_THAT(std::string(ParseLadder(R"({"version":1,"quality_metric":"x","rungs":[
      {"name":"a","codec":"c","score":1,"bytes_per_token":5},
      {"name":"b","codec":"c","score":2,"bytes_per_token":4}]})").status().message()),
              HasSubstr("ascending"));
  EXPECT_THAT(std::string(ParseLadder(R"({"version":1,"quality_metric":"x","rungs":[
      {"name":"a","codec":"c","score":"high","bytes_per_token":5}]})").status().message()),
              HasSubstr("\"score\" must be a number"));
  EXPECT_EQ(LoadLadderFile("/nonexistent/ladder.json").status().code(), absl::StatusCode::kNotFound);
}

TEST(LadderTest, LoadsFromFile) {
  const std::string path = (std::filesystem::temp_directory_path() / "kvwire_ladder_test.json").string();
  std::ofstream(path) << LadderToJson(ThreeRungs());
  auto loaded = LoadLadderFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rungs.size(), 3u);
  std::filesystem::remove(path);
}

TEST(PickRungTest, BestRungWithinTheByteBudget) {
  const QualityLadder ladder = ThreeRungs();
  // 1000 tokens: int2 = 70,100 bytes, int4 = 130,100, full = 512,100.
  auto pick = PickRungForBudget(ladder, 1000, 200000);
  ASSERT_TRUE(pick.ok());
  EXPECT_TRUE(pick->fits);
  EXPECT_EQ(ladder.rungs[pick->index].name, "int4");
  EXPECT_DOUBLE_EQ(pick->predicted_bytes, 130100);
  EXPECT_EQ(ladder.rungs[PickRungForBudget(ladder, 1000, 130100)->index].name, "int4");
  EXPECT_EQ(ladder.rungs[PickRungForBudget(ladder, 1000, 130099)->index].name, "int2");
  EXPECT_EQ(ladder.rungs[PickRungForBudget(ladder, 1000, 1e12)->index].name, "full");
  // Nothing fits: the smallest rung, flagged.
  auto none = PickRungForBudget(ladder, 1000, 10);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->fits);
  EXPECT_EQ(ladder.rungs[none->index].name, "int2");
  EXPECT_EQ(PickRungForBudget(QualityLadder{}, 1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PickRungForBudget(ladder, -1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PickRungForBudget(ladder, 1, std::nan("")).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PickRungTest, LinkRateAndTimeToFirstToken) {
  const QualityLadder ladder = ThreeRungs();
  // 1 MB/s, 0.5 s target, 0.3 s of compute: 200,000 bytes for the frame -> int4 at 1000 tokens.
  auto pick = PickRungForLink(ladder, 1000, 1e6, 0.5, 0.3);
  ASSERT_TRUE(pick.ok());
  EXPECT_TRUE(pick->fits);
  EXPECT_EQ(ladder.rungs[pick->index].name, "int4");
  // A faster link affords the full cache; a target already spent affords nothing.
  EXPECT_EQ(ladder.rungs[PickRungForLink(ladder, 1000, 1e9, 0.5, 0.3)->index].name, "full");
  EXPECT_FALSE(PickRungForLink(ladder, 1000, 1e9, 0.2, 0.3)->fits);
  EXPECT_EQ(PickRungForLink(ladder, 1000, 0, 1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PickRungForLink(ladder, 1000, 1e6, INFINITY, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::eval
