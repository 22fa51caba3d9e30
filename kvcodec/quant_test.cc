// Tests for quantization, delta coding, bit packing and the dtype conversions.
#include "kvcodec/quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kvcodec/dtype.h"

namespace kvcodec {
namespace {

int BitsOf(ValueCoding c) {
  QuantSpec spec;
  spec.coding = c;
  return spec.bits();
}

QuantSpec Spec(ValueCoding coding, QuantAxis axis = QuantAxis::kPerToken, int group = 0) {
  QuantSpec s;
  s.coding = coding;
  s.axis = axis;
  s.group_size = group;
  return s;
}

DeltaConfig Delta(DeltaMode mode, int group = 10, bool closed = true) {
  DeltaConfig d;
  d.mode = mode;
  d.group_size = group;
  d.closed_loop = closed;
  return d;
}

SectionShape Shape(int head_dim, std::vector<int> rows) {
  SectionShape s;
  s.head_dim = head_dim;
  s.rows_per_head = std::move(rows);
  return s;
}

std::string CodingName(ValueCoding c) { return "Int" + std::to_string(BitsOf(c)); }
std::string AxisName(QuantAxis a) { return a == QuantAxis::kPerToken ? "Token" : "Channel"; }
std::string ModeName(DeltaMode m) {
  switch (m) {
    case DeltaMode::kNone:
      return "None";
    case DeltaMode::kSequential:
      return "Seq";
    case DeltaMode::kGroupedSequential:
      return "GroupedSeq";
    case DeltaMode::kAnchor:
      return "Anchor";
  }
  return "Unknown";
}

std::vector<float> Gaussian(size_t n, uint32_t seed, float sigma = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// For every element, the scale of the quantizer that coded it (walking the layout documented in
// quant.h), so tests can check |x - x'| <= scale / 2.
std::vector<float> ElementScales(const QuantSpec& spec, const DeltaConfig& delta,
                                 const SectionShape& shape, const QuantizedSection& q) {
  const int d = shape.head_dim;
  std::vector<float> out;
  out.reserve(shape.num_elements());
  size_t main_param = 0;  // index of the next pair in main_params
  size_t ref_param = 0;
  for (int rows : shape.rows_per_head) {
    int nmain = 0;
    for (int t = 0; t < rows; ++t) nmain += IsReferenceRow(delta, t) ? 0 : 1;
    const int group = spec.group_size > 0 ? spec.group_size : std::max(nmain, 1);
    int m = 0;
    size_t group_base = main_param;
    for (int t = 0; t < rows; ++t) {
      if (IsReferenceRow(delta, t)) {
        const float s = HalfToFloat(q.ref_params[2 * ref_param]);
        ++ref_param;
        for (int c = 0; c < d; ++c) out.push_back(s);
        continue;
      }
      if (spec.axis == QuantAxis::kPerToken) {
        const int g = spec.group_size > 0 ? spec.group_size : d;
        for (int c = 0; c < d; ++c) {
          out.push_back(HalfToFloat(q.main_params[2 * (main_param + c / g)]));
        }
        main_param += d / g;
      } else {
        if (m % group == 0) {
          group_base = main_param;
          main_param += d;
        }
        for (int c = 0; c < d; ++c) out.push_back(HalfToFloat(q.main_params[2 * (group_base + c)]));
      }
      ++m;
    }
  }
  return out;
}

// Half a step plus float rounding slack.
float Tolerance(float scale, float x) {
  return 0.5f * scale * 1.0002f + 4e-7f * (std::fabs(x) + 1.0f);
}

void ExpectSizesMatch(const QuantSpec& spec, const DeltaConfig& delta, const SectionShape& shape,
                      const QuantizedSection& q) {
  const size_t d = shape.head_dim;
  EXPECT_EQ(q.main_codes.size(), NumMainRows(delta, shape) * d);
  EXPECT_EQ(q.main_params.size(), NumMainParams(spec, delta, shape));
  EXPECT_EQ(q.ref_codes.size(), NumRefRows(delta, shape) * d);
  EXPECT_EQ(q.ref_params.size(), 2 * NumRefRows(delta, shape));
  EXPECT_EQ(NumMainRows(delta, shape) + NumRefRows(delta, shape), shape.num_rows());
}

// ---- plain quantization round trips -------------------------------------------------------------

using RoundTripParam = std::tuple<ValueCoding, QuantAxis, int>;
class QuantRoundTrip : public ::testing::TestWithParam<RoundTripParam> {};

TEST_P(QuantRoundTrip, ErrorWithinHalfStepEverywhere) {
  const auto [coding, axis, group] = GetParam();
  const QuantSpec spec = Spec(coding, axis, group);
  const DeltaConfig none;
  // Heads of uneven length, an empty head and a one-row head.
  const SectionShape shape = Shape(64, {37, 0, 50, 1});
  std::vector<float> x = Gaussian(shape.num_elements(), 1234, 3.0f, 0.5f);
  for (size_t i = 0; i < x.size(); i += 97) x[i] *= 20.0f;  // some outliers
  auto q = Quantize(spec, none, shape, x);
  ASSERT_TRUE(q.ok()) << q.status();
  ExpectSizesMatch(spec, none, shape, *q);
  const int bits = BitsOf(coding);
  for (uint8_t c : q->main_codes) ASSERT_LT(c, 1 << bits);

  std::vector<float> y(x.size());
  ASSERT_TRUE(Dequantize(spec, none, shape, *q, y).ok());
  const std::vector<float> scales = ElementScales(spec, none, shape, *q);
  ASSERT_EQ(scales.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_LE(std::fabs(x[i] - y[i]), Tolerance(scales[i], x[i]))
        << "element " << i << " x=" << x[i] << " y=" << y[i] << " scale=" << scales[i];
  }

  // The scale is not wasted: at most (max - min) / L, plus the cost of rounding the offset down
  // and the scale up to half precision.
  if (axis == QuantAxis::kPerToken) {
    const int g = group > 0 ? group : 64;
    const float levels = static_cast<float>((1 << bits) - 1);
    for (size_t r = 0; r < shape.num_rows(); ++r) {
      for (int c0 = 0; c0 < 64; c0 += g) {
        const float* p = x.data() + r * 64 + c0;
        const float lo = *std::min_element(p, p + g), hi = *std::max_element(p, p + g);
        const float s = scales[r * 64 + c0];
        EXPECT_LE(s,
                  ((hi - lo) + std::fabs(lo) * 0x1p-10f + 1e-7f) / levels * (1 + 0x1p-9f) + 1e-7f);
      }
    }
  }
}

std::string RoundTripName(const ::testing::TestParamInfo<RoundTripParam>& info) {
  const auto [coding, axis, group] = info.param;
  return CodingName(coding) + AxisName(axis) + "G" + std::to_string(group);
}

INSTANTIATE_TEST_SUITE_P(
    PerToken, QuantRoundTrip,
    ::testing::Combine(::testing::Values(ValueCoding::kInt8, ValueCoding::kInt4, ValueCoding::kInt3,
                                         ValueCoding::kInt2),
                       ::testing::Values(QuantAxis::kPerToken), ::testing::Values(0, 8, 32, 64)),
    RoundTripName);
INSTANTIATE_TEST_SUITE_P(
    PerChannel, QuantRoundTrip,
    ::testing::Combine(::testing::Values(ValueCoding::kInt8, ValueCoding::kInt4, ValueCoding::kInt3,
                                         ValueCoding::kInt2),
                       ::testing::Values(QuantAxis::kPerChannel),
                       ::testing::Values(0, 1, 7, 32, 1000)),
    RoundTripName);

TEST(Quant, Int8RelativeErrorSmallOnGaussian) {
  const SectionShape shape = Shape(128, {256, 256});
  const std::vector<float> x = Gaussian(shape.num_elements(), 7);
  double err8 = 0, err4 = 0, norm = 0;
  for (ValueCoding coding : {ValueCoding::kInt8, ValueCoding::kInt4}) {
    auto q = Quantize(Spec(coding), {}, shape, x);
    ASSERT_TRUE(q.ok());
    std::vector<float> y(x.size());
    ASSERT_TRUE(Dequantize(Spec(coding), {}, shape, *q, y).ok());
    double err = 0;
    norm = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      err += (x[i] - y[i]) * (x[i] - y[i]);
      norm += x[i] * x[i];
    }
    (coding == ValueCoding::kInt8 ? err8 : err4) = std::sqrt(err / norm);
  }
  EXPECT_LT(err8, 0.01);  // ~0.6% expected: step ~ 5 sigma / 255
  EXPECT_LT(err4, 0.15);  // ~10%
  EXPECT_GT(err4, 5 * err8);
}

TEST(Quant, ConstantRowsReconstructAlmostExactly) {
  const SectionShape shape = Shape(16, {6});
  const float constants[6] = {0.0f, 1.5f, -7.0f, 0.1f, -1234.567f, 65504.0f};
  std::vector<float> x;
  for (float c : constants) x.insert(x.end(), 16, c);
  for (ValueCoding coding : {ValueCoding::kInt8, ValueCoding::kInt4, ValueCoding::kInt2}) {
    auto q = Quantize(Spec(coding), {}, shape, x);
    ASSERT_TRUE(q.ok());
    std::vector<float> y(x.size());
    ASSERT_TRUE(Dequantize(Spec(coding), {}, shape, *q, y).ok());
    for (int r = 0; r < 6; ++r) {
      const float scale = HalfToFloat(q->main_params[2 * r]);
      if (r < 3 || r == 5) {  // exactly representable in half: exact, scale 0
        EXPECT_EQ(scale, 0.0f) << r;
      }
      for (int c = 0; c < 16; ++c) {
        EXPECT_LE(std::fabs(y[r * 16 + c] - constants[r]), Tolerance(scale, constants[r]));
        EXPECT_LE(std::fabs(y[r * 16 + c] - constants[r]), 1e-3f * std::fabs(constants[r]));
      }
    }
  }
}

TEST(Quant, PerChannelBeatsPerTokenOnOutlierColumn) {
  const int d = 64;
  const SectionShape shape = Shape(d, {256});
  std::vector<float> x = Gaussian(shape.num_elements(), 99);
  std::vector<float> outlier = Gaussian(256, 100, 20.0f, 50.0f);
  for (int t = 0; t < 256; ++t) x[t * d + 5] = outlier[t];
  double mse[2] = {0, 0};
  for (QuantAxis axis : {QuantAxis::kPerToken, QuantAxis::kPerChannel}) {
    const QuantSpec spec = Spec(ValueCoding::kInt4, axis);
    auto q = Quantize(spec, {}, shape, x);
    ASSERT_TRUE(q.ok());
    std::vector<float> y(x.size());
    ASSERT_TRUE(Dequantize(spec, {}, shape, *q, y).ok());
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i) e += (x[i] - y[i]) * (x[i] - y[i]);
    mse[static_cast<int>(axis)] = e / x.size();
  }
  EXPECT_LT(mse[1], 0.25 * mse[0]) << "per-token " << mse[0] << " per-channel " << mse[1];
}

TEST(Quant, AcceptsHalfMaxRejectsBeyondAndNonFinite) {
  const SectionShape shape = Shape(4, {2});
  std::vector<float> x = {65504.0f, -65504.0f, 0.0f, 1.0f, 3.0f, -2.0f, 65504.0f, 65504.0f};
  auto q = Quantize(Spec(ValueCoding::kInt8), {}, shape, x);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> y(x.size());
  ASSERT_TRUE(Dequantize(Spec(ValueCoding::kInt8), {}, shape, *q, y).ok());
  const std::vector<float> scales = ElementScales(Spec(ValueCoding::kInt8), {}, shape, *q);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(y[i]));
    EXPECT_LE(std::fabs(x[i] - y[i]), Tolerance(scales[i], x[i])) << i;
  }
  EXPECT_EQ(y[1], -65504.0f);  // the minimum is the offset itself
  // The top code of row 1 would land above 65504 (offset -2 plus 255 steps of 257); the
  // reconstruction is clamped to the half range so a float16 cache gets no infinity.
  for (float v : y) EXPECT_LE(std::fabs(v), 65504.0f);
  std::vector<uint16_t> h(y.size());
  FromFloat(y.data(), y.size(), DType::kFloat16, h.data());
  for (uint16_t b : h) EXPECT_NE(b & 0x7c00, 0x7c00);

  for (float bad :
       {65505.0f, -70000.0f, std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    std::vector<float> z = x;
    z[3] = bad;
    for (QuantAxis axis : {QuantAxis::kPerToken, QuantAxis::kPerChannel}) {
      auto r = Quantize(Spec(ValueCoding::kInt4, axis), {}, shape, z);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(Quant, RejectsNonFiniteAnywhereInLongRows) {
  // Long rows take the vectorised min/max path; a NaN or infinity must be caught in any lane,
  // including the first element and the scalar tail.
  const SectionShape shape = Shape(72, {3});
  const std::vector<float> x = Gaussian(shape.num_elements(), 8);
  for (size_t pos : {0, 5, 8, 37, 64, 71, 72, 150, 215}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                      std::numeric_limits<float>::infinity(), -1e5f}) {
      std::vector<float> z = x;
      z[pos] = bad;
      for (int group : {0, 8, 24, 72}) {
        for (QuantAxis axis : {QuantAxis::kPerToken, QuantAxis::kPerChannel}) {
          for (DeltaMode mode : {DeltaMode::kNone, DeltaMode::kSequential}) {
            auto q = Quantize(Spec(ValueCoding::kInt4, axis, group), Delta(mode), shape, z);
            EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument)
                << pos << " " << bad << " " << group;
          }
        }
      }
    }
  }
}

