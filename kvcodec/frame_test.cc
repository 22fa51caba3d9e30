#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kvcodec/dtype.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/synthetic.h"

namespace kvcodec {
namespace {

using ::testing::HasSubstr;

CacheShape SmallShape(DType dtype = DType::kBFloat16) {
  return CacheShape{.num_layers = 3, .num_kv_heads = 2, .head_dim = 64, .num_tokens = 96, .dtype = dtype};
}

CodecConfig Config(const std::string& text) {
  auto c = CodecConfig::Parse(text);
  EXPECT_TRUE(c.ok()) << text << ": " << c.status();
  return *c;
}

struct RoundTrip {
  std::vector<uint8_t> frame;
  std::vector<DecodedLayer> layers;
  ByteAccounting acct;
  FrameInfo info;
};

RoundTrip EncodeDecode(const SyntheticCache& cache, const CodecConfig& config, const Selection& sel) {
  RoundTrip rt;
  auto frame = EncodeFrame(cache.shape, config, "model-A", cache.positions, cache.views(), sel, &rt.acct);
  EXPECT_TRUE(frame.ok()) << frame.status();
  if (!frame.ok()) return rt;
  rt.frame = *frame;
  auto layers = DecodeFrame(rt.frame, {}, "model-A", &rt.info);
  EXPECT_TRUE(layers.ok()) << layers.status();
  if (layers.ok()) rt.layers = *std::move(layers);
  return rt;
}

// Largest |decoded - original| / max|original| over the kept tokens of every head.
double MaxRelativeError(const SyntheticCache& cache, const RoundTrip& rt, bool values) {
  const CacheShape& s = cache.shape;
  double max_err = 0, max_abs = 0;
  for (const DecodedLayer& layer : rt.layers) {
    const auto& src = values ? cache.values[layer.layer] : cache.keys[layer.layer];
    const auto& dec = values ? layer.values : layer.keys;
    for (int h = 0; h < s.num_kv_heads; ++h) {
      for (size_t i = 0; i < layer.kept[h].size(); ++i) {
        for (int c = 0; c < s.head_dim; ++c) {
          const size_t src_idx = (static_cast<size_t>(h) * s.num_tokens + layer.kept[h][i]) * s.head_dim + c;
          const float a = LoadAsFloat(src.data(), s.dtype, src_idx);
          const float b = LoadAsFloat(dec[h].data(), s.dtype, i * s.head_dim + c);
          max_err = std::max(max_err, static_cast<double>(std::fabs(a - b)));
          max_abs = std::max(max_abs, static_cast<double>(std::fabs(a)));
        }
      }
    }
  }
  return max_abs > 0 ? max_err / max_abs : max_err;
}

TEST(FrameTest, RawIsBitExactForEveryDtypeAndCoder) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (const char* entropy : {"none", "zstd", "rans"}) {
      const SyntheticCache cache = MakeSyntheticCache(SmallShape(dtype), 1);
      const RoundTrip rt = EncodeDecode(cache, Config(std::string("plan=*:raw;entropy=") + entropy),
                                        Selection::KeepAll(cache.shape));
      ASSERT_EQ(rt.layers.size(), 3u);
      for (const DecodedLayer& l : rt.layers) {
        for (int h = 0; h < 2; ++h) {
          const size_t bytes = cache.shape.num_tokens * cache.shape.head_dim * DTypeSize(dtype);
          ASSERT_EQ(l.keys[h].size(), bytes);
          EXPECT_EQ(0, std::memcmp(l.keys[h].data(), cache.keys[l.layer].data() + h * bytes, bytes));
          EXPECT_EQ(0, std::memcmp(l.values[h].data(), cache.values[l.layer].data() + h * bytes, bytes));
        }
      }
    }
  }
}

TEST(FrameTest, HeaderDescribesTheFrame) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 2);
  const CodecConfig config = Config("plan=*:int4,0:raw;entropy=rans;chunk=2");
  const RoundTrip rt = EncodeDecode(cache, config, Selection::KeepAll(cache.shape));
  EXPECT_EQ(rt.info.shape.num_layers, 3);
  EXPECT_EQ(rt.info.shape.head_dim, 64);
  EXPECT_EQ(rt.info.num_chunks, 2);
  EXPECT_EQ(rt.info.model_fingerprint, "model-A");
  EXPECT_EQ(rt.info.config_text, config.ToString());
  EXPECT_EQ(rt.info.positions, cache.positions);
}

TEST(FrameTest, ExplicitPositionsSurvive) {
  SyntheticCache cache = MakeSyntheticCache(SmallShape(), 3);
  for (int t = 0; t < cache.shape.num_tokens; ++t) cache.positions[t] = 1000 + 3 * t - (t % 5 == 0 ? 1 : 0);
  const RoundTrip rt = EncodeDecode(cache, Config("plan=*:raw"), Selection::KeepAll(cache.shape));
  EXPECT_EQ(rt.info.positions, cache.positions);
}

