#include "kernels/test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "kernels/plan.h"
#include "kernels/rans_plan.h"
#include "kernels/section_codec.h"
#include "kvcodec/dtype.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/quant.h"
#include "kvcodec/rans.h"
#include "kvcodec/section.h"

namespace kvwire::gpu::testing {
namespace {

using ::testing::AssertionFailure;
using ::testing::AssertionResult;
using ::testing::AssertionSuccess;

template <typename T>
std::vector<T> Download(Backend& b, const void* p, size_t count) {
  std::vector<T> v(count);
  const absl::Status s = b.CopyToHost(v.data(), p, count * sizeof(T));
  EXPECT_TRUE(s.ok()) << s;
  return v;
}

// First index where two byte ranges differ, or -1.
int64_t FirstDifference(const uint8_t* a, const uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

AssertionResult SameBytes(const std::string& what, const void* expected, const void* got, size_t n) {
  const int64_t i = FirstDifference(static_cast<const uint8_t*>(expected), static_cast<const uint8_t*>(got), n);
  if (i < 0) return AssertionSuccess();
  return AssertionFailure() << what << ": byte " << i << " of " << n << " is "
                            << int{static_cast<const uint8_t*>(got)[i]} << ", kvcodec has "
                            << int{static_cast<const uint8_t*>(expected)[i]};
}

kvcodec::QuantSpec Spec(kvcodec::ValueCoding coding, kvcodec::QuantAxis axis, int group) {
  kvcodec::QuantSpec s;
  s.coding = coding;
  s.axis = axis;
  s.group_size = group;
  return s;
}

}  // namespace

std::vector<uint8_t> MakeCache(const CacheCase& c) {
  std::mt19937_64 rng(c.seed);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  const int d = c.head_dim;
  std::vector<float> scale(d), mean(d);
  for (int ch = 0; ch < d; ++ch) {
    scale[ch] = ch % 17 == 3 ? 20.0f : 0.5f + 0.05f * static_cast<float>(ch % 7);
    mean[ch] = 0.1f * gauss(rng);
  }
  std::vector<float> x(static_cast<size_t>(c.heads) * c.tokens * d);
  for (int h = 0; h < c.heads; ++h) {
    for (int t = 0; t < c.tokens; ++t) {
      float* row = &x[(static_cast<size_t>(h) * c.tokens + t) * d];
      for (int ch = 0; ch < d; ++ch) row[ch] = mean[ch] + scale[ch] * gauss(rng);
      auto signed_zero = [&] { return (rng() & 1) ? 0.0f : -0.0f; };
      if (t % 11 == 3) {  // constant row: a zero scale per token
        std::fill(row, row + d, 0.75f);
      } else if (h % 2 == 0) {  // rows whose extremes are zeros of either sign (per token)
        if (t % 13 == 5) {
          for (int ch = 0; ch < d; ++ch) row[ch] = signed_zero();
        } else if (t % 3 == 1) {
          for (int ch = 0; ch < d; ++ch) row[ch] = rng() % 5 == 0 ? signed_zero() : std::fabs(row[ch]);
        } else if (t % 3 == 2) {
          for (int ch = 0; ch < d; ++ch) row[ch] = rng() % 5 == 0 ? signed_zero() : -std::fabs(row[ch]);
        }
      } else {  // columns whose extremes are zeros of either sign (per channel)
        for (int ch = 1; ch < d; ch += 5) row[ch] = rng() % 4 == 0 ? signed_zero() : std::fabs(row[ch]);
        for (int ch = 3; ch < d; ch += 5) row[ch] = rng() % 4 == 0 ? signed_zero() : -std::fabs(row[ch]);
      }
    }
  }
  std::vector<uint8_t> out(x.size() * kvcodec::DTypeSize(c.dtype));
  kvcodec::FromFloat(x.data(), x.size(), c.dtype, out.data());
  return out;
}

std::vector<std::vector<int32_t>> MakeKept(const CacheCase& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> kept(c.heads);
  for (int h = 0; h < c.heads; ++h) {
    switch (h % 4) {
      case 0:  // a random ~60%
        for (int t = 0; t < c.tokens; ++t) {
          if (rng() % 10 < 6) kept[h].push_back(t);
        }
        break;
      case 1:  // empty
        break;
      case 2:  // one row
        kept[h].push_back(c.tokens / 2);
        break;
      default:  // every token
        for (int t = 0; t < c.tokens; ++t) kept[h].push_back(t);
    }
  }
  return kept;
}

std::vector<SectionCase> AllSectionCases() {
  using kvcodec::DeltaMode;
  using kvcodec::QuantAxis;
  using kvcodec::ValueCoding;
  std::vector<SectionCase> cases;
  const std::pair<ValueCoding, const char*> codings[] = {
      {ValueCoding::kInt8, "int8"}, {ValueCoding::kInt4, "int4"}, {ValueCoding::kInt3, "int3"},
      {ValueCoding::kInt2, "int2"}};
  struct DeltaCase {
    DeltaMode mode;
    int group;
    bool closed;
    const char* name;
  };
  const DeltaCase deltas[] = {{DeltaMode::kNone, 0, true, "none"},
                              {DeltaMode::kSequential, 0, true, "seq"},
                              {DeltaMode::kSequential, 0, false, "seq_open"},
                              {DeltaMode::kGroupedSequential, 5, true, "gseq5"},
                              {DeltaMode::kGroupedSequential, 5, false, "gseq5_open"},
                              {DeltaMode::kAnchor, 4, true, "anchor4"},
                              {DeltaMode::kAnchor, 4, false, "anchor4_open"}};
  for (const auto& [coding, cname] : codings) {
    for (const DeltaCase& dc : deltas) {
      kvcodec::DeltaConfig delta;
      delta.mode = dc.mode;
      delta.group_size = dc.group;
      delta.closed_loop = dc.closed;
      // Per-token groups: narrow (lane per group) and wide (all lanes per group).
      for (int group : {0, 8, 32}) {
        cases.push_back({absl::StrCat(cname, "_token_g", group, "_", dc.name),
                         Spec(coding, QuantAxis::kPerToken, group), delta});
      }
      for (int group : {0, 1, 7, 300}) {
        cases.push_back({absl::StrCat(cname, "_channel_g", group, "_", dc.name),
                         Spec(coding, QuantAxis::kPerChannel, group), delta});
      }
    }
  }
  return cases;
}

AssertionResult SectionMatchesKvcodec(Backend& backend, const SectionCase& sc, const CacheCase& cache,
                                      const std::vector<std::vector<int32_t>>& kept,
                                      const std::vector<uint8_t>& data) {
  const int d = cache.head_dim;
  const kvcodec::DeltaConfig delta = kvcodec::SectionDelta(sc.spec, sc.delta);
  kvcodec::SectionShape shape;
  shape.head_dim = d;
  shape.rows_per_head = RowsPerHead(kept);
  const size_t esize = kvcodec::DTypeSize(cache.dtype);

  // kvcodec: gather as float, quantize.
  std::vector<float> values;
  for (int h = 0; h < cache.heads; ++h) {
    for (int32_t t : kept[h]) {
      const size_t at = values.size();
      values.resize(at + d);
      kvcodec::ToFloat(data.data() + (static_cast<size_t>(h) * cache.tokens + t) * d * esize,
                       cache.dtype, d, values.data() + at);
    }
  }
  auto q = kvcodec::Quantize(sc.spec, delta, shape, values);

  // The backend.
  auto plan = PlanSection(sc.spec, sc.delta, d, shape.rows_per_head);
  if (!plan.ok()) {
    if (!q.ok() && plan.status() == q.status()) return AssertionSuccess();
    return AssertionFailure() << "PlanSection: " << plan.status() << "; kvcodec: " << q.status();
  }
  auto rows = CacheRowOffsets(kept, cache.tokens, d);
  if (!rows.ok()) return AssertionFailure() << rows.status();
  auto src = Upload(backend, data);
  auto src_rows = Upload(backend, *rows);
  auto main_codes = Buffer::Make(backend, plan->main_code_alloc);
  auto main_params = Buffer::Make(backend, plan->main_param_pairs * sizeof(ParamPair));
  auto ref_codes = Buffer::Make(backend, plan->ref_code_bytes);
  auto ref_params = Buffer::Make(backend, plan->ref_param_pairs * sizeof(ParamPair));
  for (const auto* b : {&src, &src_rows, &main_codes, &main_params, &ref_codes, &ref_params}) {
    if (!b->ok()) return AssertionFailure() << b->status();
  }
  SectionStreams streams;
  streams.main_codes = main_codes->as<uint8_t>();
  streams.main_params = main_params->as<ParamPair>();
  streams.ref_codes = ref_codes->as<uint8_t>();
  streams.ref_params = ref_params->as<ParamPair>();
  SectionCodec codec(backend);
  const absl::Status encoded =
      codec.Encode(*plan, src->data(), cache.dtype, src_rows->as<int64_t>(), streams);
  if (!q.ok()) {
    if (encoded.code() == q.status().code() && encoded.message() == q.status().message()) {
      return AssertionSuccess();
    }
    return AssertionFailure() << "kvcodec fails with " << q.status() << ", the backend with " << encoded;
  }
  if (!encoded.ok()) return AssertionFailure() << "encode: " << encoded;

  const int bits = sc.spec.bits();
  const std::vector<uint8_t> packed = kvcodec::PackBits(q->main_codes, bits);
  if (packed.size() != plan->main_code_bytes) {
    return AssertionFailure() << "packed size " << packed.size() << " vs plan " << plan->main_code_bytes;
  }
  auto got_codes = Download<uint8_t>(backend, streams.main_codes, plan->main_code_bytes);
  auto got_params = Download<uint16_t>(backend, streams.main_params, 2 * plan->main_param_pairs);
  auto got_ref_codes = Download<uint8_t>(backend, streams.ref_codes, plan->ref_code_bytes);
  auto got_ref_params = Download<uint16_t>(backend, streams.ref_params, 2 * plan->ref_param_pairs);
  if (got_params.size() != q->main_params.size() || got_ref_codes.size() != q->ref_codes.size() ||
      got_ref_params.size() != q->ref_params.size()) {
    return AssertionFailure() << "stream sizes differ from kvcodec's";
  }
  if (auto r = SameBytes("main params", q->main_params.data(), got_params.data(), 2 * got_params.size()); !r) return r;
  if (auto r = SameBytes("main codes", packed.data(), got_codes.data(), packed.size()); !r) return r;
  if (auto r = SameBytes("ref codes", q->ref_codes.data(), got_ref_codes.data(), got_ref_codes.size()); !r) return r;
  if (auto r = SameBytes("ref params", q->ref_params.data(), got_ref_params.data(), 2 * got_ref_params.size()); !r) return r;

  // Decoding: kvcodec's floats in the cache dtype, row by row.
  std::vector<float> y(values.size());
  if (absl::Status s = kvcodec::Dequantize(sc.spec, delta, shape, *q, y); !s.ok()) {
    return AssertionFailure() << "kvcodec Dequantize: " << s;
  }
  std::vector<uint8_t> expected(y.size() * esize);
  kvcodec::FromFloat(y.data(), y.size(), cache.dtype, expected.data());
  auto padded = PaddedRowOffsets(kept, cache.tokens, d);
  if (!padded.ok()) return AssertionFailure() << padded.status();
  auto dst_rows = Upload(backend, *padded);
  const std::vector<uint8_t> sentinel(data.size(), 0xA5);
  auto symbols_host = kvcodec::CodesToSymbols(q->main_codes, plan->main_rows, d, bits);
  auto symbols = Upload(backend, symbols_host);
  if (!dst_rows.ok()) return AssertionFailure() << dst_rows.status();
  if (!symbols.ok()) return AssertionFailure() << symbols.status();
  for (CodeLayout layout : {CodeLayout::kPacked, CodeLayout::kSymbols}) {
    auto dst = Upload(backend, sentinel);
    if (!dst.ok()) return AssertionFailure() << dst.status();
    SectionStreams in = streams;
    in.main_layout = layout;
    if (layout == CodeLayout::kSymbols) in.main_codes = symbols->as<uint8_t>();
    if (absl::Status s = codec.Decode(*plan, in, dst->data(), cache.dtype, dst_rows->as<int64_t>()); !s.ok()) {
      return AssertionFailure() << "decode: " << s;
    }
    const auto got = Download<uint8_t>(backend, dst->data(), data.size());
    size_t row = 0;
    const size_t row_bytes = d * esize;
    for (int h = 0; h < cache.heads; ++h) {
      for (int i = 0; i < cache.tokens; ++i) {
        const uint8_t* g = got.data() + (static_cast<size_t>(h) * cache.tokens + i) * row_bytes;
        const bool kept_row = i < static_cast<int>(kept[h].size());
        const uint8_t* e = kept_row ? expected.data() + row * row_bytes : sentinel.data();
        if (auto r = SameBytes(absl::StrCat(layout == CodeLayout::kPacked ? "packed" : "symbols",
                                            " decode, head ", h, " row ", i),
                               e, g, row_bytes);
            !r) {
          return r;
        }
        if (kept_row) ++row;
      }
    }
  }
  return AssertionSuccess();
}

AssertionResult CopyRowsMatchesKvcodec(Backend& backend, const CacheCase& c) {
  using kvcodec::DType;
  std::mt19937_64 rng(c.seed);
  const int d = c.head_dim;
  CacheCase cc = c;
  const auto kept = MakeKept(cc, c.seed + 1);
  auto rows = CacheRowOffsets(kept, c.tokens, d);
  if (!rows.ok()) return AssertionFailure() << rows.status();
  auto src_rows = Upload(backend, *rows);
  if (!src_rows.ok()) return AssertionFailure() << src_rows.status();
  const size_t n_rows = rows->size();
  for (DType from : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    // Every kind of bit pattern: NaNs with payloads, infinities, subnormals, overflow.
    const size_t esize = kvcodec::DTypeSize(from);
    std::vector<uint8_t> data(static_cast<size_t>(c.heads) * c.tokens * d * esize);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    auto src = Upload(backend, data);
    if (!src.ok()) return AssertionFailure() << src.status();
    for (int to = -1; to < 3; ++to) {  // -1: raw
      const DType out = to < 0 ? from : static_cast<DType>(to);
      const size_t osize = kvcodec::DTypeSize(out);
      std::vector<uint8_t> expected(n_rows * d * osize);
      std::vector<float> f(d);
      for (size_t r = 0; r < n_rows; ++r) {
        const uint8_t* in = data.data() + (*rows)[r] * esize;
        if (to < 0) {
          std::memcpy(expected.data() + r * d * osize, in, d * esize);
        } else {
          kvcodec::ToFloat(in, from, d, f.data());
          kvcodec::FromFloat(f.data(), d, out, expected.data() + r * d * osize);
        }
      }
      auto dst = Buffer::Make(backend, expected.size() + 1);
      if (!dst.ok()) return AssertionFailure() << dst.status();
      CopyRowsArgs a{static_cast<int64_t>(n_rows), d, src->data(), static_cast<int32_t>(from),
                     src_rows->as<int64_t>(), dst->data(), static_cast<int32_t>(out), nullptr,
                     to < 0 ? 1 : 0};
      if (absl::Status s = backend.CopyRows(a); !s.ok()) return AssertionFailure() << s;
      const auto got = Download<uint8_t>(backend, dst->data(), expected.size());
      const std::string_view out_name = to < 0 ? std::string_view("raw") : kvcodec::DTypeName(out);
      if (auto r = SameBytes(absl::StrCat("copy rows ", std::string(kvcodec::DTypeName(from)), " -> ",
                                          std::string(out_name)),
                             expected.data(), got.data(), expected.size());
          !r) {
        return r;
      }
    }
  }
  return AssertionSuccess();
}

AssertionResult RansMatchesKvcodec(Backend& backend, uint64_t seed) {
  std::mt19937_64 rng(seed);
  struct Stream {
    std::vector<uint8_t> symbols;
    int row_len;
    int bits;
  };
  std::vector<Stream> streams;
  const size_t sizes[] = {1, 7, 100, 4095, 4096, 5003, 64 * 300, 64 * 2048 + 77};
  const int row_lens[] = {1, 4, 7, 32, 64, 100};
  for (size_t n : sizes) {
    for (int row_len : row_lens) {
      for (int bits : {2, 6, 8}) {
        Stream s{std::vector<uint8_t>(n), row_len, bits};
        // Column-dependent skew so that several contexts pay off.
        for (size_t i = 0; i < n; ++i) {
          const int col = static_cast<int>(i % row_len);
          const uint64_t r = rng();
          const int spread = 1 + (col * 5) % (1 << bits);
          s.symbols[i] = static_cast<uint8_t>((r % 100 < 70 ? col % 3 : r % spread) & ((1 << bits) - 1));
        }
        streams.push_back(std::move(s));
      }
    }
  }
  RansBatch batch;
  std::vector<uint8_t> expected;
  for (const Stream& s : streams) {
    const std::vector<uint8_t> enc = kvcodec::RansEncode(s.symbols, s.row_len, s.bits);
    std::vector<uint8_t> dec(s.symbols.size());
    if (absl::Status st = kvcodec::RansDecode(enc, s.row_len, s.bits, dec); !st.ok()) {
      return AssertionFailure() << "kvcodec RansDecode: " << st;
    }
    if (absl::Status st = AddRansStream(enc, s.symbols.size(), s.row_len, s.bits, expected.size(), &batch);
        !st.ok()) {
      return AssertionFailure() << "AddRansStream: " << st;
    }
    expected.insert(expected.end(), dec.begin(), dec.end());
  }
  int eight_lanes = 0, warp_lanes = 0, multi_context = 0;
  for (const RansStreamDesc& d : batch.streams) {
    eight_lanes += d.lanes == 8;
    warp_lanes += d.lanes == 32;
    multi_context += d.num_contexts > 1 && d.blocked_rows > 0;
  }
  if (eight_lanes == 0 || warp_lanes == 0 || multi_context == 0) {
    return AssertionFailure() << "the streams do not cover 8 and 32 lanes and blocked multi-context order";
  }
  auto out = Buffer::Make(backend, batch.out_bytes);
  if (!out.ok()) return AssertionFailure() << out.status();
  if (absl::Status s = RansDecodeBatch(backend, batch, out->as<uint8_t>()); !s.ok()) {
    return AssertionFailure() << "RansDecodeBatch: " << s;
  }
  const auto got = Download<uint8_t>(backend, out->data(), expected.size());
  return SameBytes("rANS symbols", expected.data(), got.data(), expected.size());
}

AssertionResult RansErrorsMatchKvcodec(Backend& backend, uint64_t seed) {
  std::mt19937_64 rng(seed);
  int rejected = 0, cases = 0;
  // One lane; eight lanes, blocked order; 32 lanes, blocked order.
  for (size_t n : {size_t{300}, size_t{64 * 90 + 5}, size_t{64 * 1100 + 9}}) {
    std::vector<uint8_t> symbols(n);
    for (size_t i = 0; i < n; ++i) symbols[i] = static_cast<uint8_t>(rng() % 100 < 80 ? i % 3 : rng() % 16);
    const std::vector<uint8_t> good = kvcodec::RansEncode(symbols, 64, 4);
    std::vector<std::vector<uint8_t>> bad;
    const size_t step = std::max<size_t>(1, good.size() / 500);  // a sample of a long stream's bytes
    for (size_t i = 0; i < good.size(); i += step) {
      bad.push_back(good);
      bad.back()[i] ^= static_cast<uint8_t>(1 + rng() % 255);
    }
    for (size_t cut : {size_t{1}, size_t{2}, size_t{3}, good.size() / 2}) bad.emplace_back(good.begin(), good.end() - cut);
    for (size_t extra : {1, 2, 5}) {
      bad.push_back(good);
      for (size_t e = 0; e < extra; ++e) bad.back().push_back(static_cast<uint8_t>(rng()));
    }
    for (const auto& stream : bad) {
      ++cases;
      std::vector<uint8_t> expected(n);
      const absl::Status want = kvcodec::RansDecode(stream, 64, 4, expected);
      RansBatch batch;
      absl::Status got = AddRansStream(stream, n, 64, 4, 0, &batch);
      Buffer out;
      if (got.ok()) {
        auto b = Buffer::Make(backend, n);
        if (!b.ok()) return AssertionFailure() << b.status();
        out = *std::move(b);
        got = RansDecodeBatch(backend, batch, out.as<uint8_t>());
      }
      if (got.code() != want.code() || got.message() != want.message()) {
        return AssertionFailure() << "stream " << cases << ": kvcodec " << want << ", backend " << got;
      }
      if (!want.ok()) {
        ++rejected;
        continue;
      }
      const auto symbols_got = Download<uint8_t>(backend, out.data(), n);
      if (auto r = SameBytes("symbols", expected.data(), symbols_got.data(), n); !r) return r;
    }
  }
  if (rejected < cases / 2) return AssertionFailure() << "only " << rejected << " of " << cases << " rejected";
  return AssertionSuccess();
}

}  // namespace kvwire::gpu::testing
