// LayerEncoder: a frame encoded layer by layer, with per-layer selection, is byte for byte the
// frame kvcodec encodes from the whole cache and its whole-cache selection.
#include "server/nodes/layer_encoder.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvwire::nodes {
namespace {

constexpr int kLayers = 4, kHeads = 2, kDim = 16, kTokens = 48;

struct Cache {
  kvcodec::CacheShape shape{kLayers, kHeads, kDim, kTokens, kvcodec::DType::kFloat32};
  std::vector<std::vector<uint8_t>> keys, values;
  kvcodec::ImportanceScores scores{kLayers, kHeads, kTokens, {}};
  std::vector<int32_t> positions, token_ids;

  Cache() {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> uniform(0, 1);
    const size_t n = static_cast<size_t>(kHeads) * kTokens * kDim;
    for (int l = 0; l < kLayers; ++l) {
      for (auto* dst : {&keys, &values}) {
        std::vector<float> f(n);
        for (float& x : f) x = normal(rng);
        std::vector<uint8_t> b(n * sizeof(float));
        std::memcpy(b.data(), f.data(), b.size());
        dst->push_back(std::move(b));
      }
    }
    scores.values.resize(static_cast<size_t>(kLayers) * kHeads * kTokens);
    for (float& x : scores.values) x = uniform(rng);
    for (int t = 0; t < kTokens; ++t) {
      positions.push_back(t);
      token_ids.push_back(t % 7);
    }
  }

  engine::PrefillLayer Layer(int l) const {
    engine::PrefillLayer layer;
    layer.layer = l;
    layer.keys = keys[l];
    layer.values = values[l];
    const size_t per = static_cast<size_t>(kHeads) * kTokens;
    std::vector<float> rows(scores.values.begin() + l * per, scores.values.begin() + (l + 1) * per);
    layer.window_scores = layer.question_scores = layer.accumulated_scores = rows;
    return layer;
  }

  std::vector<kvcodec::LayerView> Views() const {
    std::vector<kvcodec::LayerView> v;
    for (int l = 0; l < kLayers; ++l) v.push_back({keys[l].data(), values[l].data()});
    return v;
  }
};

TEST(LayerEncoderTest, FrameEqualsWholeCacheEncoding) {
  const Cache cache;
  for (const std::string text :
       {"plan=*:raw", "plan=*:int8;entropy=rans", "select=snapkv;keep=0.25;plan=*:int4;entropy=rans",
        "select=q2c;keep=0.3;heads=perhead;pyramid=1;plan=*:int4;chunk=2",
        "select=h2o;keep=0.5;heads=adaptive;plan=*:int8", "select=random;keep=0.5;seed=3",
        // Per-layer budgets that set H2O's recent tokens and sit on top of SnapKV's window.
        "select=h2o;keep=0.3;pyramid=1;beta=4;plan=*:int4", "select=snapkv;keep=0.4;window=8;pyramid=1",
        "select=streaming;keep=0.25;plan=*:int4;entropy=zstd", "select=anchor;keep=0.4;plan=*:int4"}) {
    SCOPED_TRACE(text);
    auto config = kvcodec::CodecConfig::Parse(text);
    ASSERT_TRUE(config.ok()) << config.status();
    if (config->selection.method == kvcodec::SelectionMethod::kQ2C) {
      config->selection.protect_begin = 40;
      config->selection.protect_end = 48;
    }
    if (config->selection.method == kvcodec::SelectionMethod::kAnchorRule) {
      config->selection.anchor_token_ids = {3};
    }
    auto selection = kvcodec::Select(config->selection, cache.shape, &cache.scores, cache.token_ids);
    ASSERT_TRUE(selection.ok()) << selection.status();
    auto expected = kvcodec::EncodeFrame(cache.shape, *config, "fp", cache.positions, cache.Views(),
                                         *selection);
    ASSERT_TRUE(expected.ok()) << expected.status();

    std::vector<uint8_t> frame;
    int pieces = 0;
    auto encoder = LayerEncoder::Start(cache.shape, *config, "fp", cache.positions, cache.token_ids,
                                       [&](std::vector<uint8_t> bytes) {
                                         frame.insert(frame.end(), bytes.begin(), bytes.end());
                                         ++pieces;
                                         return true;
                                       });
    ASSERT_TRUE(encoder.ok()) << encoder.status();
    for (int l = 0; l < kLayers; ++l) ASSERT_TRUE((*encoder)->OnLayer(cache.Layer(l)).ok());
    ASSERT_TRUE((*encoder)->Finish().ok());
    EXPECT_EQ(frame, *expected);
    EXPECT_EQ((*encoder)->frame_bytes(), expected->size());
    // Header, one piece per frame chunk, trailer.
    EXPECT_EQ(pieces, 2 + (kLayers + config->layers_per_chunk - 1) / config->layers_per_chunk);
  }
}

TEST(LayerEncoderTest, StopsWhenTheUploadEnds) {
  const Cache cache;
  auto config = kvcodec::CodecConfig::Parse("plan=*:int8");
  int pieces = 0;
  auto encoder = LayerEncoder::Start(cache.shape, *config, "fp", cache.positions, cache.token_ids,
                                     [&](std::vector<uint8_t>) { return ++pieces < 2; });
  ASSERT_TRUE(encoder.ok());
  absl::Status s;
  for (int l = 0; l < kLayers && s.ok(); ++l) s = (*encoder)->OnLayer(cache.Layer(l));
  if (s.ok()) s = (*encoder)->Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  EXPECT_EQ(pieces, 2);
}

TEST(LayerEncoderTest, RejectsLayersOutOfOrderAndMissingScores) {
  const Cache cache;
  auto config = kvcodec::CodecConfig::Parse("select=snapkv;keep=0.5");
  auto sink = [](std::vector<uint8_t>) { return true; };
  auto encoder =
      LayerEncoder::Start(cache.shape, *config, "fp", cache.positions, cache.token_ids, sink);
  ASSERT_TRUE(encoder.ok());
  engine::PrefillLayer no_scores = cache.Layer(0);
  no_scores.window_scores.clear();
  EXPECT_EQ((*encoder)->OnLayer(no_scores).code(), absl::StatusCode::kInternal);
  ASSERT_TRUE((*encoder)->OnLayer(cache.Layer(1)).ok());  // layer 0 never came
  EXPECT_EQ((*encoder)->Finish().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace kvwire::nodes
