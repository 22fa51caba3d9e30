// Every CUDA kernel against kvcodec, bit for bit, on the first CUDA device. Skips itself (with a
// message saying why) in a build without CUDA or on a machine without a device; the same checks
// run on the host reference backend in kernels_test.
#include <gtest/gtest.h>

#include <memory>

#include <cstdlib>
#include <fstream>

#include "kernels/backend.h"
#include "kernels/gpu_frame.h"
#include "kernels/gpu_frame_check.h"
#include "kernels/test_util.h"
#include "kvcodec/synthetic.h"

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

// Whole frames: GPU encode gives kvcodec's bytes, GPU decode kvcodec's values (so a frame made
// on either side decodes on the other to the same cache).
TEST_F(CudaKernelsTest, FramesMatchKvcodec) {
  for (kvcodec::DType dtype : {kvcodec::DType::kBFloat16, kvcodec::DType::kFloat32}) {
    const kvcodec::CacheShape shape{.num_layers = 4, .num_kv_heads = 8, .head_dim = 128, .num_tokens = 700, .dtype = dtype};
    for (const std::string& config : testing::FrameConfigs()) {
      EXPECT_TRUE(testing::FrameMatchesKvcodec(*backend_, shape, config, 21)) << config;
    }
  }
}

// Views that are not 16-byte aligned (a slice of a larger tensor) must not reach the vector
// loads of the fast paths: same bytes as kvcodec all the same.
TEST_F(CudaKernelsTest, MisalignedViewsEncodeAsKvcodec) {
  const kvcodec::CacheShape shape{2, 4, 128, 300, kvcodec::DType::kBFloat16};
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, 6);
  const auto config = *kvcodec::CodecConfig::Parse("plan=*:int4");
  const auto all = kvcodec::Selection::KeepAll(shape);
  auto expected = kvcodec::EncodeFrame(shape, config, "m", cache.positions, cache.views(), all);
  ASSERT_TRUE(expected.ok());
  std::vector<Buffer> buffers;
  std::vector<DeviceLayerView> views;
  for (int l = 0; l < shape.num_layers; ++l) {
    for (const auto* host : {&cache.keys[l], &cache.values[l]}) {
      auto b = Buffer::Make(*backend_, host->size() + 16);
      ASSERT_TRUE(b.ok());
      ASSERT_TRUE(backend_->CopyToBackend(b->as<uint8_t>() + 2, host->data(), host->size()).ok());
      buffers.push_back(*std::move(b));
    }
    views.push_back({buffers[2 * l].as<uint8_t>() + 2, buffers[2 * l + 1].as<uint8_t>() + 2});
  }
  auto got = EncodeFrameOn(*backend_, shape, config, "m", cache.positions, views, all);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == *expected);
}

TEST_F(CudaKernelsTest, BadFramesFailAsInKvcodec) {
  const char* src = std::getenv("KVWIRE_SOURCE_DIR");
  const std::string dir = std::string(src ? src : ".") + "/tests/corpus/bad_frames";
  std::ifstream manifest(dir + "/MANIFEST.tsv");
  ASSERT_TRUE(manifest.good()) << "missing " << dir << "/MANIFEST.tsv";
  std::string line;
  while (std::getline(manifest, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::string file = line.substr(0, line.find('\t'));
    std::ifstream in(dir + "/" + file, std::ios::binary);
    const std::vector<uint8_t> frame(std::istreambuf_iterator<char>(in), {});
    EXPECT_TRUE(testing::DecodeFailsAsKvcodec(*backend_, frame, "kvwire-test-model")) << file;
  }
  const kvcodec::CacheShape shape{2, 2, 32, 40, kvcodec::DType::kBFloat16};
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, 4);
  for (const char* config : {"plan=*:int4;entropy=rans", "plan=*:int2/channel;delta=anchor/3;entropy=rans"}) {
    auto frame = kvcodec::EncodeFrame(shape, *kvcodec::CodecConfig::Parse(config), "fp", cache.positions,
                                      cache.views(), kvcodec::Selection::KeepAll(shape));
    ASSERT_TRUE(frame.ok());
    int rejected = 0;
    for (size_t i = 0; i < frame->size(); i += 3) {
      const std::vector<uint8_t> bad = testing::FlipInsideChunk(*frame, i);
      if (bad.empty()) continue;
      EXPECT_TRUE(testing::DecodeMatchesKvcodec(*backend_, bad, &rejected)) << config << " byte " << i;
    }
    EXPECT_GT(rejected, 10);
  }
}

}  // namespace
}  // namespace kvwire::gpu