TEST(Quant, RejectsBadSpecsAndSizes) {
  const SectionShape shape = Shape(64, {4});
  const std::vector<float> x(shape.num_elements(), 1.0f);
  EXPECT_FALSE(Quantize(Spec(ValueCoding::kInt4, QuantAxis::kPerToken, 24), {}, shape, x).ok());
  EXPECT_FALSE(Quantize(Spec(ValueCoding::kInt4, QuantAxis::kPerToken, -1), {}, shape, x).ok());
  EXPECT_FALSE(Quantize(Spec(ValueCoding::kInt4, QuantAxis::kPerChannel, -1), {}, shape, x).ok());
  EXPECT_FALSE(Quantize(Spec(ValueCoding::kFloat16), {}, shape, x).ok());
  EXPECT_FALSE(Quantize(Spec(ValueCoding::kRaw), {}, shape, x).ok());
  EXPECT_FALSE(
      Quantize(Spec(ValueCoding::kInt4), {}, shape, std::span<const float>(x).subspan(1)).ok());
  EXPECT_FALSE(Quantize(Spec(ValueCoding::kInt4), {}, Shape(0, {4}), {}).ok());
  EXPECT_FALSE(Quantize(Spec(ValueCoding::kInt4), {}, Shape(64, {-1}), {}).ok());
  // Per-channel groups need not divide anything.
  EXPECT_TRUE(Quantize(Spec(ValueCoding::kInt4, QuantAxis::kPerChannel, 3), {}, shape, x).ok());

  EXPECT_TRUE(CheckQuantSpec(Spec(ValueCoding::kInt4, QuantAxis::kPerToken, 16), shape).ok());
  EXPECT_FALSE(CheckQuantSpec(Spec(ValueCoding::kInt4, QuantAxis::kPerToken, 48), shape).ok());
  QuantSpec lr = Spec(ValueCoding::kLowRank);
  EXPECT_FALSE(CheckQuantSpec(lr, shape).ok());
  lr.rank = 8;
  EXPECT_TRUE(CheckQuantSpec(lr, shape).ok());
  EXPECT_TRUE(CheckQuantSpec(Spec(ValueCoding::kBFloat16), shape).ok());
  QuantSpec bad_axis = Spec(ValueCoding::kInt4);
  bad_axis.axis = static_cast<QuantAxis>(7);
  EXPECT_FALSE(CheckQuantSpec(bad_axis, shape).ok());

  // Empty section: nothing to code, still valid.
  auto empty = Quantize(Spec(ValueCoding::kInt4), {}, Shape(64, {0, 0}), {});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->main_codes.empty());
}

