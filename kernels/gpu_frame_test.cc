// Frames through the host reference backend against kvcodec: the same bytes on encode, the
// same values on decode, the same errors for every defect.
#include "kernels/gpu_frame.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "kernels/gpu_frame_check.h"
#include "kernels/section_codec.h"
#include "kvcodec/synthetic.h"

namespace kvwire::gpu {
namespace {

TEST(GpuFrameReferenceTest, EveryConfigurationMatchesKvcodec) {
  auto backend = MakeReferenceBackend();
  for (kvcodec::DType dtype : {kvcodec::DType::kBFloat16, kvcodec::DType::kFloat16, kvcodec::DType::kFloat32}) {
    const kvcodec::CacheShape shape{.num_layers = 3, .num_kv_heads = 3, .head_dim = 64, .num_tokens = 70, .dtype = dtype};
    for (const std::string& config : testing::FrameConfigs()) {
      EXPECT_TRUE(testing::FrameMatchesKvcodec(*backend, shape, config, 3)) << config << " " << kvcodec::DTypeName(dtype);
    }
  }
}

TEST(GpuFrameReferenceTest, OddHeadDimMatchesKvcodec) {
  auto backend = MakeReferenceBackend();
  const kvcodec::CacheShape shape{.num_layers = 2, .num_kv_heads = 2, .head_dim = 12, .num_tokens = 33};
  for (const char* config : {"plan=*:int3;entropy=rans", "plan=*:int4/channel/g7;delta=gseq/4",
                             "plan=*:int2;delta=seq;entropy=zstd", "plan=*:raw;entropy=rans"}) {
    EXPECT_TRUE(testing::FrameMatchesKvcodec(*backend, shape, config, 5)) << config;
  }
}

std::string CorpusDir() {
  const char* src = std::getenv("KVWIRE_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/corpus/bad_frames";
}

TEST(GpuFrameReferenceTest, GoldenBadFramesFailAsInKvcodec) {
  auto backend = MakeReferenceBackend();
  std::ifstream manifest(CorpusDir() + "/MANIFEST.tsv");
  ASSERT_TRUE(manifest.good()) << "missing " << CorpusDir() << "/MANIFEST.tsv";
  std::string line;
  int checked = 0;
  while (std::getline(manifest, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::string file = line.substr(0, line.find('\t'));
    std::ifstream in(CorpusDir() + "/" + file, std::ios::binary);
    const std::vector<uint8_t> frame(std::istreambuf_iterator<char>(in), {});
    EXPECT_TRUE(testing::DecodeFailsAsKvcodec(*backend, frame, "kvwire-test-model")) << file;
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

std::vector<uint8_t> SmallFrame(const std::string& config) {
  const kvcodec::CacheShape shape{2, 2, 16, 12, kvcodec::DType::kBFloat16};
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, 42);
  auto frame = kvcodec::EncodeFrame(shape, *kvcodec::CodecConfig::Parse(config), "fp", cache.positions,
                                    cache.views(), kvcodec::Selection::KeepAll(shape));
  EXPECT_TRUE(frame.ok()) << frame.status();
  return *frame;
}

TEST(GpuFrameReferenceTest, TruncationsAndBitFlipsFailAsInKvcodec) {
  auto backend = MakeReferenceBackend();
  for (const char* config : {"plan=*:int4;entropy=rans", "plan=*:raw;entropy=zstd", "plan=*:int4,0:raw;entropy=rans"}) {
    const std::vector<uint8_t> frame = SmallFrame(config);
    for (size_t n = 0; n < frame.size(); ++n) {
      ASSERT_TRUE(testing::DecodeFailsAsKvcodec(*backend, std::span(frame).first(n), ""))
          << config << ": prefix of " << n;
    }
    for (size_t i = 0; i < frame.size(); ++i) {
      std::vector<uint8_t> bad = frame;
      bad[i] ^= 0x21;
      ASSERT_TRUE(testing::DecodeFailsAsKvcodec(*backend, bad, "")) << config << ": flip at " << i;
    }
  }
}

// Streams that pass the checksums but are corrupt inside (an encoder bug or a forged frame):
// the rANS tables and word streams, zstd frames and parameters are checked as kvcodec checks
// them. The chunk hash is recomputed after each change so that the defect reaches the parser.
TEST(GpuFrameReferenceTest, CorruptStreamsBehindValidChecksumsFailAsInKvcodec) {
  auto backend = MakeReferenceBackend();
  for (const char* config : {"plan=*:int4;entropy=rans", "plan=*:int2/channel;delta=anchor/3;entropy=rans",
                             "plan=*:int8;entropy=zstd", "plan=*:int4;delta=seq"}) {
    const std::vector<uint8_t> frame = SmallFrame(config);
    int rejected = 0;
    for (size_t i = 0; i < frame.size(); ++i) {
      std::vector<uint8_t> bad = testing::FlipInsideChunk(frame, i);
      if (bad.empty()) continue;
      EXPECT_TRUE(testing::DecodeMatchesKvcodec(*backend, bad, &rejected)) << config << ": byte " << i;
    }
    EXPECT_GT(rejected, 10) << config;
  }
}

// Two defects: kvcodec reports whichever comes first in the frame, and so must the deferred
// rANS decoding here (a word-stream defect early, a record defect later, and the reverse).
TEST(GpuFrameReferenceTest, FirstOfTwoDefectsIsReported) {
  auto backend = MakeReferenceBackend();
  // Big enough that the code streams are rANS-coded (smaller than stored).
  const kvcodec::CacheShape shape{2, 2, 32, 150, kvcodec::DType::kBFloat16};
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, 8);
  const std::vector<uint8_t> frame =
      *kvcodec::EncodeFrame(shape, *kvcodec::CodecConfig::Parse("plan=*:int4;delta=gseq/4;entropy=rans"), "fp",
                            cache.positions, cache.views(), kvcodec::Selection::KeepAll(shape));
  std::mt19937_64 rng(5);
  int rejected = 0, pairs = 0, rans_first = 0;
  while (pairs < 400) {
    size_t both[2] = {rng() % frame.size(), rng() % frame.size()};
    const std::vector<uint8_t> bad = testing::FlipInsideChunks(frame, both);
    if (bad.empty() || both[0] == both[1]) continue;
    ++pairs;
    ASSERT_TRUE(testing::DecodeMatchesKvcodec(*backend, bad, &rejected)) << "bytes " << both[0] << " and " << both[1];
    const auto kv = kvcodec::DecodeFrame(bad);
    rans_first += !kv.ok() && kv.status().message().find("rANS") != absl::string_view::npos;
  }
  EXPECT_GT(rejected, 50);
  EXPECT_GT(rans_first, 20);  // the case deferred decoding has to get right
}

TEST(GpuFrameReferenceTest, EncodeErrorsMatchKvcodec) {
  auto backend = MakeReferenceBackend();
  const kvcodec::CacheShape shape{2, 2, 16, 12, kvcodec::DType::kFloat32};
  kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, 1);
  float big = 1e6f;
  std::memcpy(cache.keys[1].data() + 40, &big, 4);
  auto config = *kvcodec::CodecConfig::Parse("plan=*:int4");
  kvcodec::Selection unsorted = kvcodec::Selection::KeepAll(shape);
  std::swap(unsorted.kept[0][1][2], unsorted.kept[0][1][3]);
  for (const auto& selection : {kvcodec::Selection::KeepAll(shape), unsorted}) {
    EXPECT_TRUE(testing::EncodeFailsAsKvcodec(*backend, cache, config, selection));
  }
}

}  // namespace
}  // namespace kvwire::gpu
