// The layout header and the scalar math the kernels share with the host, against kvcodec: every
// restated constant, every half pattern, packing at every width, and the properties the
// device's different evaluation orders rely on.
#include "kernels/layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/codec_math.h"
#include "kernels/rans_ops.h"
#include "kernels/rans_plan.h"
#include "kvcodec/dtype.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/quant.h"
#include "kvcodec/rans.h"

namespace kvwire::gpu {
namespace {

TEST(LayoutTest, EnumsAndConstantsAreKvcodecs) {
  EXPECT_EQ(kF32, static_cast<int>(kvcodec::DType::kFloat32));
  EXPECT_EQ(kF16, static_cast<int>(kvcodec::DType::kFloat16));
  EXPECT_EQ(kBF16, static_cast<int>(kvcodec::DType::kBFloat16));
  for (auto d : {kvcodec::DType::kFloat32, kvcodec::DType::kFloat16, kvcodec::DType::kBFloat16}) {
    EXPECT_EQ(DTypeBytes(static_cast<int>(d)), static_cast<int>(kvcodec::DTypeSize(d)));
  }
  EXPECT_EQ(kPerToken, static_cast<int>(kvcodec::QuantAxis::kPerToken));
  EXPECT_EQ(kPerChannel, static_cast<int>(kvcodec::QuantAxis::kPerChannel));
  EXPECT_EQ(kDeltaNone, static_cast<int>(kvcodec::DeltaMode::kNone));
  EXPECT_EQ(kDeltaSeq, static_cast<int>(kvcodec::DeltaMode::kSequential));
  EXPECT_EQ(kDeltaGroupedSeq, static_cast<int>(kvcodec::DeltaMode::kGroupedSequential));
  EXPECT_EQ(kDeltaAnchor, static_cast<int>(kvcodec::DeltaMode::kAnchor));
  for (int bits = 1; bits <= 8; ++bits) EXPECT_EQ(CodesPerSymbol(bits), kvcodec::CodesPerSymbol(bits)) << bits;
  // A ParamPair is one (scale, offset) entry of QuantizedSection::main_params.
  kvcodec::QuantSpec spec;
  spec.coding = kvcodec::ValueCoding::kInt4;
  kvcodec::SectionShape shape{8, {1}};
  const std::vector<float> x = {-1, 0, 1, 2, 3, 4, 5, 6};
  auto q = kvcodec::Quantize(spec, {}, shape, x);
  ASSERT_TRUE(q.ok());
  ParamPair p;
  std::memcpy(&p, q->main_params.data(), sizeof(p));
  EXPECT_EQ(kvcodec::HalfToFloat(p.offset), -1.0f);
  EXPECT_GT(kvcodec::HalfToFloat(p.scale), 0.0f);
}

TEST(LayoutTest, SizesMatchKvcodecsPackingAndSymbols) {
  std::mt19937 rng(1);
  for (int bits = 1; bits <= 8; ++bits) {
    for (size_t n : {0, 1, 7, 31, 32, 33, 100, 1000}) {
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      EXPECT_EQ(PackedBytes(n, bits), kvcodec::PackBits(codes, bits).size());
      EXPECT_EQ(PackedWords(n, bits) * 4, (PackedBytes(n, bits) + 3) / 4 * 4);
    }
  }
  for (int bits : {2, 3, 4, 8}) {
    for (int d : {1, 3, 12, 64, 128}) {
      std::vector<uint8_t> codes(5 * d, 1);
      EXPECT_EQ(static_cast<size_t>(5 * SymbolRowLen(d, bits)), kvcodec::CodesToSymbols(codes, 5, d, bits).size());
      EXPECT_EQ(SymbolAlphabetBits(bits), std::min(8, kvcodec::CodesPerSymbol(bits) * bits));
    }
  }
}

// What PackedWord assembles and PackedCodeAt / SymbolCodeAt read is kvcodec's layout.
TEST(LayoutTest, PackingMatchesKvcodec) {
  std::mt19937 rng(2);
  for (int bits = 1; bits <= 8; ++bits) {
    for (size_t n : {1, 5, 32, 77, 1000}) {
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      const std::vector<uint8_t> packed = kvcodec::PackBits(codes, bits);
      std::vector<uint8_t> ours(PackedWords(n, bits) * 4);
      for (uint64_t w = 0; w < PackedWords(n, bits); ++w) {
        const uint32_t word = PackedWord(w, bits, n, [&](uint64_t i) -> uint64_t { return codes[i]; });
        std::memcpy(ours.data() + 4 * w, &word, 4);
      }
      ASSERT_TRUE(std::equal(packed.begin(), packed.end(), ours.begin())) << bits << " bits, " << n << " codes";
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(PackedCodeAt(packed.data(), i, bits), codes[i]);
    }
  }
  for (int bits : {2, 3, 4, 8}) {
    for (int d : {3, 12, 64}) {
      std::vector<uint8_t> codes(4 * d);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      const auto symbols = kvcodec::CodesToSymbols(codes, 4, d, bits);
      for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < d; ++c) ASSERT_EQ(SymbolCodeAt(symbols.data(), r, c, d, bits), codes[r * d + c]);
      }
    }
  }
}