// ---- Dequantize validation ----------------------------------------------------------------------

class DequantValidation : public ::testing::TestWithParam<std::tuple<QuantAxis, DeltaMode>> {};

TEST_P(DequantValidation, RejectsWrongSizesAndBadCodes) {
  const auto [axis, mode] = GetParam();
  const QuantSpec spec = Spec(ValueCoding::kInt4, axis, axis == QuantAxis::kPerToken ? 8 : 5);
  const DeltaConfig delta = Delta(mode, 4);
  const SectionShape shape = Shape(16, {13, 9});
  const std::vector<float> x = Gaussian(shape.num_elements(), 5);
  auto q = Quantize(spec, delta, shape, x);
  ASSERT_TRUE(q.ok()) << q.status();
  ExpectSizesMatch(spec, delta, shape, *q);
  std::vector<float> y(x.size());
  ASSERT_TRUE(Dequantize(spec, delta, shape, *q, y).ok());

  auto expect_invalid = [&](QuantizedSection bad) {
    EXPECT_EQ(Dequantize(spec, delta, shape, bad, y).code(), absl::StatusCode::kInvalidArgument);
  };
  for (int delta_size : {-1, 1}) {
    QuantizedSection b = *q;
    b.main_codes.resize(b.main_codes.size() + delta_size);
    expect_invalid(b);
    b = *q;
    b.main_params.resize(b.main_params.size() + delta_size);
    expect_invalid(b);
    if (mode != DeltaMode::kNone) {
      b = *q;
      b.ref_codes.resize(b.ref_codes.size() + delta_size);
      expect_invalid(b);
      b = *q;
      b.ref_params.resize(b.ref_params.size() + delta_size);
      expect_invalid(b);
    }
  }
  if (mode == DeltaMode::kNone) {
    QuantizedSection b = *q;
    b.ref_codes.push_back(0);
    expect_invalid(b);
  }
  // Output of the wrong size.
  std::vector<float> small(x.size() - 1), big(x.size() + 1);
  EXPECT_EQ(Dequantize(spec, delta, shape, *q, small).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Dequantize(spec, delta, shape, *q, big).code(), absl::StatusCode::kInvalidArgument);
  // Same bytes, a shape with one more row.
  std::vector<float> other(23 * 16);
  EXPECT_EQ(Dequantize(spec, delta, Shape(16, {13, 10}), *q, other).code(),
            absl::StatusCode::kInvalidArgument);
  // A code that does not fit in 4 bits.
  QuantizedSection b = *q;
  b.main_codes[b.main_codes.size() / 2] = 16;
  EXPECT_EQ(Dequantize(spec, delta, shape, b, y).code(), absl::StatusCode::kDataLoss);
  // Infinite and NaN parameters.
  b = *q;
  b.main_params[1] = 0x7c00;
  EXPECT_EQ(Dequantize(spec, delta, shape, b, y).code(), absl::StatusCode::kDataLoss);
  if (mode != DeltaMode::kNone) {
    b = *q;
    b.ref_params[0] = 0xfe00;
    EXPECT_EQ(Dequantize(spec, delta, shape, b, y).code(), absl::StatusCode::kDataLoss);
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, DequantValidation,
    ::testing::Combine(::testing::Values(QuantAxis::kPerToken, QuantAxis::kPerChannel),
                       ::testing::Values(DeltaMode::kNone, DeltaMode::kSequential,
                                         DeltaMode::kGroupedSequential, DeltaMode::kAnchor)),
    [](const auto& info) {
      return AxisName(std::get<0>(info.param)) + ModeName(std::get<1>(info.param));
    });

// ---- delta coding -------------------------------------------------------------------------------

TEST(Delta, ReferenceRowsAndCounts) {
  EXPECT_FALSE(IsReferenceRow(Delta(DeltaMode::kNone), 0));
  EXPECT_TRUE(IsReferenceRow(Delta(DeltaMode::kSequential), 0));
  EXPECT_FALSE(IsReferenceRow(Delta(DeltaMode::kSequential), 10));
  for (DeltaMode m : {DeltaMode::kGroupedSequential, DeltaMode::kAnchor}) {
    EXPECT_TRUE(IsReferenceRow(Delta(m, 4), 0));
    EXPECT_FALSE(IsReferenceRow(Delta(m, 4), 3));
    EXPECT_TRUE(IsReferenceRow(Delta(m, 4), 8));
  }
  const SectionShape shape = Shape(8, {10, 0, 1, 4});
  EXPECT_EQ(NumRefRows(Delta(DeltaMode::kNone), shape), 0u);
  EXPECT_EQ(NumRefRows(Delta(DeltaMode::kSequential), shape), 3u);
  EXPECT_EQ(NumRefRows(Delta(DeltaMode::kAnchor, 4), shape), 3u + 1u + 1u);
  EXPECT_EQ(NumMainRows(Delta(DeltaMode::kAnchor, 4), shape), 15u - 5u);
  // Per-channel groups of main rows: head 0 has 7 main rows (groups of 3: 3), head 3 has 3 (1).
  EXPECT_EQ(NumMainParams(Spec(ValueCoding::kInt4, QuantAxis::kPerChannel, 3),
                          Delta(DeltaMode::kAnchor, 4), shape),
            (3u + 1u) * 8 * 2);
  EXPECT_EQ(NumMainParams(Spec(ValueCoding::kInt4, QuantAxis::kPerToken, 4),
                          Delta(DeltaMode::kAnchor, 4), shape),
            10u * 2 * 2);

  const SectionShape s2 = Shape(8, {4});
  const std::vector<float> x(32, 1.0f);
  for (DeltaMode m : {DeltaMode::kGroupedSequential, DeltaMode::kAnchor}) {
    EXPECT_EQ(Quantize(Spec(ValueCoding::kInt4), Delta(m, 1), s2, x).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Quantize(Spec(ValueCoding::kInt4), Delta(m, 0), s2, x).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(Quantize(Spec(ValueCoding::kInt4), Delta(m, 2), s2, x).ok());
  }
  EXPECT_FALSE(CheckDeltaConfig(Delta(static_cast<DeltaMode>(9))).ok());
}

// A long, smooth sequence: what delta coding is meant for.
std::vector<float> SmoothSequence(int rows, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 6.2831853f);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  std::vector<float> x(static_cast<size_t>(rows) * d);
  std::vector<float> phase(d), freq(d);
  for (int c = 0; c < d; ++c) {
    phase[c] = u(rng);
    freq[c] = 0.002f + 0.02f * u(rng) / 6.2831853f;
  }
  for (int t = 0; t < rows; ++t) {
    for (int c = 0; c < d; ++c) x[t * d + c] = 2.0f * std::sin(freq[c] * t + phase[c]) + noise(rng);
  }
  return x;
}

using DeltaParam = std::tuple<DeltaMode, QuantAxis, int /*group*/, ValueCoding>;
class DeltaClosedLoop : public ::testing::TestWithParam<DeltaParam> {};

TEST_P(DeltaClosedLoop, ErrorBoundedByOwnQuantizerAndDoesNotGrow) {
  const auto [mode, axis, group, coding] = GetParam();
  const QuantSpec spec = Spec(coding, axis, group);
  const DeltaConfig delta = Delta(mode, 10, /*closed=*/true);
  const int d = 32;
  const SectionShape shape = Shape(d, {2000, 3, 57});
  std::vector<float> x = SmoothSequence(2000, d, 11);
  const std::vector<float> tail = Gaussian(60 * d, 12);
  x.insert(x.end(), tail.begin(), tail.end());
  auto q = Quantize(spec, delta, shape, x);
  ASSERT_TRUE(q.ok()) << q.status();
  ExpectSizesMatch(spec, delta, shape, *q);
  for (uint8_t c : q->main_codes) ASSERT_LT(c, 1 << BitsOf(coding));
  std::vector<float> y(x.size());
  ASSERT_TRUE(Dequantize(spec, delta, shape, *q, y).ok());
  const std::vector<float> scales = ElementScales(spec, delta, shape, *q);
  // Closed loop: each row's error is its own quantizer's rounding error, whatever came before.
  // Residuals are smaller than values, so the tolerance's float slack is taken on the residual
  // magnitude bound (|x| <= 3 here).
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_LE(std::fabs(x[i] - y[i]), Tolerance(scales[i], 4.0f))
        << "element " << i << " row " << i / d;
  }
  double first = 0, last = 0;
  for (int i = 0; i < 200 * d; ++i) first = std::max<double>(first, std::fabs(x[i] - y[i]));
  for (int i = 1800 * d; i < 2000 * d; ++i) last = std::max<double>(last, std::fabs(x[i] - y[i]));
  EXPECT_LT(last, 2 * first + 1e-4);
}