TEST(FrameTest, QuantizedErrorWithinBounds) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 4);
  // Per-token asymmetric INT-b: error <= half a step = range / (2 (2^b - 1)), plus bf16 rounding.
  const std::pair<const char*, double> cases[] = {
      {"plan=*:int8;entropy=rans", 0.5 / 255 * 2 + 0.01},
      {"plan=*:int4;entropy=zstd", 0.5 / 15 * 2 + 0.01},
      {"plan=*:int2/g16", 0.5 / 3 * 2 + 0.01},
      {"plan=*:int4/channel;entropy=rans", 0.5 / 15 * 2 + 0.01},
  };
  for (const auto& [text, bound] : cases) {
    const RoundTrip rt = EncodeDecode(cache, Config(text), Selection::KeepAll(cache.shape));
    EXPECT_LE(MaxRelativeError(cache, rt, false), bound) << text;
    EXPECT_LE(MaxRelativeError(cache, rt, true), bound) << text;
  }
}

TEST(FrameTest, MixedPlanKeepsLayerZeroExact) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 5);
  const RoundTrip rt = EncodeDecode(cache, Config("plan=*:int4,0:raw;entropy=rans"), Selection::KeepAll(cache.shape));
  ASSERT_EQ(rt.layers.size(), 3u);
  const size_t bytes = cache.shape.num_tokens * cache.shape.head_dim * 2;
  EXPECT_EQ(0, std::memcmp(rt.layers[0].keys[1].data(), cache.keys[0].data() + bytes, bytes));
  EXPECT_NE(0, std::memcmp(rt.layers[1].keys[1].data(), cache.keys[1].data() + bytes, bytes));
}

TEST(FrameTest, SelectionIsCarriedPerHead) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 6);
  Selection sel = Selection::KeepAll(cache.shape);
  sel.kept[0] = {{0, 1, 2, 50, 95}, {0, 1, 2, 50, 95}};  // shared
  sel.kept[1] = {{3, 4}, {10, 20, 30, 40}};              // per head
  sel.kept[2] = {{}, {7}};                               // a head may keep nothing
  const RoundTrip rt = EncodeDecode(cache, Config("plan=*:raw"), sel);
  ASSERT_EQ(rt.layers.size(), 3u);
  for (int l = 0; l < 3; ++l) EXPECT_EQ(rt.layers[l].kept, sel.kept[l]) << l;
  EXPECT_EQ(rt.layers[1].keys[1].size(), 4u * 64 * 2);
  EXPECT_EQ(MaxRelativeError(cache, rt, false), 0.0);
  EXPECT_LT(rt.acct.kept_fraction(), 0.1);
}

TEST(FrameTest, EveryCodingRoundTrips) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(DType::kFloat16), 7);
  for (const char* text :
       {"plan=*:fp16", "plan=*:bf16", "plan=*:int3;entropy=rans", "plan=*:svd16",
        "plan=*:int4;delta=seq", "plan=*:int4;delta=gseq/4;entropy=zstd", "plan=*:int4;delta=anchor/10;entropy=rans",
        "plan=*:int4/channel/g32;delta=anchor/8/open", "plan=*k:int8/channel,*v:int2/g32;entropy=rans"}) {
    const RoundTrip rt = EncodeDecode(cache, Config(text), Selection::KeepAll(cache.shape));
    EXPECT_EQ(rt.layers.size(), 3u) << text;
    EXPECT_LT(MaxRelativeError(cache, rt, true), 1.0) << text;
  }
}

TEST(FrameTest, AccountingAddsUp) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 8);
  const RoundTrip rt = EncodeDecode(cache, Config("plan=*:int4;entropy=rans"), Selection::KeepAll(cache.shape));
  const ByteAccounting& a = rt.acct;
  EXPECT_EQ(a.total_bytes, rt.frame.size());
  EXPECT_EQ(a.header_bytes + a.index_bytes + a.scale_bytes + a.payload_bytes + a.framing_bytes, a.total_bytes);
  EXPECT_EQ(a.raw_bytes, cache.shape.num_elements() * 2);
  EXPECT_DOUBLE_EQ(a.kept_fraction(), 1.0);
  EXPECT_LT(a.bits_per_element(), 5.0);
  EXPECT_GT(a.bits_per_element(), 2.0);
  EXPECT_NEAR(a.bandwidth_fraction(), a.bits_per_element() / 16, 1e-9);
}

