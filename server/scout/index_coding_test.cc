#include "server/scout/index_coding.h"

#include <random>

#include <gtest/gtest.h>

namespace kvwire::scout {
namespace {

TEST(IndexCodingTest, TokenIdsRoundTrip) {
  std::mt19937 rng(1);
  std::vector<int32_t> ids;
  for (int i = 0; i < 3000; ++i) ids.push_back(static_cast<int32_t>(rng() % 150000));
  ids.push_back(0);
  ids.push_back(0x7FFFFFFF);
  auto coded = EncodeTokenIds(ids);
  ASSERT_TRUE(coded.ok());
  auto back = DecodeTokenIds(*coded);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, ids);
  auto empty = DecodeTokenIds(*EncodeTokenIds({}));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(IndexCodingTest, RepetitiveTextCompresses) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 1024; ++i) ids.push_back(1000 + (i % 37) * 3);
  auto coded = EncodeTokenIds(ids);
  ASSERT_TRUE(coded.ok());
  EXPECT_LT(coded->size(), 200u);
}

TEST(IndexCodingTest, BadTokenBytesAreRejected) {
  EXPECT_FALSE(EncodeTokenIds(std::vector<int32_t>{3, -1}).ok());
  EXPECT_FALSE(DecodeTokenIds("").ok());
  EXPECT_FALSE(DecodeTokenIds("not zstd at all").ok());
  std::vector<int32_t> ids(100, 7);
  std::string coded = *EncodeTokenIds(ids);
  EXPECT_FALSE(DecodeTokenIds(coded, /*max_tokens=*/99).ok());
  EXPECT_FALSE(DecodeTokenIds(coded.substr(0, coded.size() - 1)).ok());
  // Every single-byte corruption either fails or decodes to something; never crashes.
  for (size_t i = 0; i < coded.size(); ++i) {
    std::string bad = coded;
    bad[i] ^= 0x5A;
    (void)DecodeTokenIds(bad);
  }
}

TEST(IndexCodingTest, PositionsPickTheShorterForm) {
  std::vector<int32_t> dense, sparse;
  for (int p = 0; p < 1000; p += 2) dense.push_back(p);
  for (int p = 5; p < 1000; p += 100) sparse.push_back(p);
  auto d = EncodePositions(dense, 1000);
  auto s = EncodePositions(sparse, 1000);
  ASSERT_TRUE(d.ok() && s.ok());
  EXPECT_EQ(d->size(), 1u + 125u);  // bitmap
  EXPECT_EQ(s->size(), 1u + 10u);   // one-byte gaps
  EXPECT_EQ(*DecodePositions(*d, 1000), dense);
  EXPECT_EQ(*DecodePositions(*s, 1000), sparse);
  auto none = EncodePositions({}, 10);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(DecodePositions(*none, 10)->empty());
}

TEST(IndexCodingTest, BadPositionsAreRejected) {
  EXPECT_FALSE(EncodePositions(std::vector<int32_t>{3, 3}, 10).ok());
  EXPECT_FALSE(EncodePositions(std::vector<int32_t>{5, 2}, 10).ok());
  EXPECT_FALSE(EncodePositions(std::vector<int32_t>{10}, 10).ok());
  EXPECT_FALSE(DecodePositions("", 10).ok());
  EXPECT_FALSE(DecodePositions("\x07", 10).ok());
  std::string bitmap = *EncodePositions(std::vector<int32_t>{0, 2, 4, 6, 8, 9}, 10);
  ASSERT_EQ(bitmap[0], 1);
  EXPECT_FALSE(DecodePositions(bitmap, 9).ok());   // bit 9 is past the end
  EXPECT_FALSE(DecodePositions(bitmap, 17).ok());  // wrong bitmap length
  std::string gaps = *EncodePositions(std::vector<int32_t>{1, 500}, 1000);
  ASSERT_EQ(gaps[0], 2);
  EXPECT_FALSE(DecodePositions(gaps, 400).ok());
  EXPECT_FALSE(DecodePositions(gaps.substr(0, gaps.size() - 1), 1000).ok());
}

}  // namespace
}  // namespace kvwire::scout