std::string DeltaName(const ::testing::TestParamInfo<DeltaParam>& info) {
  const auto [mode, axis, group, coding] = info.param;
  return ModeName(mode) + AxisName(axis) + "G" + std::to_string(group) + CodingName(coding);
}

INSTANTIATE_TEST_SUITE_P(
    All, DeltaClosedLoop,
    ::testing::Combine(::testing::Values(DeltaMode::kSequential, DeltaMode::kGroupedSequential,
                                         DeltaMode::kAnchor),
                       ::testing::Values(QuantAxis::kPerToken, QuantAxis::kPerChannel),
                       ::testing::Values(0, 8),
                       ::testing::Values(ValueCoding::kInt4, ValueCoding::kInt2)),
    DeltaName);

TEST(Delta, OpenLoopErrorAccumulatesClosedLoopDoesNot) {
  const int d = 32, rows = 2000;
  const SectionShape shape = Shape(d, {rows});
  const std::vector<float> x = SmoothSequence(rows, d, 21);
  for (QuantAxis axis : {QuantAxis::kPerToken, QuantAxis::kPerChannel}) {
    const QuantSpec spec = Spec(ValueCoding::kInt4, axis);
    double max_err[2] = {0, 0};  // [closed, open] over the last 200 rows
    double early_open = 0;
    for (bool closed : {true, false}) {
      const DeltaConfig delta = Delta(DeltaMode::kSequential, 10, closed);
      auto q = Quantize(spec, delta, shape, x);
      ASSERT_TRUE(q.ok());
      std::vector<float> y(x.size());
      ASSERT_TRUE(Dequantize(spec, delta, shape, *q, y).ok());
      for (int i = (rows - 200) * d; i < rows * d; ++i) {
        max_err[closed ? 0 : 1] = std::max<double>(max_err[closed ? 0 : 1], std::fabs(x[i] - y[i]));
      }
      if (!closed) {
        for (int i = 0; i < 50 * d; ++i)
          early_open = std::max<double>(early_open, std::fabs(x[i] - y[i]));
      }
    }
    EXPECT_GT(max_err[1], 5 * max_err[0]) << "axis " << static_cast<int>(axis);
    EXPECT_GT(max_err[1], 3 * early_open) << "axis " << static_cast<int>(axis);
  }
}