TEST(CodecMathTest, HalfConversionsMatchKvcodecForEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float ours = HalfToFloat(static_cast<uint16_t>(h)), theirs = kvcodec::HalfToFloat(static_cast<uint16_t>(h));
    ASSERT_EQ(std::bit_cast<uint32_t>(ours), std::bit_cast<uint32_t>(theirs)) << h;
    ASSERT_EQ(std::bit_cast<uint32_t>(BF16ToFloat(static_cast<uint16_t>(h))),
              std::bit_cast<uint32_t>(kvcodec::BF16ToFloat(static_cast<uint16_t>(h))))
        << h;
  }
  std::mt19937 rng(3);
  std::vector<float> f;
  for (int i = 0; i < 1 << 20; ++i) f.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  for (float v : {0.0f, -0.0f, 65504.0f, 65520.0f, 65519.99f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, INFINITY, -INFINITY, NAN}) {
    f.push_back(v);
  }
  std::vector<uint16_t> half(f.size()), bf16(f.size());
  kvcodec::FromFloat(f.data(), f.size(), kvcodec::DType::kFloat16, half.data());
  kvcodec::FromFloat(f.data(), f.size(), kvcodec::DType::kBFloat16, bf16.data());
  for (size_t i = 0; i < f.size(); ++i) {
    ASSERT_EQ(FloatToHalf(f[i]), half[i]) << std::bit_cast<uint32_t>(f[i]);
    ASSERT_EQ(FloatToBF16(f[i]), bf16[i]) << std::bit_cast<uint32_t>(f[i]);
  }
}

// The device reduces a group's (value, key) pairs in a butterfly, the host in order: the
// result must not depend on the order, signed zeros included.
TEST(CodecMathTest, MinMaxMergeIsOrderFree) {
  std::mt19937 rng(4);
  const float pool[] = {0.0f, -0.0f, 1.5f, -2.0f, 1.5f, -0.0f};
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::pair<float, int>> items;
    const int n = 1 + rng() % 40;
    for (int i = 0; i < n; ++i) items.push_back({pool[rng() % 6], i});
    MinMax serial = EmptyMinMax();
    for (const auto& [v, k] : items) PushMinMax(serial, v, k);
    std::shuffle(items.begin(), items.end(), rng);
    std::vector<MinMax> parts(items.size(), EmptyMinMax());
    for (size_t i = 0; i < items.size(); ++i) PushMinMax(parts[i], items[i].first, items[i].second);
    while (parts.size() > 1) {  // pairwise, as a butterfly would
      std::vector<MinMax> next;
      for (size_t i = 0; i + 1 < parts.size(); i += 2) next.push_back(MergeMinMax(parts[i + 1], parts[i]));
      if (parts.size() % 2) next.push_back(parts.back());
      parts = next;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(parts[0].lo), std::bit_cast<uint32_t>(serial.lo));
    ASSERT_EQ(std::bit_cast<uint32_t>(parts[0].hi), std::bit_cast<uint32_t>(serial.hi));
  }
}

