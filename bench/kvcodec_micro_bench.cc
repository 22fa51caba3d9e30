// Google Benchmark micro-benchmarks of the codec's stages on one synthetic layer (4096 tokens x
// 4 KV heads x head_dim 128, bf16: Qwen2.5-7B's per-layer shape), so that a change to one stage
// can be judged on its own. Every stage reports bytes/s of the bf16 input it stands for (not
// of its own input), so the figures add up: 1 / sum(1 / stage GB/s) is the pipeline's GB/s.
// `kvwire bench codec` measures the whole frame path; this splits it.
//
//   build/bench/kvcodec_micro_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "kvcodec/dtype.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/quant.h"
#include "kvcodec/rans.h"
#include "kvcodec/synthetic.h"

namespace kvcodec {
namespace {

// One layer's keys (outlier channels) or values, quantized INT4 per token, and its streams.
struct Stage {
  CacheShape shape;
  std::vector<uint8_t> bf16;     // [heads, tokens, head_dim]
  std::vector<float> floats;     // same, as float32
  QuantizedSection q;
  std::vector<uint8_t> symbols;  // two codes per byte, as the rANS stream codes them
  std::vector<uint8_t> rans;
  size_t rows = 0;
  int row_len = 0;
};

const Stage& GetStage(bool values) {
  static const auto* stages = [] {
    auto* s = new Stage[2];
    CacheShape shape{.num_layers = 1, .num_kv_heads = 4, .head_dim = 128, .num_tokens = 4096,
                     .dtype = DType::kBFloat16};
    const SyntheticCache cache = MakeSyntheticCache(shape, 1);
    for (int v = 0; v < 2; ++v) {
      Stage& st = s[v];
      st.shape = shape;
      st.bf16 = v ? cache.values[0] : cache.keys[0];
      st.rows = static_cast<size_t>(shape.num_kv_heads) * shape.num_tokens;
      st.floats.resize(st.rows * shape.head_dim);
      ToFloat(st.bf16.data(), DType::kBFloat16, st.floats.size(), st.floats.data());
      SectionShape ss{.head_dim = shape.head_dim,
                      .rows_per_head = std::vector<int>(shape.num_kv_heads, shape.num_tokens)};
      QuantSpec spec{.coding = ValueCoding::kInt4};
      st.q = *Quantize(spec, DeltaConfig{}, ss, st.floats);
      st.symbols = CodesToSymbols(st.q.main_codes, st.rows, shape.head_dim, 4);
      st.row_len = shape.head_dim / 2;
      st.rans = RansEncode(st.symbols, st.row_len, 8);
    }
    return s;
  }();
  return stages[values ? 1 : 0];
}

void Report(benchmark::State& state, const Stage& st) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(st.bf16.size()));
}

void BM_Memcpy(benchmark::State& state) {
  const Stage& st = GetStage(false);
  std::vector<uint8_t> dst(st.bf16.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), st.bf16.data(), st.bf16.size());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  Report(state, st);
}

void BM_BF16ToFloat(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  std::vector<float> dst(st.floats.size());
  for (auto _ : state) {
    ToFloat(st.bf16.data(), DType::kBFloat16, dst.size(), dst.data());
    benchmark::DoNotOptimize(dst.data());
  }
  Report(state, st);
}

void BM_QuantizeInt4Token(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  SectionShape ss{.head_dim = st.shape.head_dim,
                  .rows_per_head = std::vector<int>(st.shape.num_kv_heads, st.shape.num_tokens)};
  QuantSpec spec{.coding = ValueCoding::kInt4};
  for (auto _ : state) {
    auto q = Quantize(spec, DeltaConfig{}, ss, st.floats);
    benchmark::DoNotOptimize(q->main_codes.data());
  }
  Report(state, st);
}

// The encoder's path from bf16 rows to packed codes (what the three stages above do apart).
void BM_QuantizeBF16ToPacked(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  const int d = st.shape.head_dim;
  std::vector<uint8_t> packed(st.rows * d / 2);
  std::vector<uint16_t> params(st.rows * 2);
  std::vector<const void*> rows(st.rows);
  for (size_t r = 0; r < st.rows; ++r) rows[r] = st.bf16.data() + r * d * 2;
  for (auto _ : state) {
    if (!QuantizeBF16RowsToPacked(rows, d, d, 4, packed.data(), params.data()).ok()) {
      state.SkipWithError("quantize failed");
    }
    benchmark::DoNotOptimize(packed.data());
  }
  Report(state, st);
}