TEST(Delta, AnchorOpenLoopMatchesSeedSemantics) {
  // Open-loop anchor: residuals against the original anchor; the decoder adds them to its
  // reconstructed anchor, so the error is the anchor's error plus the residual's.
  const int d = 16;
  const SectionShape shape = Shape(d, {40});
  const std::vector<float> x = SmoothSequence(40, d, 3);
  const QuantSpec spec = Spec(ValueCoding::kInt4);
  const DeltaConfig delta = Delta(DeltaMode::kAnchor, 10, false);
  auto q = Quantize(spec, delta, shape, x);
  ASSERT_TRUE(q.ok());
  std::vector<float> y(x.size());
  ASSERT_TRUE(Dequantize(spec, delta, shape, *q, y).ok());
  const std::vector<float> scales = ElementScales(spec, delta, shape, *q);
  for (int t = 0; t < 40; ++t) {
    const int a = t - t % 10;
    for (int c = 0; c < d; ++c) {
      const size_t i = t * d + c, ai = a * d + c;
      const float bound = t == a ? Tolerance(scales[i], x[i])
                                 : Tolerance(scales[i], 4.0f) + Tolerance(scales[ai], x[ai]);
      ASSERT_LE(std::fabs(x[i] - y[i]), bound) << t << "," << c;
    }
  }
}