// TokenGroupKey reproduces which of two equal minima kvcodec's per-token min/max keeps: with a
// -0 at i and a +0 at j (everything else 1), the stored offset is the half -0 exactly when i's
// key is the smaller. Keys are distinct, so the device's reduction never meets a tie.
TEST(CodecMathTest, TokenGroupKeysOrderTiesAsKvcodec) {
  kvcodec::QuantSpec spec;
  spec.coding = kvcodec::ValueCoding::kInt4;
  for (int n = 1; n <= 40; ++n) {
    std::vector<int> keys;
    for (int i = 0; i < n; ++i) keys.push_back(TokenGroupKey(i, n));
    std::sort(keys.begin(), keys.end());
    ASSERT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end()) << "n=" << n;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        if (i == j) continue;
        std::vector<float> x(n, 1.0f);
        x[i] = -0.0f;
        x[j] = 0.0f;
        auto q = kvcodec::Quantize(spec, {}, kvcodec::SectionShape{n, {1}}, x);
        ASSERT_TRUE(q.ok());
        const bool minus = q->main_params[1] == 0x8000;
        ASSERT_EQ(minus, TokenGroupKey(i, n) < TokenGroupKey(j, n)) << "n=" << n << " -0 at " << i << ", +0 at " << j;
      }
    }
  }
}

// The kernel's incremental walk over coded positions equals the closed form the serial path
// uses, across block boundaries and into the plain tail.
TEST(CodecMathTest, RansCursorMatchesClosedForm) {
  for (uint32_t lanes : {8u, 32u}) {
    for (uint64_t row_len : {1u, 3u, 8u, 64u, 100u}) {
      for (uint64_t n : {8u, 100u, 64u * 256u + 8u, 64u * 600u + 37u, 3000u * 100u}) {
        RansStreamDesc s{};
        s.num_symbols = n;
        s.row_len = static_cast<uint32_t>(row_len);
        s.lanes = lanes;
        s.blocked_rows = row_len > 1 ? (n / row_len) & ~uint64_t{31} : 0;
        RansCursor c = RansCursorStart(s);
        for (; c.k0 < n; RansCursorNext(s, c)) {
          for (uint32_t j = 0; j < lanes && c.k0 + j < n; ++j) {
            uint32_t col_a, col_b;
            ASSERT_EQ(RansCursorLane(s, c, static_cast<int>(j), &col_a),
                      RansOutIndex(s, c.k0 + j, &col_b))
                << "lanes " << lanes << " row_len " << row_len << " n " << n << " k " << c.k0 + j;
            ASSERT_EQ(col_a, col_b);
          }
        }
      }
    }
  }
}

// A rANS stream's header as kvcodec writes it parses into the descriptor the kernel needs.
TEST(RansPlanTest, ParsesKvcodecHeaders) {
  std::vector<uint8_t> symbols(64 * 300);
  for (size_t i = 0; i < symbols.size(); ++i) symbols[i] = static_cast<uint8_t>((i % 64) / 8 + (i % 7 == 0));
  const auto enc = kvcodec::RansEncode(symbols, 64, 8);
  EXPECT_EQ(enc[0], kRansTag);
  RansBatch batch;
  ASSERT_TRUE(AddRansStream(enc, symbols.size(), 64, 8, 16, &batch).ok());
  ASSERT_EQ(batch.streams.size(), 1u);
  const RansStreamDesc& s = batch.streams[0];
  EXPECT_EQ(s.lanes, 8u);
  EXPECT_EQ(s.num_contexts, static_cast<uint32_t>(kvcodec::RansNumContexts(enc)));
  EXPECT_EQ(s.blocked_rows, 288u);  // 300 rows rounded down to a multiple of 32
  EXPECT_EQ(batch.out_bytes, 16 + symbols.size());
  EXPECT_EQ(batch.tables.size(), s.num_contexts);
  // Wrong expectations are the caller's error, as in kvcodec.
  EXPECT_EQ(AddRansStream(enc, symbols.size(), 32, 8, 0, &batch).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AddRansStream(enc, symbols.size(), 64, 4, 0, &batch).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AddRansStream(std::span(enc).first(2), symbols.size(), 64, 8, 0, &batch).code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kvwire::gpu
