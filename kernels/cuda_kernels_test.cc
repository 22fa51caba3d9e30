// Every CUDA kernel against kvcodec, bit for bit, on the first CUDA device. Skips itself (with a
// message saying why) in a build without CUDA or on a machine without a device; the same checks
// run on the host reference backend in kernels_test.
#include <gtest/gtest.h>

#include <memory>

#include "kernels/backend.h"
#include "kernels/test_util.h"

namespace kvwire::gpu {
namespace {

using testing::CacheCase;

class CudaKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = MakeCudaBackend(0);
    if (!backend.ok()) GTEST_SKIP() << "no CUDA device to run the kernels on: " << backend.status();
    backend_ = *std::move(backend);
  }
  std::unique_ptr<Backend> backend_;
};

TEST_F(CudaKernelsTest, SectionsMatchKvcodec) {
  for (kvcodec::DType dtype : {kvcodec::DType::kBFloat16, kvcodec::DType::kFloat16, kvcodec::DType::kFloat32}) {
    for (int head_dim : {128, 64, 12}) {
      CacheCase cache{.heads = 5, .tokens = 300, .head_dim = head_dim, .dtype = dtype, .seed = 17};
      const auto data = testing::MakeCache(cache);
      const auto kept = testing::MakeKept(cache, 9);
      for (const auto& sc : testing::AllSectionCases()) {
        EXPECT_TRUE(testing::SectionMatchesKvcodec(*backend_, sc, cache, kept, data))
            << sc.name << " " << kvcodec::DTypeName(dtype) << " d=" << head_dim;
      }
    }
  }
}

// Enough rows that every launch has many blocks, and whole-head per-channel groups span many
// reduction chunks.
TEST_F(CudaKernelsTest, LargeSectionsMatchKvcodec) {
  CacheCase cache{.heads = 8, .tokens = 4096, .head_dim = 128, .dtype = kvcodec::DType::kBFloat16, .seed = 5};
  const auto data = testing::MakeCache(cache);
  const auto kept = testing::MakeKept(cache, 2);
  for (const auto& sc : testing::AllSectionCases()) {
    if (sc.spec.coding != kvcodec::ValueCoding::kInt4 && sc.spec.coding != kvcodec::ValueCoding::kInt2) continue;
    EXPECT_TRUE(testing::SectionMatchesKvcodec(*backend_, sc, cache, kept, data)) << sc.name;
  }
}

TEST_F(CudaKernelsTest, CopyRowsMatchesKvcodec) {
  for (int d : {128, 13}) {
    EXPECT_TRUE(testing::CopyRowsMatchesKvcodec(*backend_, CacheCase{.heads = 4, .tokens = 600, .head_dim = d}));
  }
}

TEST_F(CudaKernelsTest, RansDecodesKvcodecStreams) {
  EXPECT_TRUE(testing::RansMatchesKvcodec(*backend_, 11));
  EXPECT_TRUE(testing::RansMatchesKvcodec(*backend_, 12));
  EXPECT_TRUE(testing::RansErrorsMatchKvcodec(*backend_, 3));
}

}  // namespace
}  // namespace kvwire::gpu