TEST(Delta, ResidualBeyondHalfRangeIsRejected) {
  const SectionShape shape = Shape(4, {2});
  const std::vector<float> x = {60000, 1, 2, 3, -60000, 1, 2, 3};
  for (QuantAxis axis : {QuantAxis::kPerToken, QuantAxis::kPerChannel}) {
    auto q = Quantize(Spec(ValueCoding::kInt4, axis), Delta(DeltaMode::kSequential), shape, x);
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // Without delta the same values are fine.
  EXPECT_TRUE(Quantize(Spec(ValueCoding::kInt4), {}, shape, x).ok());
}

// ---- bit packing --------------------------------------------------------------------------------

TEST(PackBits, RoundTripAllWidthsAndOddLengths) {
  std::mt19937 rng(42);
  for (int bits = 1; bits <= 8; ++bits) {
    for (size_t n : {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1001}) {
      std::vector<uint8_t> codes(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      const std::vector<uint8_t> packed = PackBits(codes, bits);
      ASSERT_EQ(packed.size(), (n * bits + 7) / 8) << bits << " " << n;
      // LSB first: code i occupies bits [i*bits, (i+1)*bits) of the little-endian bit stream.
      for (size_t i = 0; i < n; ++i) {
        uint32_t v = 0;
        for (int b = 0; b < bits; ++b) {
          const size_t pos = i * bits + b;
          v |= ((packed[pos / 8] >> (pos % 8)) & 1u) << b;
        }
        ASSERT_EQ(v, codes[i]) << bits << " " << n << " " << i;
      }
      std::vector<uint8_t> out(n, 0xee);
      ASSERT_TRUE(UnpackBits(packed, bits, n, out).ok());
      ASSERT_EQ(out, codes) << bits << " " << n;
    }
  }
}

TEST(PackBits, KnownLayouts) {
  const std::vector<uint8_t> c4 = {1, 2, 15};
  EXPECT_EQ(PackBits(c4, 4), (std::vector<uint8_t>{0x21, 0x0f}));
  const std::vector<uint8_t> c3 = {1, 2, 3};
  EXPECT_EQ(PackBits(c3, 3), (std::vector<uint8_t>{0xd1, 0x00}));
  const std::vector<uint8_t> c2 = {3, 0, 1, 2, 1};
  EXPECT_EQ(PackBits(c2, 2), (std::vector<uint8_t>{0x93, 0x01}));
  const std::vector<uint8_t> c1 = {1, 0, 1, 1, 0, 0, 0, 0, 1};
  EXPECT_EQ(PackBits(c1, 1), (std::vector<uint8_t>{0x0d, 0x01}));
}

TEST(PackBits, RejectsWrongLengthsAndWidths) {
  const std::vector<uint8_t> codes(13, 1);
  for (int bits = 1; bits <= 8; ++bits) {
    std::vector<uint8_t> packed = PackBits(codes, bits);
    std::vector<uint8_t> out(13);
    std::vector<uint8_t> longer = packed;
    longer.push_back(0);
    EXPECT_EQ(UnpackBits(longer, bits, 13, out).code(), absl::StatusCode::kInvalidArgument);
    std::vector<uint8_t> shorter(packed.begin(), packed.end() - 1);
    EXPECT_EQ(UnpackBits(shorter, bits, 13, out).code(), absl::StatusCode::kInvalidArgument);
    std::vector<uint8_t> small(12);
    EXPECT_EQ(UnpackBits(packed, bits, 13, small).code(), absl::StatusCode::kInvalidArgument);
  }
  std::vector<uint8_t> out(13);
  EXPECT_FALSE(UnpackBits(codes, 0, 13, out).ok());
  EXPECT_FALSE(UnpackBits(codes, 9, 13, out).ok());
  EXPECT_TRUE(PackBits(codes, 0).empty());
  EXPECT_FALSE(UnpackBits({}, 4, std::numeric_limits<size_t>::max(), out).ok());
}

// ---- dtype conversions --------------------------------------------------------------------------

TEST(Half, FloatToHalfKnownValues) {
  struct Case {
    float f;
    uint16_t h;
  };
  const Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {0.1f, 0x2e66},
      {65504.0f, 0x7bff},
      {65519.99f, 0x7bff},  // just below the rounding point to infinity
      {65520.0f, 0x7c00},   // overflow
      {1e6f, 0x7c00},
      {-1e6f, 0xfc00},
      {std::numeric_limits<float>::infinity(), 0x7c00},
      {0x1p-14f, 0x0400},                    // smallest normal
      {0x1p-24f, 0x0001},                    // smallest subnormal
      {0x1p-25f, 0x0000},                    // tie between 0 and 2^-24: to even (0)
      {0x1.0002p-25f, 0x0001},               // just above the tie
      {0x3p-25f, 0x0002},                    // 1.5 * 2^-24: tie, to even (2)
      {0x5p-25f, 0x0002},                    // 2.5 * 2^-24: tie, to even (2)
      {0x1p-14f - 0x1p-25f, 0x0400},         // tie between largest subnormal and smallest normal
      {1.0f + 0x1p-11f, 0x3c00},             // tie: to even
      {1.0f + 0x3p-11f, 0x3c02},             // tie: to even (up)
      {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},  // above the tie
      {-0x1p-30f, 0x8000},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FloatToHalf(c.f), c.h) << c.f;
    uint16_t bulk;
    FromFloat(&c.f, 1, DType::kFloat16, &bulk);
    EXPECT_EQ(bulk, c.h) << c.f;
  }
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::quiet_NaN()) & 0x7fff, 0x7e00);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_EQ(HalfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(HalfToFloat(0x03ff), 0x3ffp-24f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0xfc00), -std::numeric_limits<float>::infinity());
}

TEST(Half, EveryHalfRoundTripsAndBulkMatchesScalar) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> f(65536);
  ToFloat(all.data(), DType::kFloat16, all.size(), f.data());
  for (uint32_t i = 0; i < 65536; ++i) {
    const float s = HalfToFloat(static_cast<uint16_t>(i));
    ASSERT_EQ(std::bit_cast<uint32_t>(f[i]), std::bit_cast<uint32_t>(s)) << i;
    if ((i & 0x7c00) != 0x7c00 || (i & 0x3ff) == 0) {  // not NaN
      ASSERT_EQ(FloatToHalf(s), i) << i;
    }
  }
  std::vector<uint16_t> back(65536);
  FromFloat(f.data(), f.size(), DType::kFloat16, back.data());
  for (uint32_t i = 0; i < 65536; ++i) {
    if ((i & 0x7c00) == 0x7c00 && (i & 0x3ff) != 0) continue;
    ASSERT_EQ(back[i], i) << i;
  }
}

TEST(Half, BulkFromFloatMatchesScalarOnRandomBits) {
  std::mt19937 rng(77);
  std::vector<float> f(1 << 20);
  for (size_t i = 0; i < f.size(); ++i) {
    uint32_t bits = rng();
    // Bias half of the samples into the half range and near its rounding boundaries.
    if (i & 1) bits = (bits & 0x80000000u) | ((0x33000000u + (bits & 0x0fffffffu)) & 0x7fffffffu);
    f[i] = std::bit_cast<float>(bits);
  }
  std::vector<uint16_t> h(f.size()), b(f.size());
  FromFloat(f.data(), f.size(), DType::kFloat16, h.data());
  FromFloat(f.data(), f.size(), DType::kBFloat16, b.data());
  for (size_t i = 0; i < f.size(); ++i) {
    ASSERT_EQ(h[i], FloatToHalf(f[i])) << std::bit_cast<uint32_t>(f[i]);
    ASSERT_EQ(b[i], FloatToBF16(f[i])) << std::bit_cast<uint32_t>(f[i]);
  }
  // Every float around the overflow point and around the smallest normal half.
  std::vector<float> edge;
  for (uint32_t bits = 0x477f0000u; bits <= 0x47800100u; ++bits)
    edge.push_back(std::bit_cast<float>(bits));
  for (uint32_t bits = 0x38700000u; bits <= 0x38900000u; bits += 3)
    edge.push_back(std::bit_cast<float>(bits));
  for (float& e : std::vector<float>(edge)) edge.push_back(-e);
  std::vector<uint16_t> eh(edge.size());
  FromFloat(edge.data(), edge.size(), DType::kFloat16, eh.data());
  for (size_t i = 0; i < edge.size(); ++i) ASSERT_EQ(eh[i], FloatToHalf(edge[i])) << edge[i];

  std::vector<float> g(f.size());
  ToFloat(b.data(), DType::kBFloat16, b.size(), g.data());
  for (size_t i = 0; i < f.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(g[i]), std::bit_cast<uint32_t>(BF16ToFloat(b[i])));
  }
}

