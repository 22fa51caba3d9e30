// The section kernels on the host reference backend against kvcodec, bit for bit: every
// integer coding, axis, group and delta mode, three cache dtypes, and the error cases.
#include "kernels/section_codec.h"

#include <gtest/gtest.h>

#include <cstring>

#include "kernels/test_util.h"
#include "kvcodec/dtype.h"
#include "kvcodec/quant.h"
#include "kvcodec/section.h"

namespace kvwire::gpu {
namespace {

using testing::AllSectionCases;
using testing::CacheCase;

class SectionReferenceTest : public ::testing::TestWithParam<std::tuple<kvcodec::DType, int>> {};

TEST_P(SectionReferenceTest, EveryConfigurationMatchesKvcodec) {
  const auto [dtype, head_dim] = GetParam();
  auto backend = MakeReferenceBackend();
  CacheCase cache;
  cache.dtype = dtype;
  cache.head_dim = head_dim;
  cache.heads = 5;
  cache.tokens = 61;
  cache.seed = 7 + head_dim;
  const auto data = testing::MakeCache(cache);
  const auto kept = testing::MakeKept(cache, 3);
  for (const auto& sc : AllSectionCases()) {
    EXPECT_TRUE(testing::SectionMatchesKvcodec(*backend, sc, cache, kept, data)) << sc.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    DTypes, SectionReferenceTest,
    ::testing::Combine(::testing::Values(kvcodec::DType::kBFloat16, kvcodec::DType::kFloat16,
                                         kvcodec::DType::kFloat32),
                       // 12: rows that start mid-byte and words shared by two rows.
                       ::testing::Values(64, 12)),
    [](const auto& info) {
      return std::string(kvcodec::DTypeName(std::get<0>(info.param))) + "_d" +
             std::to_string(std::get<1>(info.param));
    });

TEST(SectionReferenceTest, LlamaHeadDimMatchesKvcodec) {
  auto backend = MakeReferenceBackend();
  CacheCase cache;
  cache.head_dim = 128;
  cache.heads = 4;
  cache.tokens = 300;  // more than one 256-row reduction chunk
  const auto data = testing::MakeCache(cache);
  const auto kept = testing::MakeKept(cache, 5);
  for (const auto& sc : AllSectionCases()) {
    if (sc.spec.coding != kvcodec::ValueCoding::kInt4 && sc.spec.coding != kvcodec::ValueCoding::kInt2) continue;
    EXPECT_TRUE(testing::SectionMatchesKvcodec(*backend, sc, cache, kept, data)) << sc.name;
  }
}

// Values beyond the half range, NaN and residuals that overflow fail exactly as kvcodec fails.
TEST(SectionReferenceTest, RangeErrorsMatchKvcodec) {
  auto backend = MakeReferenceBackend();
  CacheCase cache;
  cache.dtype = kvcodec::DType::kFloat32;
  cache.heads = 2;
  cache.tokens = 20;
  cache.head_dim = 16;
  const auto kept = testing::MakeKept(CacheCase{.heads = 4, .tokens = 20}, 1);
  const std::vector<std::vector<int32_t>> all = {kept[3], kept[3]};
  auto set = [&](std::vector<uint8_t>& data, int h, int t, int c, float v) {
    std::memcpy(data.data() + 4 * ((static_cast<size_t>(h) * cache.tokens + t) * cache.head_dim + c), &v, 4);
  };
  std::vector<uint8_t> too_big = testing::MakeCache(cache);
  set(too_big, 1, 7, 3, 70000.0f);
  std::vector<uint8_t> nan = testing::MakeCache(cache);
  set(nan, 0, 2, 5, std::nanf(""));
  // 60000 then -60000 in every channel: a residual of -120000.
  std::vector<uint8_t> swing = testing::MakeCache(cache);
  for (int c = 0; c < cache.head_dim; ++c) {
    set(swing, 0, 4, c, 60000.0f);
    set(swing, 0, 5, c, -60000.0f);
  }
  int failures = 0;
  for (const auto& sc : AllSectionCases()) {
    for (const auto* data : {&too_big, &nan, &swing}) {
      EXPECT_TRUE(testing::SectionMatchesKvcodec(*backend, sc, cache, all, *data)) << sc.name;
    }
    auto q_status = [&](const std::vector<uint8_t>& data) {
      // Counted so the test knows the error paths ran.
      std::vector<float> x(cache.heads * cache.tokens * cache.head_dim);
      std::memcpy(x.data(), data.data(), data.size());
      kvcodec::SectionShape shape{cache.head_dim, {cache.tokens, cache.tokens}};
      return kvcodec::Quantize(sc.spec, kvcodec::SectionDelta(sc.spec, sc.delta), shape, x).ok();
    };
    failures += !q_status(too_big) + !q_status(nan) + !q_status(swing);
  }
  EXPECT_GT(failures, 100);
}

TEST(CopyRowsReferenceTest, EveryDTypePairMatchesKvcodec) {
  auto backend = MakeReferenceBackend();
  for (int d : {64, 13}) {
    EXPECT_TRUE(testing::CopyRowsMatchesKvcodec(*backend, CacheCase{.heads = 4, .tokens = 40, .head_dim = d}));
  }
}

TEST(RansReferenceTest, DecodesKvcodecStreams) {
  auto backend = MakeReferenceBackend();
  EXPECT_TRUE(testing::RansMatchesKvcodec(*backend, 11));
}

TEST(RansReferenceTest, CorruptStreamsFailAsInKvcodec) {
  auto backend = MakeReferenceBackend();
  EXPECT_TRUE(testing::RansErrorsMatchKvcodec(*backend, 3));
}

}  // namespace
}  // namespace kvwire::gpu