TEST(FrameTest, StreamingDecodeYieldsLayersAsChunksArrive) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 9);
  auto enc = FrameEncoder::Create(cache.shape, Config("plan=*:int8"), "m", cache.positions);
  ASSERT_TRUE(enc.ok());
  FrameDecoder dec({}, "m");
  ASSERT_TRUE(dec.Feed((*enc)->Header()).ok());
  ASSERT_NE(dec.info(), nullptr);
  const auto views = cache.views();
  const Selection sel = Selection::KeepAll(cache.shape);
  for (int c = 0; c < (*enc)->num_chunks(); ++c) {
    auto chunk = (*enc)->EncodeChunk(c, std::span(views).subspan(c, 1), std::span(sel.kept).subspan(c, 1));
    ASSERT_TRUE(chunk.ok());
    // Byte by byte for the first chunk: any split must work.
    if (c == 0) {
      for (uint8_t b : *chunk) ASSERT_TRUE(dec.Feed({&b, 1}).ok());
    } else {
      ASSERT_TRUE(dec.Feed(*chunk).ok());
    }
    auto layers = dec.TakeLayers();
    ASSERT_EQ(layers.size(), 1u);
    EXPECT_EQ(layers[0].layer, c);
    EXPECT_FALSE(dec.complete());
  }
  EXPECT_FALSE(dec.Finish().ok());  // no trailer yet
}

TEST(FrameTest, FingerprintMismatchIsRejected) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 10);
  auto frame = EncodeFrame(cache.shape, Config("plan=*:int8"), "model-A", cache.positions, cache.views(),
                           Selection::KeepAll(cache.shape));
  ASSERT_TRUE(frame.ok());
  auto bad = DecodeFrame(*frame, {}, "model-B");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad.status().message(), HasSubstr("fingerprint"));
  EXPECT_TRUE(DecodeFrame(*frame, {}, "").ok());
}

TEST(FrameTest, LimitsAreEnforcedBeforeAllocation) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 11);
  auto frame = EncodeFrame(cache.shape, Config("plan=*:raw"), "", cache.positions, cache.views(),
                           Selection::KeepAll(cache.shape));
  ASSERT_TRUE(frame.ok());
  DecodeLimits small;
  small.max_tokens = 50;
  EXPECT_EQ(DecodeFrame(*frame, small).status().code(), absl::StatusCode::kResourceExhausted);
  DecodeLimits tiny_bytes;
  tiny_bytes.max_decoded_bytes = 1000;
  EXPECT_EQ(DecodeFrame(*frame, tiny_bytes).status().code(), absl::StatusCode::kResourceExhausted);
  DecodeLimits tiny_chunk;
  tiny_chunk.max_chunk_bytes = 100;
  EXPECT_EQ(DecodeFrame(*frame, tiny_chunk).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(FrameTest, EncoderRejectsBadInput) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(), 12);
  Selection sel = Selection::KeepAll(cache.shape);
  sel.kept[1][0] = {5, 3};
  EXPECT_FALSE(EncodeFrame(cache.shape, Config("plan=*:raw"), "", cache.positions, cache.views(), sel).ok());
  sel.kept[1][0] = {96};
  EXPECT_FALSE(EncodeFrame(cache.shape, Config("plan=*:raw"), "", cache.positions, cache.views(), sel).ok());
  EXPECT_FALSE(FrameEncoder::Create(cache.shape, Config("plan=*:int4/g48"), "", cache.positions).ok());
  EXPECT_FALSE(FrameEncoder::Create(cache.shape, Config("plan=*:raw"), std::string(65, 'x'), cache.positions).ok());
  EXPECT_FALSE(FrameEncoder::Create(cache.shape, Config("plan=*:raw"), "", {}).ok());
  CacheShape zero = cache.shape;
  zero.num_layers = 0;
  EXPECT_FALSE(FrameEncoder::Create(zero, Config("plan=*:raw"), "", cache.positions).ok());
}

TEST(FrameTest, EmptyPromptEncodesAndDecodes) {
  CacheShape shape = SmallShape();
  shape.num_tokens = 0;
  const SyntheticCache cache = MakeSyntheticCache(shape, 13);
  const RoundTrip rt = EncodeDecode(cache, Config("plan=*:int4;entropy=rans"), Selection::KeepAll(shape));
  ASSERT_EQ(rt.layers.size(), 3u);
  EXPECT_TRUE(rt.layers[0].kept[0].empty());
}

TEST(FrameTest, EncodedSizeNeverExceedsBound) {
  const SyntheticCache cache = MakeSyntheticCache(SmallShape(DType::kFloat32), 14);
  for (const char* text : {"plan=*:raw", "plan=*:raw;entropy=zstd/1", "plan=*:raw;entropy=rans"}) {
    auto frame = EncodeFrame(cache.shape, Config(text), "", cache.positions, cache.views(),
                             Selection::KeepAll(cache.shape));
    ASSERT_TRUE(frame.ok());
    EXPECT_LE(frame->size(), MaxEncodedSize(cache.shape));
  }
}

}  // namespace
}  // namespace kvcodec