TEST(BFloat16, KnownValuesAndFloat32Copy) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBF16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie: to even
  EXPECT_EQ(FloatToBF16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie: to even (up)
  EXPECT_EQ(FloatToBF16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::numeric_limits<float>::quiet_NaN()))));
  // A signalling NaN whose payload sits in the low bits must not round to infinity.
  const float snan = std::bit_cast<float>(0x7f800001u);
  uint16_t b;
  FromFloat(&snan, 1, DType::kBFloat16, &b);
  EXPECT_TRUE(std::isnan(BF16ToFloat(b)));

  const std::vector<float> src = {1.5f, -2.25f, 3.0e30f};
  std::vector<float> dst(3);
  FromFloat(src.data(), 3, DType::kFloat32, dst.data());
  EXPECT_EQ(dst, src);
  std::vector<float> dst2(3);
  ToFloat(dst.data(), DType::kFloat32, 3, dst2.data());
  EXPECT_EQ(dst2, src);
  // Unaligned buffers work.
  std::vector<unsigned char> buf(7);
  const float two[2] = {1.0f, -0.5f};
  FromFloat(two, 2, DType::kFloat16, buf.data() + 1);
  float back[2];
  ToFloat(buf.data() + 1, DType::kFloat16, 2, back);
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], -0.5f);
}

}  // namespace
}  // namespace kvcodec

namespace kvcodec {
namespace {

// The frame decoder's fused path must give bit for bit what the generic path gives.
TEST(FusedDequantTest, MatchesDequantizeThenBF16) {
  uint64_t state = 99;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  for (int bits : {8, 4, 2}) {
    for (int group : {0, 16, 32, 24}) {
      const int d = 96;
      QuantSpec spec;
      spec.coding = bits == 8 ? ValueCoding::kInt8 : bits == 4 ? ValueCoding::kInt4 : ValueCoding::kInt2;
      spec.group_size = group;
      SectionShape shape;
      shape.head_dim = d;
      shape.rows_per_head = {37, 5};
      const int g = group ? group : d;
      QuantizedSection q;
      q.main_codes.resize(shape.num_elements());
      for (auto& c : q.main_codes) c = static_cast<uint8_t>(next() & ((1u << bits) - 1));
      q.main_params.resize(NumMainParams(spec, DeltaConfig{}, shape));
      for (size_t i = 0; i < q.main_params.size(); ++i) {
        // Mix of ordinary, subnormal and huge (clamped) scales and offsets; never inf/NaN.
        uint16_t p = static_cast<uint16_t>(next() & 0xffff);
        if ((p & 0x7c00u) == 0x7c00u) p &= 0xbfffu;
        q.main_params[i] = p;
      }
      std::vector<float> ref(shape.num_elements());
      ASSERT_TRUE(Dequantize(spec, DeltaConfig{}, shape, q, ref).ok());
      std::vector<uint16_t> expected(ref.size()), fused(ref.size());
      FromFloat(ref.data(), ref.size(), DType::kBFloat16, expected.data());
      DequantizeTokenRowsToBF16(q.main_codes.data(), q.main_params.data(), shape.num_rows(), d, g,
                                fused.data());
      EXPECT_EQ(fused, expected) << "bits " << bits << " group " << group;
      // From the packed bytes (tables; SSSE3 shuffles where the group is whole vectors).
      std::vector<uint16_t> from_packed(ref.size());
      const std::vector<uint8_t> packed = PackBits(q.main_codes, bits);
      DequantizePackedTokenRowsToBF16(packed.data(), bits, q.main_params.data(), shape.num_rows(),
                                      d, g, from_packed.data());
      EXPECT_EQ(from_packed, expected) << "packed, bits " << bits << " group " << group;
    }
  }
}

// Group sizes that take each of the packed dequantizer's paths: whole 16-byte vectors per
// group (64 and 32 channels at 4 bits, 64 at 2 bits), and groups whose codes share bytes
// with the next group (2 channels at 2 bits).
TEST(FusedDequantTest, PackedMatchesUnpackedAtEveryGroupSize) {
  uint64_t state = 7;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  for (int bits : {4, 2}) {
    for (int g : {128, 64, 32, 16, 8, 4, 2}) {
      const int d = 128;
      const size_t rows = 19;
      ASSERT_TRUE(PackedRowsSupported(bits, d));
      std::vector<uint8_t> codes(rows * d);
      for (auto& c : codes) c = static_cast<uint8_t>(next() & ((1u << bits) - 1));
      std::vector<uint16_t> params(rows * 2 * (d / g));
      for (auto& p : params) {
        p = static_cast<uint16_t>(next() & 0xffff);
        if ((p & 0x7c00u) == 0x7c00u) p &= 0xbfffu;
      }
      std::vector<uint16_t> expected(rows * d), got(rows * d);
      DequantizeTokenRowsToBF16(codes.data(), params.data(), rows, d, g, expected.data());
      const std::vector<uint8_t> packed = PackBits(codes, bits);
      DequantizePackedTokenRowsToBF16(packed.data(), bits, params.data(), rows, d, g, got.data());
      EXPECT_EQ(got, expected) << "bits " << bits << " group " << g;
    }
  }
  EXPECT_FALSE(PackedRowsSupported(3, 128));
  EXPECT_FALSE(PackedRowsSupported(4, 3));
  EXPECT_TRUE(PackedRowsSupported(2, 4));
}

}  // namespace
}  // namespace kvcodec