void BM_CodesToSymbols(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  for (auto _ : state) {
    auto s = CodesToSymbols(st.q.main_codes, st.rows, st.shape.head_dim, 4);
    benchmark::DoNotOptimize(s.data());
  }
  Report(state, st);
}

void BM_RansEncode(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  for (auto _ : state) {
    auto coded = RansEncode(st.symbols, st.row_len, 8);
    benchmark::DoNotOptimize(coded.data());
  }
  Report(state, st);
  state.counters["bits_per_element"] = 8.0 * st.rans.size() / st.floats.size();
}

void BM_RansDecode(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  std::vector<uint8_t> out(st.symbols.size());
  for (auto _ : state) {
    if (!RansDecode(st.rans, st.row_len, 8, out).ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(out.data());
  }
  Report(state, st);
}

void BM_SymbolsToCodes(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  std::vector<uint8_t> codes(st.q.main_codes.size());
  for (auto _ : state) {
    SymbolsToCodes(st.symbols, st.rows, st.shape.head_dim, 4, codes);
    benchmark::DoNotOptimize(codes.data());
  }
  Report(state, st);
}

void BM_DequantizeToBF16(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  std::vector<uint16_t> out(st.floats.size());
  for (auto _ : state) {
    DequantizeTokenRowsToBF16(st.q.main_codes.data(), st.q.main_params.data(), st.rows,
                              st.shape.head_dim, st.shape.head_dim, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  Report(state, st);
}

void BM_DequantizePackedToBF16(benchmark::State& state) {
  const Stage& st = GetStage(state.range(0));
  std::vector<uint16_t> out(st.floats.size());
  for (auto _ : state) {
    DequantizePackedTokenRowsToBF16(st.symbols.data(), 4, st.q.main_params.data(), st.rows,
                                    st.shape.head_dim, st.shape.head_dim, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  Report(state, st);
}

// The whole frame path for this one layer (K and V), for comparison with the sum of stages.
void BM_FrameInt4Rans(benchmark::State& state) {
  const bool decode = state.range(0) != 0;
  const Stage& k = GetStage(false);
  const Stage& v = GetStage(true);
  const CodecConfig config = *Preset("int4-rans");
  const LayerView layer{k.bf16.data(), v.bf16.data()};
  std::vector<int32_t> positions(k.shape.num_tokens);
  for (int i = 0; i < k.shape.num_tokens; ++i) positions[i] = i;
  Selection all;
  all.kept.assign(1, std::vector<std::vector<int32_t>>(k.shape.num_kv_heads, positions));
  auto frame = EncodeFrame(k.shape, config, "bench", positions, {&layer, 1}, all);
  if (!frame.ok()) {
    state.SkipWithError("encode failed");
    return;
  }
  for (auto _ : state) {
    if (decode) {
      auto layers = DecodeFrame(*frame);
      if (!layers.ok()) state.SkipWithError("decode failed");
      benchmark::DoNotOptimize(layers->data());
    } else {
      auto f = EncodeFrame(k.shape, config, "bench", positions, {&layer, 1}, all);
      benchmark::DoNotOptimize(f->data());
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(2 * k.bf16.size()));
}

// With --benchmark_repetitions=N, "_min" rows give each stage's least disturbed run (the
// machines here are shared and noisy; compare stages by their minimum).
double MinOf(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
#undef BENCHMARK
#define BENCHMARK(fn) BENCHMARK_PRIVATE_DECLARE(fn) = \
    (::benchmark::internal::RegisterBenchmarkInternal( \
         new ::benchmark::internal::FunctionBenchmark(#fn, fn)))->ComputeStatistics("min", MinOf)

BENCHMARK(BM_Memcpy);
BENCHMARK(BM_BF16ToFloat)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_QuantizeInt4Token)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_QuantizeBF16ToPacked)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_CodesToSymbols)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_RansEncode)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_RansDecode)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_SymbolsToCodes)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_DequantizeToBF16)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_DequantizePackedToBF16)->ArgName("values")->Arg(0)->Arg(1);
BENCHMARK(BM_FrameInt4Rans)->ArgName("decode")->Arg(0)->Arg(1);

}  // namespace
}  // namespace kvcodec

BENCHMARK_MAIN();
