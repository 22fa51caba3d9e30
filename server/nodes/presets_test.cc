#include "server/nodes/presets.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::nodes {
namespace {

using ::testing::HasSubstr;

TEST(PresetsTest, ParsesNamesConfigsAndBuiltinAliases) {
  PresetMap presets;
  ASSERT_TRUE(ParsePresets("# site presets\n\n"
                           "  fast = select=snapkv;keep=0.25;plan=*:int4;entropy=rans  \n"
                           "safe=full\n",
                           "presets.conf", presets)
                  .ok());
  ASSERT_EQ(presets.size(), 2u);
  auto fast = kvcodec::CodecConfig::Parse("select=snapkv;keep=0.25;plan=*:int4;entropy=rans");
  ASSERT_TRUE(fast.ok());
  EXPECT_EQ(presets.at("fast"), fast->ToString());
  EXPECT_EQ(presets.at("safe"), kvcodec::Preset("full")->ToString());
  // Files shadow built-ins; unknown names are NotFound.
  PresetMap shadow = {{"full", fast->ToString()}};
  EXPECT_EQ(FindPreset(shadow, "full")->ToString(), fast->ToString());
  EXPECT_EQ(FindPreset(shadow, "int4-rans")->ToString(), kvcodec::Preset("int4-rans")->ToString());
  EXPECT_EQ(FindPreset(shadow, "nosuch").status().code(), absl::StatusCode::kNotFound);
}

TEST(PresetsTest, RejectsBadLinesWithTheirPlace) {
  PresetMap p;
  absl::Status s = ParsePresets("ok = full\nno equals sign\n", "a.conf", p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("a.conf:2"));
  p.clear();
  EXPECT_THAT(ParsePresets("Bad Name = full\n", "b", p).message(), HasSubstr("bad preset name"));
  p.clear();
  EXPECT_THAT(ParsePresets("x = full\nx = int8\n", "c", p).message(), HasSubstr("defined twice"));
  p.clear();
  EXPECT_THAT(ParsePresets("x = plan=*:int9\n", "d", p).message(), HasSubstr("d:1: preset 'x'"));
  p.clear();
  EXPECT_THAT(ParsePresets("x = nosuchpreset\n", "e", p).message(), HasSubstr("unknown preset"));
}

TEST(PresetsTest, QualityLadderJsonGivesItsRungs) {
  PresetMap p;
  ASSERT_TRUE(ParsePresets(R"({"version":1,"rungs":[
      {"name":"q0","codec":"plan=*:raw","score":1,"bytes_per_token":100},
      {"name":"q1","codec":"select=snapkv;keep=0.5;plan=*:int4;entropy=rans"}]})",
                           "ladder.json", p)
                  .ok());
  EXPECT_EQ(p.size(), 2u);
  EXPECT_TRUE(p.count("q0") && p.count("q1"));
  p.clear();
  EXPECT_THAT(ParsePresets(R"({"rungs":[{"name":"q0"}]})", "l.json", p).message(),
              HasSubstr("rung 0"));
  p.clear();
  EXPECT_THAT(ParsePresets(R"({"rungs": 3})", "l.json", p).message(), HasSubstr("rungs"));
}

TEST(PresetsTest, LoadsFilesInOrderAndReportsMissingOnes) {
  const auto dir = std::filesystem::temp_directory_path() / "presets_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a.conf") << "a = int8\n";
  std::ofstream(dir / "b.conf") << "a = int4\n";
  auto one = LoadPresetFiles({(dir / "a.conf").string()});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->size(), 1u);
  auto clash = LoadPresetFiles({(dir / "a.conf").string(), (dir / "b.conf").string()});
  EXPECT_THAT(clash.status().message(), HasSubstr("defined twice"));
  EXPECT_EQ(LoadPresetFiles({(dir / "none.conf").string()}).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvwire::nodes
