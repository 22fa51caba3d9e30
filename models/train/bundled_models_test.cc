// Each shipped checkpoint (models/target, models/scout) loads through the service's code path
// and reproduces, on the small fixed held-out set, the accuracy its eval.json records; and the
// target meets the acceptance bar its model card claims when it claims it. Absent checkpoints
// are a failure: the repository ships them.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "models/train/model_card.h"

namespace kvwire::train {
namespace {

namespace fs = std::filesystem;

fs::path ModelDir(const std::string& name) {
  const char* root = std::getenv("KVWIRE_SOURCE_DIR");
  return fs::path(root ? root : ".") / "models" / name;
}

int Correct(const nlohmann::json& by_length) {
  int n = 0;
  for (const auto& [length, by_depth] : by_length.items()) {
    for (const auto& [depth, ct] : by_depth.items()) n += ct[0].get<int>();
  }
  return n;
}

void CheckModel(const std::string& name) {
  const fs::path dir = ModelDir(name);
  ASSERT_TRUE(fs::exists(dir / "config.json")) << dir << " is not shipped";
  std::ifstream f(dir / "eval.json");
  ASSERT_TRUE(f) << dir << "/eval.json is missing: run kvwire_train card";
  const nlohmann::json recorded = nlohmann::json::parse(f);
  ASSERT_TRUE(recorded.contains("fixed_check"));
  auto measured = MeasureModel(FixedCheckOptions(dir.string()));
  ASSERT_TRUE(measured.ok()) << measured.status();
  for (const auto& [task, by_length] : recorded["fixed_check"].items()) {
    ASSERT_TRUE((*measured)["accuracy"].contains(task)) << task;
    // Float summation order may differ between machines; one flipped answer is tolerated.
    EXPECT_NEAR(Correct((*measured)["accuracy"][task]), Correct(by_length), 1)
        << name << " " << task;
  }
}

TEST(BundledModelsTest, TargetReproducesItsRecordedAccuracy) { CheckModel("target"); }
TEST(BundledModelsTest, ScoutReproducesItsRecordedAccuracy) { CheckModel("scout"); }

// The card's acceptance text names each length that clears the bar at every depth and the
// cells that do not.
TEST(ModelCardTest, AcceptanceTextNamesTheCellsBelowTheBar) {
  nlohmann::json measured = {
      {"accuracy",
       {{"passkey", {{"512", {{"0.00", {20, 20}}, {"1.00", {20, 20}}}},
                     {"1024", {{"0.00", {20, 20}}, {"1.00", {20, 20}}}}}},
        {"multikey", {{"512", {{"0.00", {19, 20}}, {"1.00", {20, 20}}}},
                      {"1024", {{"0.00", {18, 20}}, {"1.00", {20, 20}}}}}}}}};
  const std::string text = AcceptanceText(measured, 0.95);
  EXPECT_NE(text.find("512 words: met"), std::string::npos) << text;
  EXPECT_NE(text.find("1024 words: not met: multikey 90% at depth 0.00 (18/20)"), std::string::npos)
      << text;
  EXPECT_NE(AcceptanceText(measured, 0.8).find("1024 words: met"), std::string::npos);
  EXPECT_EQ(LengthsMeetingBar(measured, 0.95), std::vector<std::string>{"512"});
  EXPECT_EQ(LengthsMeetingBar(measured, 0.8), (std::vector<std::string>{"1024", "512"}));
  EXPECT_TRUE(LengthsMeetingBar(measured, 1.0).empty());
  measured["accuracy"].erase("multikey");
  EXPECT_NE(AcceptanceText(measured, 0.8).find("Not measured"), std::string::npos);
}

}  // namespace
}  // namespace kvwire::train
