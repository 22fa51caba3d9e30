#include <gtest/gtest.h>

#include "kvcodec/kvcodec.h"

namespace kvcodec {
namespace {

TEST(BitPlanTest, LaterRulesWinAndLayersResolve) {
  auto plan = BitPlan::Parse("*:int4, 0:raw, 2-3v:int8/channel/g64");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->Resolve(0, false).coding, ValueCoding::kRaw);
  EXPECT_EQ(plan->Resolve(1, true).coding, ValueCoding::kInt4);
  EXPECT_EQ(plan->Resolve(2, false).coding, ValueCoding::kInt4);
  const QuantSpec v2 = plan->Resolve(2, true);
  EXPECT_EQ(v2.coding, ValueCoding::kInt8);
  EXPECT_EQ(v2.axis, QuantAxis::kPerChannel);
  EXPECT_EQ(v2.group_size, 64);
  EXPECT_EQ(plan->Resolve(4, true).coding, ValueCoding::kInt4);
  EXPECT_EQ(plan->text(), "*:int4/token,0:raw,2-3v:int8/channel/g64");
}

TEST(BitPlanTest, KeyOnlyRuleAndLowRank) {
  auto plan = BitPlan::Parse("*k:svd32,*v:int2/g32");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Resolve(5, false).coding, ValueCoding::kLowRank);
  EXPECT_EQ(plan->Resolve(5, false).rank, 32);
  EXPECT_EQ(plan->Resolve(5, true).coding, ValueCoding::kInt2);
  EXPECT_EQ(plan->Resolve(5, true).group_size, 32);
}

TEST(BitPlanTest, UnnamedLayersAreRaw) {
  auto plan = BitPlan::Parse("3:int4");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Resolve(0, false).coding, ValueCoding::kRaw);
  EXPECT_EQ(plan->Resolve(3, true).coding, ValueCoding::kInt4);
}

TEST(BitPlanTest, RejectsMalformedRules) {
  for (const char* bad : {"", "int4", "*:int5", "*:int4/diagonal", "5-2:int4", "x:int4",
                          "*:raw/token", "*:svd0", "*:int4/gx", "1-2-3:int8"}) {
    EXPECT_FALSE(BitPlan::Parse(bad).ok()) << bad;
  }
}

TEST(CodecConfigTest, ParsesEveryKeyAndRoundTrips) {
  auto c = CodecConfig::Parse(
      "select=snapkv;keep=0.25;budget=0;heads=adaptive;pyramid=1;beta=10;window=16;kernel=5;"
      "pool=avg;sinks=2;recent=8;seed=7;plan=*:int4,0:raw;delta=anchor/10/open;entropy=zstd/5;chunk=2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->selection.method, SelectionMethod::kSnapKV);
  EXPECT_DOUBLE_EQ(c->selection.keep_ratio, 0.25);
  EXPECT_EQ(c->selection.head_mode, HeadMode::kAdaptive);
  EXPECT_TRUE(c->selection.pyramid);
  EXPECT_EQ(c->selection.window, 16);
  EXPECT_EQ(c->selection.pooling, Pooling::kAvg);
  EXPECT_EQ(c->delta.mode, DeltaMode::kAnchor);
  EXPECT_EQ(c->delta.group_size, 10);
  EXPECT_FALSE(c->delta.closed_loop);
  EXPECT_EQ(c->entropy, EntropyCoder::kZstd);
  EXPECT_EQ(c->zstd_level, 5);
  EXPECT_EQ(c->layers_per_chunk, 2);
  auto again = CodecConfig::Parse(c->ToString());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToString(), c->ToString());
}

TEST(CodecConfigTest, KeepRatioRoundTripsExactly) {
  auto c = CodecConfig::Parse("keep=0.1");
  ASSERT_TRUE(c.ok());
  auto again = CodecConfig::Parse(c->ToString());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->selection.keep_ratio, 0.1);
}

TEST(CodecConfigTest, RejectsUnknownAndInvalidOptions) {
  for (const char* bad :
       {"color=red", "keep=0", "keep=1.5", "select=magic", "entropy=lzma", "delta=gseq",
        "delta=anchor/1", "kernel=4", "chunk=0", "heads=some", "keep=0.5;keep=0.6", "plan=*:int9",
        "noequals"}) {
    auto c = CodecConfig::Parse(bad);
    EXPECT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(PresetTest, EveryPresetParsesAndUnknownIsNotFound) {
  for (const std::string& name : PresetNames()) {
    auto c = Preset(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    EXPECT_TRUE(BitPlan::Parse(c->bit_plan).ok()) << name;
  }
  auto mixed = Preset("mixed-int4");
  ASSERT_TRUE(mixed.ok());
  auto plan = BitPlan::Parse(mixed->bit_plan);
  EXPECT_EQ(plan->Resolve(0, false).coding, ValueCoding::kRaw);
  EXPECT_EQ(plan->Resolve(1, false).coding, ValueCoding::kInt4);
  EXPECT_EQ(Preset("int5").status().code(), absl::StatusCode::kNotFound);
}

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBFloat16), 2u);
  EXPECT_EQ(*ParseDType("bf16"), DType::kBFloat16);
  EXPECT_EQ(*ParseDType(DTypeName(DType::kFloat16)), DType::kFloat16);
  EXPECT_FALSE(ParseDType("int8").ok());
}

}  // namespace
}  // namespace kvcodec
