#include "server/modelio/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>

#include <gtest/gtest.h>

namespace kvwire::modelio {
namespace {

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

TEST(DtypeTest, NamesSizesAndParsing) {
  EXPECT_EQ(DtypeName(Dtype::kBF16), "BF16");
  EXPECT_EQ(DtypeName(Dtype::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(DtypeSize(Dtype::kBool), 1u);
  EXPECT_EQ(DtypeSize(Dtype::kF16), 2u);
  EXPECT_EQ(DtypeSize(Dtype::kU32), 4u);
  EXPECT_EQ(DtypeSize(Dtype::kI64), 8u);
  for (int i = 0; i <= static_cast<int>(Dtype::kU64); ++i) {
    const Dtype d = static_cast<Dtype>(i);
    EXPECT_EQ(ParseDtype(DtypeName(d)), d);
  }
  EXPECT_EQ(ParseDtype("bf16"), std::nullopt);  // the format is case-sensitive
  EXPECT_EQ(ParseDtype("F4"), std::nullopt);
  EXPECT_EQ(TorchDtypeName(Dtype::kBF16), "bfloat16");
  EXPECT_TRUE(IsFloatDtype(Dtype::kF64));
  EXPECT_FALSE(IsFloatDtype(Dtype::kI8));
}

TEST(DtypeTest, BF16KnownValues) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBF16(FromBits(0x3f808000)), 0x3f80);  // tie, kept part even: down
  EXPECT_EQ(FloatToBF16(FromBits(0x3f818000)), 0x3f82);  // tie, kept part odd: up
  EXPECT_EQ(FloatToBF16(FromBits(0x3f808001)), 0x3f81);  // above the tie: up
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBF16(FromBits(0x7f7fffff)), 0x7f80);  // rounds up to infinity
  // A NaN whose payload lives only in the low bits must stay NaN.
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(FromBits(0x7f800001)))));
  EXPECT_EQ(BF16ToFloat(0x3f80), 1.0f);
}

TEST(DtypeTest, HalfKnownValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // tie between 65504 and 2^16: to even (inf)
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie with 0: to even
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 units: up
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units, tie: to even
  EXPECT_EQ(FloatToHalf(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 units, tie: to even
  EXPECT_EQ(FloatToHalf(std::ldexp(2047.0f, -25)), 0x0400);  // 1023.5 units: to normal
  EXPECT_EQ(FloatToHalf(1e-30f), 0x0000);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0xfc00), -std::numeric_limits<float>::infinity());
}

TEST(DtypeTest, HalfRoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = BF16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToBF16(f), h) << std::hex << h;
  }
}

// For a sweep of float bit patterns, the conversion must return the nearest representable
// value, and on an exact tie the one with an even last bit. Checked against exact double
// arithmetic rather than against another implementation.
template <typename ToNarrow, typename ToFloat>
void CheckNearestEven(ToNarrow to_narrow, ToFloat to_float, uint16_t max_finite) {
  for (uint64_t bits = 0; bits < 0x7f800000u; bits += 997) {
    const float f = FromBits(static_cast<uint32_t>(bits));
    const uint16_t h = to_narrow(f);
    if (h > max_finite) {  // overflowed to infinity: f must be at least the midpoint
      const double top = to_float(max_finite);
      const double next = top + (top - static_cast<double>(to_float(max_finite - 1)));
      ASSERT_GE(static_cast<double>(f), (top + next) / 2) << f;
      continue;
    }
    const double got = to_float(h);
    const double err = std::fabs(static_cast<double>(f) - got);
    for (uint16_t other : {static_cast<uint16_t>(h - 1), static_cast<uint16_t>(h + 1)}) {
      if (h == 0 && other == 0xffff) continue;
      if (other > max_finite) continue;
      const double other_err = std::fabs(static_cast<double>(f) - to_float(other));
      ASSERT_LE(err, other_err) << "f=" << f << " h=" << h;
      if (err == other_err) {
        ASSERT_EQ(h & 1, 0) << "tie not to even, f=" << f;
      }
    }
  }
}

TEST(DtypeTest, RoundsToNearestEven) {
  CheckNearestEven(FloatToHalf, HalfToFloat, 0x7bff);
  CheckNearestEven(FloatToBF16, BF16ToFloat, 0x7f7f);
}

}  // namespace
}  // namespace kvwire::modelio
