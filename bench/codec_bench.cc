#include "bench/codec_bench.h"

#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "kvcodec/dtype.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/synthetic.h"

namespace kvwire {
namespace {

using Clock = std::chrono::steady_clock;

// Best of `reps` runs: the least disturbed by other load on a shared machine.
template <typename F>
double BestSeconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

struct Result {
  std::string preset;
  kvcodec::ByteAccounting acct;
  double encode_s = 0, decode_s = 0;
  double key_rel_rmse = 0, value_rel_rmse = 0;
};

// sqrt(sum (x - x')^2 / sum x^2) over kept tokens.
double RelRmse(const kvcodec::SyntheticCache& cache, const std::vector<kvcodec::DecodedLayer>& layers,
               bool values) {
  const auto& s = cache.shape;
  double err = 0, ref = 0;
  for (const auto& layer : layers) {
    const auto& src = values ? cache.values[layer.layer] : cache.keys[layer.layer];
    const auto& dec = values ? layer.values : layer.keys;
    for (int h = 0; h < s.num_kv_heads; ++h) {
      for (size_t i = 0; i < layer.kept[h].size(); ++i) {
        const size_t base = (static_cast<size_t>(h) * s.num_tokens + layer.kept[h][i]) * s.head_dim;
        for (int c = 0; c < s.head_dim; ++c) {
          const double a = kvcodec::LoadAsFloat(src.data(), s.dtype, base + c);
          const double b = kvcodec::LoadAsFloat(dec[h].data(), s.dtype, i * s.head_dim + c);
          err += (a - b) * (a - b);
          ref += a * a;
        }
      }
    }
  }
  return ref > 0 ? std::sqrt(err / ref) : 0;
}

std::vector<std::string> DefaultPresets(bool demo) {
  if (demo) {
    return {"full", "full-zstd", "int8", "int4", "int4-rans", "int4-channel", "int4-kivi", "mixed-int4",
            "int3", "int2", "cachegen", "svd64", "snapkv25-int4", "h2o25-int4", "streaming25-int4"};
  }
  return {"full-zstd", "full-rans", "int8", "int4", "int4-rans", "mixed-int4", "int2", "snapkv25-int4"};
}

absl::StatusOr<Result> Measure(const std::string& preset, const kvcodec::SyntheticCache& cache,
                               const kvcodec::ImportanceScores& scores, int reps, bool error) {
  auto config = kvcodec::Preset(preset);
  if (!config.ok()) config = kvcodec::CodecConfig::Parse(preset);  // a raw config string works too
  if (!config.ok()) return config.status();
  auto selection = kvcodec::Select(config->selection, cache.shape, &scores);
  if (!selection.ok()) return selection.status();
  const auto views = cache.views();
  Result r;
  r.preset = preset;
  std::vector<uint8_t> frame;
  absl::Status status;
  r.encode_s = BestSeconds(reps, [&] {
    auto f = kvcodec::EncodeFrame(cache.shape, *config, "bench", cache.positions, views, *selection, &r.acct);
    if (!f.ok()) status = f.status();
    else frame = *std::move(f);
  });
  if (!status.ok()) return status;
  std::vector<kvcodec::DecodedLayer> decoded;
  r.decode_s = BestSeconds(reps, [&] {
    auto d = kvcodec::DecodeFrame(frame);
    if (!d.ok()) status = d.status();
    else decoded = *std::move(d);
  });
  if (!status.ok()) return status;
  if (error) {
    r.key_rel_rmse = RelRmse(cache, decoded, false);
    r.value_rel_rmse = RelRmse(cache, decoded, true);
  }
  return r;
}

struct Baselines {
  double memcpy_gbs = 0, zstd1_gbs = 0, zstd1_unzstd_gbs = 0, zstd1_ratio = 0;
};

Baselines MeasureBaselines(const kvcodec::SyntheticCache& cache, int reps) {
  std::vector<uint8_t> all;
  for (size_t l = 0; l < cache.keys.size(); ++l) {
    all.insert(all.end(), cache.keys[l].begin(), cache.keys[l].end());
    all.insert(all.end(), cache.values[l].begin(), cache.values[l].end());
  }
  std::vector<uint8_t> copy(all.size()), packed(ZSTD_compressBound(all.size())), back(all.size());
  Baselines b;
  const double gb = all.size() / 1e9;
  b.memcpy_gbs = gb / BestSeconds(reps, [&] { std::memcpy(copy.data(), all.data(), all.size()); });
  size_t n = 0;
  b.zstd1_gbs = gb / BestSeconds(reps, [&] { n = ZSTD_compress(packed.data(), packed.size(), all.data(), all.size(), 1); });
  b.zstd1_unzstd_gbs = gb / BestSeconds(reps, [&] { ZSTD_decompress(back.data(), back.size(), packed.data(), n); });
  b.zstd1_ratio = static_cast<double>(n) / all.size();
  return b;
}

int Run(const CodecBenchOptions& o, bool demo) {
  const kvcodec::CacheShape shape{o.layers, o.kv_heads, o.head_dim, o.tokens, kvcodec::DType::kBFloat16};
  if (o.layers < 1 || o.kv_heads < 1 || o.head_dim < 4 || o.tokens < 1 || o.reps < 1) {
    std::fprintf(stderr, "error: layers, kv-heads, tokens and reps must be >= 1, head-dim >= 4\n");
    return 2;
  }
  if (!o.json) {
    std::printf("synthetic bf16 cache: %d tokens x %d layers x %d KV heads x head_dim %d = %.1f MB "
                "(keys with per-channel outliers and RoPE rotation)\n",
                o.tokens, o.layers, o.kv_heads, o.head_dim, shape.num_elements() * 2 / 1e6);
  }
  const kvcodec::SyntheticCache cache = kvcodec::MakeSyntheticCache(shape, o.seed);
  const kvcodec::ImportanceScores scores = kvcodec::MakeSyntheticScores(shape, o.seed);
  const Baselines base = MeasureBaselines(cache, o.reps);
  const double gb = shape.num_elements() * 2 / 1e9;
  nlohmann::json out;
  out["shape"] = {{"tokens", o.tokens}, {"layers", o.layers}, {"kv_heads", o.kv_heads}, {"head_dim", o.head_dim}};
  out["threads"] = 1;
  out["memcpy_gbps"] = base.memcpy_gbs;
  out["zstd1"] = {{"compress_gbps", base.zstd1_gbs}, {"decompress_gbps", base.zstd1_unzstd_gbs},
                  {"ratio", base.zstd1_ratio}};
  if (!o.json) {
    std::printf("baselines (same run, 1 core): memcpy %.2f GB/s; zstd -1 on raw bf16: %.2f GB/s compress, "
                "%.2f GB/s decompress, %.1f%% of raw\n\n",
                base.memcpy_gbs, base.zstd1_gbs, base.zstd1_unzstd_gbs, 100 * base.zstd1_ratio);
    if (demo) {
      std::printf("%-18s %12s %8s %9s %7s %9s %9s %8s %8s\n", "preset", "bytes", "bits/el", "bandwidth",
                  "kept", "K relerr", "V relerr", "enc GB/s", "dec GB/s");
    } else {
      std::printf("%-18s %8s %9s %9s %9s %10s %10s\n", "preset", "bits/el", "enc GB/s", "dec GB/s",
                  "enc/memcpy", "enc/zstd-1", "dec/memcpy");
    }
  }
  const std::vector<std::string> presets = o.presets.empty() ? DefaultPresets(demo) : o.presets;
  for (const std::string& p : presets) {
    auto r = Measure(p, cache, scores, o.reps, demo);
    if (!r.ok()) {
      std::fprintf(stderr, "error: preset %s: %s\n", p.c_str(), std::string(r.status().message()).c_str());
      return 1;
    }
    const double enc = gb / r->encode_s, dec = gb / r->decode_s;
    out["results"].push_back({{"preset", p}, {"bytes", r->acct.total_bytes},
                              {"bits_per_element", r->acct.bits_per_element()},
                              {"bandwidth_fraction", r->acct.bandwidth_fraction()},
                              {"kept_fraction", r->acct.kept_fraction()},
                              {"encode_gbps", enc}, {"decode_gbps", dec},
                              {"encode_over_memcpy", enc / base.memcpy_gbs},
                              {"decode_over_memcpy", dec / base.memcpy_gbs},
                              {"encode_over_zstd1", enc / base.zstd1_gbs},
                              {"key_rel_rmse", r->key_rel_rmse}, {"value_rel_rmse", r->value_rel_rmse},
                              {"bytes_header", r->acct.header_bytes}, {"bytes_index", r->acct.index_bytes},
                              {"bytes_scales", r->acct.scale_bytes}, {"bytes_payload", r->acct.payload_bytes},
                              {"bytes_framing", r->acct.framing_bytes}});
    if (o.json) continue;
    if (demo) {
      std::printf("%-18s %12llu %8.3f %8.2f%% %6.1f%% %9.5f %9.5f %8.2f %8.2f\n", p.c_str(),
                  static_cast<unsigned long long>(r->acct.total_bytes), r->acct.bits_per_element(),
                  100 * r->acct.bandwidth_fraction(), 100 * r->acct.kept_fraction(), r->key_rel_rmse,
                  r->value_rel_rmse, enc, dec);
    } else {
      std::printf("%-18s %8.3f %9.3f %9.3f %9.3f %10.3f %10.3f\n", p.c_str(), r->acct.bits_per_element(), enc,
                  dec, enc / base.memcpy_gbs, enc / base.zstd1_gbs, dec / base.memcpy_gbs);
    }
    std::fflush(stdout);
  }
  if (o.json) std::printf("%s\n", out.dump(2).c_str());
  else if (demo) std::printf("\nbandwidth = bytes / full 16-bit cache; relerr = relative RMSE over kept tokens; "
                             "GB/s of bf16 input, 1 core, best of %d\n", o.reps);
  return 0;
}

}  // namespace

int RunCodecBench(const CodecBenchOptions& options) { return Run(options, false); }
int RunCodecDemo(const CodecBenchOptions& options) { return Run(options, true); }

}  // namespace kvwire
