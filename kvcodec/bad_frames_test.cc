// Every defect a frame can arrive with must end in a clear error, never a crash or a cache.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/synthetic.h"

namespace kvcodec {
namespace {

std::string CorpusDir() {
  const char* src = std::getenv("KVWIRE_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/corpus/bad_frames";
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(BadFramesTest, GoldenCorpusIsRejected) {
  std::ifstream manifest(CorpusDir() + "/MANIFEST.tsv");
  ASSERT_TRUE(manifest.good()) << "missing " << CorpusDir() << "/MANIFEST.tsv";
  std::string line;
  int checked = 0;
  while (std::getline(manifest, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::stringstream fields(line);
    std::string file, code, message;
    std::getline(fields, file, '\t');
    std::getline(fields, code, '\t');
    std::getline(fields, message);
    const std::vector<uint8_t> frame = ReadFile(CorpusDir() + "/" + file);
    auto decoded = DecodeFrame(frame, {}, "kvwire-test-model");
    ASSERT_FALSE(decoded.ok()) << file << " was accepted";
    EXPECT_EQ(absl::StatusCodeToString(decoded.status().code()), code) << file << ": " << decoded.status();
    EXPECT_THAT(std::string(decoded.status().message()), ::testing::HasSubstr(message)) << file;
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

std::vector<uint8_t> SmallFrame(const std::string& config) {
  const CacheShape shape{2, 2, 16, 12, DType::kBFloat16};
  const SyntheticCache cache = MakeSyntheticCache(shape, 42);
  auto frame = EncodeFrame(shape, *CodecConfig::Parse(config), "fp", cache.positions, cache.views(),
                           Selection::KeepAll(shape));
  EXPECT_TRUE(frame.ok());
  return *frame;
}

TEST(BadFramesTest, EveryTruncationIsRejected) {
  for (const char* config : {"plan=*:int4;entropy=rans", "plan=*:raw;entropy=zstd"}) {
    const std::vector<uint8_t> frame = SmallFrame(config);
    for (size_t n = 0; n < frame.size(); ++n) {
      auto r = DecodeFrame(std::span(frame).first(n));
      ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes accepted";
      EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
    }
  }
}

TEST(BadFramesTest, EverySingleBitFlipIsRejected) {
  const std::vector<uint8_t> frame = SmallFrame("plan=*:int4,0:raw;entropy=rans");
  for (size_t i = 0; i < frame.size(); ++i) {
    for (int bit : {0, 5}) {
      std::vector<uint8_t> bad = frame;
      bad[i] ^= static_cast<uint8_t>(1 << bit);
      auto r = DecodeFrame(bad);
      ASSERT_FALSE(r.ok()) << "flip of bit " << bit << " at byte " << i << " accepted";
    }
  }
}

TEST(BadFramesTest, ErrorIsSticky) {
  std::vector<uint8_t> frame = SmallFrame("plan=*:int8");
  frame[frame.size() / 2] ^= 1;
  FrameDecoder dec;
  const absl::Status first = dec.Feed(frame);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(dec.Feed(frame).code(), first.code());
  EXPECT_EQ(dec.Finish().code(), first.code());
}

}  // namespace
}  // namespace kvcodec