namespace kvcodec {
namespace {

// The encoder's row-by-row path must give Quantize's codes (packed) and parameters exactly,
// and fail where Quantize fails.
TEST(PackedQuantizeTest, MatchesQuantizeThenPackBits) {
  uint64_t state = 1234;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  for (int bits : {8, 4, 2}) {
    for (int g : {128, 64, 32, 8, 4}) {
      const int d = 128, rows = 23;
      std::vector<uint16_t> bf16(rows * d);
      for (size_t i = 0; i < bf16.size(); ++i) {
        // Mostly small values, some large outliers and signed zeros.
        const float scale = (next() % 16 == 0) ? 900.0f : 1.5f;
        float v = (static_cast<float>(next() % 20001) / 10000.0f - 1.0f) * scale;
        if (next() % 97 == 0) v = (next() & 1) ? -0.0f : 0.0f;
        bf16[i] = FloatToBF16(v);
      }
      std::vector<float> floats(bf16.size());
      ToFloat(bf16.data(), DType::kBFloat16, floats.size(), floats.data());
      QuantSpec spec;
      spec.coding = bits == 8 ? ValueCoding::kInt8 : bits == 4 ? ValueCoding::kInt4 : ValueCoding::kInt2;
      spec.group_size = g == d ? 0 : g;
      SectionShape shape{.head_dim = d, .rows_per_head = {rows}};
      auto q = Quantize(spec, DeltaConfig{}, shape, floats);
      ASSERT_TRUE(q.ok()) << q.status();
      const std::vector<uint8_t> expected_packed = PackBits(q->main_codes, bits);
      std::vector<uint8_t> packed(rows * d * bits / 8);
      std::vector<uint16_t> params(rows * 2 * (d / g));
      // Rows at an odd byte offset: frame buffers need not be aligned.
      std::vector<uint8_t> shifted(bf16.size() * 2 + 1);
      std::memcpy(shifted.data() + 1, bf16.data(), bf16.size() * 2);
      for (int r = 0; r < rows; ++r) {
        ASSERT_TRUE(QuantizeBF16RowToPacked(shifted.data() + 1 + r * d * 2, d, g, bits,
                                            packed.data() + r * d * bits / 8,
                                            params.data() + r * 2 * (d / g))
                        .ok());
      }
      EXPECT_EQ(packed, expected_packed) << "bits " << bits << " group " << g;
      EXPECT_EQ(params, q->main_params) << "bits " << bits << " group " << g;
    }
  }
  // Many rows at once (several batches; groups of 2 make the most groups per batch), rows
  // taken out of order as kept tokens are.
  for (int g : {128, 32, 16, 2}) {
    const int d = 128, rows = 300, bits = 4;
    std::vector<uint16_t> src(rows * d);
    for (auto& v : src) v = FloatToBF16((static_cast<float>(next() % 2001) / 1000.0f - 1.0f) * 3.0f);
    std::vector<const void*> ptrs;
    std::vector<uint16_t> gathered;
    for (int r = rows - 1; r >= 0; r -= 2) {
      ptrs.push_back(src.data() + r * d);
      gathered.insert(gathered.end(), src.begin() + r * d, src.begin() + (r + 1) * d);
    }
    const int n = static_cast<int>(ptrs.size());
    std::vector<float> floats(gathered.size());
    ToFloat(gathered.data(), DType::kBFloat16, floats.size(), floats.data());
    QuantSpec spec;
    spec.coding = ValueCoding::kInt4;
    spec.group_size = g == d ? 0 : g;
    auto q = Quantize(spec, DeltaConfig{}, SectionShape{.head_dim = d, .rows_per_head = {n}}, floats);
    ASSERT_TRUE(q.ok());
    std::vector<uint8_t> packed(n * d * bits / 8);
    std::vector<uint16_t> params(n * 2 * (d / g));
    ASSERT_TRUE(QuantizeBF16RowsToPacked(ptrs, d, g, bits, packed.data(), params.data()).ok());
    EXPECT_EQ(packed, PackBits(q->main_codes, bits)) << "rows, group " << g;
    EXPECT_EQ(params, q->main_params) << "rows, group " << g;
  }
  // Groups whose minimum or maximum is a zero of either sign: the sign reaches the offset
  // (HalfRoundDown(-0) is -0), and every vector width must pick the one Quantize picks.
  for (int bits : {4, 2}) {
    const int d = 128, rows = 512;
    std::vector<uint16_t> bf16(rows * d);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < d; ++c) {
        // Rows of only zeros of random sign, or zeros among positive values.
        float v = (r % 3 == 0) ? 0.0f : static_cast<float>(next() % 1000) / 1000.0f;
        if (v == 0.0f || next() % 3 == 0) v = (next() & 1) ? -0.0f : 0.0f;
        if (r % 4 == 1) v = -v;  // maxima of zero
        bf16[r * d + c] = FloatToBF16(v);
      }
    }
    std::vector<float> floats(bf16.size());
    ToFloat(bf16.data(), DType::kBFloat16, floats.size(), floats.data());
    QuantSpec spec;
    spec.coding = bits == 4 ? ValueCoding::kInt4 : ValueCoding::kInt2;
    spec.group_size = 32;
    auto q = Quantize(spec, DeltaConfig{}, SectionShape{.head_dim = d, .rows_per_head = {rows}}, floats);
    ASSERT_TRUE(q.ok());
    std::vector<uint8_t> packed(rows * d * bits / 8);
    std::vector<uint16_t> params(rows * 2 * (d / 32));
    for (int r = 0; r < rows; ++r) {
      ASSERT_TRUE(QuantizeBF16RowToPacked(bf16.data() + r * d, d, 32, bits,
                                          packed.data() + r * d * bits / 8,
                                          params.data() + r * 2 * (d / 32))
                      .ok());
    }
    EXPECT_EQ(params, q->main_params) << "signed zeros, bits " << bits;
    EXPECT_EQ(packed, PackBits(q->main_codes, bits)) << "signed zeros, bits " << bits;
  }
  // Out of the half range and NaN: the same error as Quantize.
  for (float bad : {70000.0f, std::numeric_limits<float>::quiet_NaN(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<uint16_t> row(64, FloatToBF16(1.0f));
    row[37] = FloatToBF16(bad);
    std::vector<float> floats(64);
    ToFloat(row.data(), DType::kBFloat16, 64, floats.data());
    QuantSpec spec;
    spec.coding = ValueCoding::kInt4;
    auto q = Quantize(spec, DeltaConfig{}, SectionShape{.head_dim = 64, .rows_per_head = {1}}, floats);
    uint8_t packed[32];
    uint16_t params[2];
    const absl::Status s = QuantizeBF16RowToPacked(row.data(), 64, 64, 4, packed, params);
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(s, q.status()) << bad;
  }
}

}  // namespace
}  // namespace kvcodec
