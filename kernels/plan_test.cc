// Host-side launch planning: stream sizes against kvcodec, kernel choice, launch shapes, row
// maps and what is refused.
#include "kernels/plan.h"

#include <gtest/gtest.h>

#include "kernels/fast_ops.h"
#include "kvcodec/quant.h"
#include "kvcodec/section.h"

namespace kvwire::gpu {
namespace {

kvcodec::QuantSpec Spec(const std::string& text) {
  return kvcodec::BitPlan::Parse("*:" + text)->Resolve(0, false);
}
kvcodec::DeltaConfig Delta(const std::string& text) {
  return kvcodec::CodecConfig::Parse("delta=" + text)->delta;
}

TEST(PlanTest, StreamSizesAreKvcodecs) {
  const std::vector<int> rows = {37, 0, 50, 1, 12};
  for (const char* spec : {"int8", "int4/g16", "int3", "int2/g8", "int4/channel", "int2/channel/g7"}) {
    for (const char* delta : {"none", "seq", "gseq/4", "anchor/5/open"}) {
      auto plan = PlanSection(Spec(spec), Delta(delta), 64, rows);
      ASSERT_TRUE(plan.ok()) << plan.status();
      const kvcodec::SectionShape shape{64, rows};
      const kvcodec::DeltaConfig d = kvcodec::SectionDelta(Spec(spec), Delta(delta));
      EXPECT_EQ(static_cast<size_t>(plan->main_rows), kvcodec::NumMainRows(d, shape)) << spec << " " << delta;
      EXPECT_EQ(static_cast<size_t>(plan->ref_rows), kvcodec::NumRefRows(d, shape));
      EXPECT_EQ(2 * plan->main_param_pairs, kvcodec::NumMainParams(Spec(spec), d, shape));
      const int bits = Spec(spec).bits();
      EXPECT_EQ(plan->main_code_bytes, (plan->main_rows * 64 * bits + 7) / 8);
      EXPECT_GE(plan->main_code_alloc, plan->main_code_bytes);
      EXPECT_EQ(plan->main_code_alloc % 4, 0u);
      EXPECT_EQ(plan->head_rows.back(), 100);
      EXPECT_EQ(plan->head_main.back() + plan->head_ref.back(), 100);
    }
  }
}

TEST(PlanTest, ChoosesKernelsByConfiguration) {
  const std::vector<int> rows = {100, 100};
  auto p = PlanSection(Spec("int4"), Delta("none"), 128, rows);
  EXPECT_TRUE(p->fast_quantize && p->fast_dequantize);
  EXPECT_EQ(p->token_chain_rows, 1);
  EXPECT_EQ(p->token_items, 200);
  p = PlanSection(Spec("int3"), Delta("none"), 128, rows);  // 3-bit lanes do not fill whole words
  EXPECT_FALSE(p->fast_quantize || p->fast_dequantize);
  p = PlanSection(Spec("int4/g8"), Delta("none"), 128, rows);  // groups narrower than a lane
  EXPECT_FALSE(p->fast_quantize);
  p = PlanSection(Spec("int4/channel"), Delta("none"), 128, rows);
  EXPECT_EQ(p->encode_path, EncodePath::kChannelParallel);
  EXPECT_TRUE(p->fast_dequantize);
  EXPECT_EQ(p->max_chunks, 1);
  p = PlanSection(Spec("int4/channel"), Delta("none"), 128, std::vector<int>{1000});
  EXPECT_EQ(p->max_chunks, (1000 + kChannelChunkRows - 1) / kChannelChunkRows);
  // Closed-loop sequential delta: one chain per head (per token) or per channel.
  p = PlanSection(Spec("int4"), Delta("seq"), 128, rows);
  EXPECT_EQ(p->token_chain_rows, 0);
  EXPECT_EQ(p->token_items, 2);
  EXPECT_TRUE(p->decode_chains);
  p = PlanSection(Spec("int4/channel"), Delta("gseq/10"), 128, rows);
  EXPECT_EQ(p->encode_path, EncodePath::kChannelChain);
  EXPECT_EQ(p->chains, 20);
  // Open loop and anchor: rows independent once the references are known.
  p = PlanSection(Spec("int4"), Delta("seq/open"), 128, rows);
  EXPECT_EQ(p->token_chain_rows, 1);
  p = PlanSection(Spec("int4/channel"), Delta("anchor/10"), 128, rows);
  EXPECT_EQ(p->encode_path, EncodePath::kChannelParallel);
  EXPECT_FALSE(p->decode_chains);
}

TEST(PlanTest, LaunchShapesFitSharedMemory) {
  for (int d : {16, 64, 128, 256, 1024}) {
    for (int g : {0, 1, 16}) {
      if (g > 0 && d % g) continue;
      auto p = PlanSection(Spec(g ? "int4/g" + std::to_string(g) : "int4"), Delta("none"), d, std::vector<int>{3});
      ASSERT_TRUE(p.ok()) << d << " " << g << " " << p.status();
      EXPECT_LE(p->row_scratch_bytes * p->warps_per_block, kMaxBlockScratch);
      EXPECT_GE(p->warps_per_block, 1);
      EXPECT_EQ(p->row_scratch_bytes % 16, 0u);
    }
  }
  // A row too wide for a warp's shared memory is refused, not launched.
  EXPECT_EQ(PlanSection(Spec("int4/g1"), Delta("none"), 4096, std::vector<int>{1}).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(PlanTest, RefusesWhatKvcodecRefuses) {
  const std::vector<int> rows = {4};
  EXPECT_EQ(PlanSection(Spec("bf16"), Delta("none"), 64, rows).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanSection(Spec("int4/g24"), Delta("none"), 64, rows).status(),
            kvcodec::CheckQuantSpec(Spec("int4/g24"), kvcodec::SectionShape{64, rows}));
  kvcodec::DeltaConfig bad = Delta("gseq/4");
  bad.group_size = 1;
  EXPECT_EQ(PlanSection(Spec("int4"), bad, 64, rows).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PlanTest, RowOffsets) {
  const std::vector<std::vector<int32_t>> kept = {{0, 5, 9}, {}, {2}};
  auto cache = CacheRowOffsets(kept, 10, 4);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(*cache, (std::vector<int64_t>{0, 20, 36, (2 * 10 + 2) * 4}));
  auto padded = PaddedRowOffsets(kept, 3, 4);
  ASSERT_TRUE(padded.ok());
  EXPECT_EQ(*padded, (std::vector<int64_t>{0, 4, 8, 2 * 3 * 4}));
  EXPECT_FALSE(PaddedRowOffsets(kept, 2, 4).ok());
  EXPECT_FALSE(CacheRowOffsets(kept, 9, 4).ok());
  EXPECT_EQ(RowsPerHead(kept), (std::vector<int>{3, 0, 1}));
}

TEST(PlanTest, FastRowsEligibility) {
  EXPECT_TRUE(FastRowsEligible(128, 4, 128));
  EXPECT_TRUE(FastRowsEligible(512, 8, 32));
  EXPECT_FALSE(FastRowsEligible(1024, 4, 1024));  // 64 lanes: more than a warp per row
  EXPECT_FALSE(FastRowsEligible(80, 4, 80));      // 5 lanes: not a power of two
  EXPECT_FALSE(FastRowsEligible(128, 4, 48));     // does not divide head_dim
}

}  // namespace
}  // namespace kvwire::gpu
