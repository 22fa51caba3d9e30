// kvwire_gpu_bench: the codec's CUDA kernels on one GPU, every figure measured in the same run.
//   1. Device-to-device cudaMemcpy bandwidth (the reference every kernel is compared with).
//   2. Each kernel on one section (a layer's keys: every head, every token) in GB/s, counting
//      bytes read plus bytes written as the copy figure does, and its share of the copy rate.
//   3. Encode and decode of a whole cache (default: Llama-3-8B's shape, 32 layers x 8 KV heads x
//      head_dim 128, 32k tokens, bf16, synthetic keys with per-channel outliers) in ms, kernels
//      only and as whole frames (PCIe copies, checksums and the host side included).
//   4. GPU rANS decoding of every code stream of an INT4 frame, against kvcodec on one core.
// Correctness is the tests' job (cuda_kernels_test); the bench still checks one section's
// streams against kvcodec and refuses to print figures for a kernel that disagrees.
//
// Usage: kvwire_gpu_bench [--tokens 32768] [--layers 32] [--kv-heads 8] [--head-dim 128]
//                         [--reps 10] [--json]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/backend.h"
#include "kernels/gpu_frame.h"
#include "kernels/plan.h"
#include "kernels/rans_plan.h"
#include "kernels/section_codec.h"
#include "kvcodec/dtype.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/quant.h"
#include "kvcodec/rans.h"
#include "kvcodec/section.h"
#include "kvcodec/synthetic.h"

namespace kvwire::gpu {
namespace {

using Json = nlohmann::ordered_json;

struct Options {
  int tokens = 32768, layers = 32, kv_heads = 8, head_dim = 128, reps = 10;
  bool json = false;
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "kvwire_gpu_bench: %s\n", what.c_str());
  std::exit(1);
}
void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}
template <typename T>
T Get(absl::StatusOr<T> v, const char* what) {
  Check(v.status(), what);
  return *std::move(v);
}

// Best of `reps` GPU times of f() (after one warm-up run), by events on the backend's stream.
class GpuTimer {
 public:
  explicit GpuTimer(Backend& b) : stream_(static_cast<cudaStream_t>(b.cuda_stream())) {
    cudaEventCreate(&start_);
    cudaEventCreate(&stop_);
  }
  ~GpuTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  template <typename F>
  double BestMs(int reps, F&& f) {
    f();
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
      cudaEventRecord(start_, stream_);
      f();
      cudaEventRecord(stop_, stream_);
      if (cudaEventSynchronize(stop_) != cudaSuccess) Die("a kernel failed while timing");
      float ms = 0;
      cudaEventElapsedTime(&ms, start_, stop_);
      best = std::min(best, static_cast<double>(ms));
    }
    return best;
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t start_, stop_;
};

template <typename F>
double BestWallMs(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

double GBs(double bytes, double ms) { return bytes / 1e6 / ms; }

// A section's streams in device memory.
struct DeviceStreams {
  Buffer buffer;
  SectionStreams s;
};
DeviceStreams AllocStreams(Backend& b, const SectionPlan& p) {
  const size_t sizes[4] = {Workspace::Aligned(p.main_code_alloc), Workspace::Aligned(p.main_param_pairs * 4),
                           Workspace::Aligned(p.ref_code_bytes), Workspace::Aligned(p.ref_param_pairs * 4)};
  DeviceStreams d;
  d.buffer = Get(Buffer::Make(b, sizes[0] + sizes[1] + sizes[2] + sizes[3]), "allocate streams");
  uint8_t* at = d.buffer.as<uint8_t>();
  d.s.main_codes = at;
  d.s.main_params = reinterpret_cast<ParamPair*>(at + sizes[0]);
  d.s.ref_codes = at + sizes[0] + sizes[1];
  d.s.ref_params = reinterpret_cast<ParamPair*>(at + sizes[0] + sizes[1] + sizes[2]);
  return d;
}
uint64_t StreamBytes(const SectionPlan& p) {
  return p.main_code_bytes + 4 * p.main_param_pairs + p.ref_code_bytes + 4 * p.ref_param_pairs;
}

kvcodec::QuantSpec Spec(const std::string& text) {
  auto plan = kvcodec::BitPlan::Parse("*:" + text);
  if (!plan.ok()) Die("bad spec " + text);
  return plan->Resolve(0, false);
}
kvcodec::DeltaConfig Delta(const std::string& text) {
  auto c = kvcodec::CodecConfig::Parse("delta=" + text);
  if (!c.ok()) Die("bad delta " + text);
  return c->delta;
}

// The section's streams must be kvcodec's (the bench's own guard; the tests check all cases).
bool MatchesKvcodec(Backend& b, const SectionPlan& plan, const DeviceStreams& d, const std::vector<uint8_t>& host_keys,
                    int d_model) {
  std::vector<float> x(host_keys.size() / 2);
  kvcodec::ToFloat(host_keys.data(), kvcodec::DType::kBFloat16, x.size(), x.data());
  kvcodec::SectionShape shape{d_model, std::vector<int>(plan.head_rows.size() - 1, 0)};
  for (size_t h = 0; h + 1 < plan.head_rows.size(); ++h) shape.rows_per_head[h] = plan.head_rows[h + 1] - plan.head_rows[h];
  auto q = kvcodec::Quantize(plan.spec, plan.delta, shape, x);
  if (!q.ok()) return false;
  const std::vector<uint8_t> packed = kvcodec::PackBits(q->main_codes, plan.geom.bits);
  std::vector<uint8_t> codes(packed.size());
  std::vector<uint16_t> params(q->main_params.size());
  Check(b.CopyToHost(codes.data(), d.s.main_codes, codes.size()), "download");
  Check(b.CopyToHost(params.data(), d.s.main_params, 2 * params.size()), "download");
  return codes == packed && params == q->main_params;
}

int Run(const Options& o) {
  auto backend_or = MakeCudaBackend(0);
  if (!backend_or.ok()) Die("needs a CUDA device: " + backend_or.status().ToString());
  Backend& b = **backend_or;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  GpuTimer timer(b);
  Json out;
  out["device"] = prop.name;
  const kvcodec::CacheShape shape{o.layers, o.kv_heads, o.head_dim, o.tokens, kvcodec::DType::kBFloat16};
  const uint64_t section_bytes = static_cast<uint64_t>(o.kv_heads) * o.tokens * o.head_dim * 2;
  const double cache_bytes = 2.0 * o.layers * section_bytes;
  out["cache"] = {{"layers", o.layers}, {"kv_heads", o.kv_heads}, {"head_dim", o.head_dim},
                  {"tokens", o.tokens}, {"dtype", "bfloat16"}, {"bytes", cache_bytes}};
  if (!o.json) {
    std::printf("device: %s\ncache: %d layers x %d KV heads x head_dim %d x %d tokens, bf16 = %.2f GB\n",
                prop.name, o.layers, o.kv_heads, o.head_dim, o.tokens, cache_bytes / 1e9);
  }

  // 1. Copy bandwidth, big buffers and section-sized ones.
  const size_t big = std::max<size_t>(size_t{1} << 30, section_bytes);
  Buffer a = Get(Buffer::Make(b, big), "allocate"), c = Get(Buffer::Make(b, big), "allocate");
  auto memcpy_gbs = [&](size_t n) {
    const double ms = timer.BestMs(o.reps, [&] { Check(b.CopyWithin(c.data(), a.data(), n), "memcpy"); });
    return GBs(2.0 * n, ms);
  };
  const double copy_gbs = memcpy_gbs(big), copy_section_gbs = memcpy_gbs(section_bytes);
  out["memcpy_d2d_gbs"] = copy_gbs;
  out["memcpy_d2d_section_gbs"] = copy_section_gbs;
  if (!o.json) {
    std::printf("\ncudaMemcpy device to device: %.0f GB/s (1 GiB), %.0f GB/s (one section, %.0f MB); "
                "GB/s = (read + written) / time\n",
                copy_gbs, copy_section_gbs, section_bytes / 1e6);
  }

  // The cache: a few distinct synthetic layers, repeated (values do not change the kernels' work).
  const int distinct = std::min(o.layers, 4);
  const kvcodec::SyntheticCache host = kvcodec::MakeSyntheticCache(
      kvcodec::CacheShape{distinct, o.kv_heads, o.head_dim, o.tokens, kvcodec::DType::kBFloat16}, 1);
  std::vector<Buffer> cache;
  std::vector<DeviceLayerView> views;
  for (int l = 0; l < o.layers; ++l) {
    cache.push_back(Get(Upload(b, host.keys[l % distinct]), "upload"));
    cache.push_back(Get(Upload(b, host.values[l % distinct]), "upload"));
  }
  for (int l = 0; l < o.layers; ++l) views.push_back({cache[2 * l].data(), cache[2 * l + 1].data()});
  const kvcodec::Selection all = kvcodec::Selection::KeepAll(shape);
  const std::vector<int> rows_per_head(o.kv_heads, o.tokens);
  const std::vector<int64_t> offsets = Get(CacheRowOffsets(all.kept[0], o.tokens, o.head_dim), "rows");
  Buffer rows = Get(Upload(b, offsets), "upload rows");
  Buffer decoded = Get(Buffer::Make(b, section_bytes), "allocate");

  // 2. Kernels on one section (layer 0 keys).
  if (!o.json) {
    std::printf("\n%-34s %10s %10s %8s   %10s %10s %8s\n", "kernel (one section)", "enc ms", "enc GB/s", "of copy",
                "dec ms", "dec GB/s", "of copy");
  }
  Json kernels = Json::array();
  {
    const CopyRowsArgs gather{static_cast<int64_t>(offsets.size()), o.head_dim, views[0].keys, kBF16,
                              rows.as<int64_t>(), decoded.data(), kBF16, nullptr, 1};
    const double ms = timer.BestMs(o.reps, [&] { Check(b.CopyRows(gather), "gather"); });
    kernels.push_back({{"kernel", "gather kept rows (bf16)"}, {"ms", ms}, {"gbs", GBs(2.0 * section_bytes, ms)}});
    if (!o.json) {
      std::printf("%-34s %10.3f %10.0f %7.0f%%\n", "gather kept rows (bf16)", ms, GBs(2.0 * section_bytes, ms),
                  100 * GBs(2.0 * section_bytes, ms) / copy_gbs);
    }
  }
  const std::pair<const char*, const char*> section_cases[] = {
      {"int8", "none"},         {"int4", "none"},          {"int2", "none"},          {"int4/g32", "none"},
      {"int2/g32", "none"},     {"int3", "none"},          {"int4/channel", "none"},  {"int4/channel/g128", "none"},
      {"int4", "anchor/10"},    {"int4", "gseq/10"},       {"int4/channel", "anchor/10"}, {"int4", "seq"},
  };
  for (const auto& [spec_text, delta_text] : section_cases) {
    const SectionPlan plan = Get(PlanSection(Spec(spec_text), Delta(delta_text), o.head_dim, rows_per_head), "plan");
    Workspace ws(b);
    const SectionScratch scratch = Get(PlaceScratch(b, plan, ws), "scratch");
    DeviceStreams streams = AllocStreams(b, plan);
    const double enc_ms = timer.BestMs(std::string(delta_text) == "seq" ? 1 : o.reps, [&] {
      Check(LaunchEncode(b, plan, scratch, views[0].keys, kvcodec::DType::kBFloat16, rows.as<int64_t>(), streams.s),
            "encode");
    });
    Check(ReadEncodeErrors(b, scratch), "encode");
    const double dec_ms = timer.BestMs(o.reps, [&] {
      Check(LaunchDecode(b, plan, scratch, streams.s, decoded.data(), kvcodec::DType::kBFloat16, rows.as<int64_t>()),
            "decode");
    });
    const std::string name = std::string(spec_text) + (std::string(delta_text) == "none" ? "" : " delta=" + std::string(delta_text));
    const bool same = MatchesKvcodec(b, plan, streams, host.keys[0], o.head_dim);
    const double moved_enc = section_bytes + StreamBytes(plan), moved_dec = StreamBytes(plan) + section_bytes;
    kernels.push_back({{"kernel", "quantize " + name}, {"encode_ms", enc_ms}, {"encode_gbs", GBs(moved_enc, enc_ms)},
                       {"decode_ms", dec_ms}, {"decode_gbs", GBs(moved_dec, dec_ms)}, {"matches_kvcodec", same}});
    if (!same) Die("quantize " + name + ": streams differ from kvcodec's; figures withheld");
    if (!o.json) {
      std::printf("%-34s %10.3f %10.0f %7.0f%%   %10.3f %10.0f %7.0f%%\n", name.c_str(), enc_ms,
                  GBs(moved_enc, enc_ms), 100 * GBs(moved_enc, enc_ms) / copy_gbs, dec_ms, GBs(moved_dec, dec_ms),
                  100 * GBs(moved_dec, dec_ms) / copy_gbs);
    }
  }
  out["kernels"] = kernels;

  // 3. The whole cache, kernels only: every layer's keys and values encoded, then decoded.
  if (!o.json) std::printf("\n%-46s %10s %10s %10s %10s\n", "whole cache, kernels only", "encode ms", "GB/s", "decode ms", "GB/s");
  Json whole = Json::array();
  Buffer out_cache = Get(Buffer::Make(b, static_cast<size_t>(cache_bytes)), "allocate output cache");
  for (const char* preset : {"int8", "int4", "int2", "int4-kivi", "cachegen"}) {
    const kvcodec::CodecConfig config = Get(kvcodec::Preset(preset), "preset");
    const kvcodec::BitPlan bit_plan = Get(kvcodec::BitPlan::Parse(config.bit_plan), "plan");
    SectionPlan plans[2];
    Workspace ws[2] = {Workspace(b), Workspace(b)};
    SectionScratch scratch[2];
    for (int v = 0; v < 2; ++v) {
      plans[v] = Get(PlanSection(bit_plan.Resolve(1, v == 1), config.delta, o.head_dim, rows_per_head), "plan");
      scratch[v] = Get(PlaceScratch(b, plans[v], ws[v]), "scratch");
    }
    std::vector<DeviceStreams> streams;
    for (int s = 0; s < 2 * o.layers; ++s) streams.push_back(AllocStreams(b, plans[s % 2]));
    const double enc_ms = timer.BestMs(o.reps, [&] {
      for (int s = 0; s < 2 * o.layers; ++s) {
        const void* src = s % 2 ? views[s / 2].values : views[s / 2].keys;
        Check(LaunchEncode(b, plans[s % 2], scratch[s % 2], src, kvcodec::DType::kBFloat16, rows.as<int64_t>(),
                           streams[s].s),
              "encode");
      }
    });
    Check(ReadEncodeErrors(b, scratch[0]), "encode keys");
    Check(ReadEncodeErrors(b, scratch[1]), "encode values");
    const double dec_ms = timer.BestMs(o.reps, [&] {
      for (int s = 0; s < 2 * o.layers; ++s) {
        Check(LaunchDecode(b, plans[s % 2], scratch[s % 2], streams[s].s, out_cache.as<uint8_t>() + s * section_bytes,
                           kvcodec::DType::kBFloat16, rows.as<int64_t>()),
              "decode");
      }
    });
    whole.push_back({{"preset", preset}, {"config", config.ToString()}, {"encode_ms", enc_ms},
                     {"encode_gbs", GBs(cache_bytes, enc_ms)}, {"decode_ms", dec_ms}, {"decode_gbs", GBs(cache_bytes, dec_ms)}});
    if (!o.json) {
      std::printf("%-46s %10.2f %10.0f %10.2f %10.0f\n", preset, enc_ms, GBs(cache_bytes, enc_ms), dec_ms,
                  GBs(cache_bytes, dec_ms));
    }
  }
  out["whole_cache_kernels"] = whole;
  out_cache.Reset();

  // 3b. Whole frames: host memory in and out, PCIe, checksums, selection lists, stream writing.
  if (!o.json) std::printf("\n%-46s %10s %10s %10s\n", "whole cache, frames (host side included)", "encode ms", "decode ms", "MB");
  Json frames = Json::array();
  std::vector<uint8_t> rans_frame;
  for (const char* preset : {"int4", "int2", "int4-rans"}) {
    const kvcodec::CodecConfig config = Get(kvcodec::Preset(preset), "preset");
    std::vector<uint8_t> frame;
    const bool rans = config.entropy == kvcodec::EntropyCoder::kRans;
    const double enc_ms = BestWallMs(rans ? 1 : 3, [&] {
      frame = Get(EncodeFrameOn(b, shape, config, "bench", host.positions, views, all), "EncodeFrameOn");
    });
    const double dec_ms = BestWallMs(3, [&] { Get(DecodeFrameOn(b, frame), "DecodeFrameOn"); });
    frames.push_back({{"preset", preset}, {"encode_ms", enc_ms}, {"decode_ms", dec_ms}, {"frame_bytes", frame.size()}});
    if (!o.json) std::printf("%-46s %10.1f %10.1f %10.1f\n", preset, enc_ms, dec_ms, frame.size() / 1e6);
    if (rans) rans_frame = std::move(frame);
  }
  out["whole_cache_frames"] = frames;
  if (!o.json) {
    std::printf("  (rANS encoding runs on the host, one core: the int4-rans encode figure is kvcodec's coder)\n");
  }

  // 4. rANS decoding of the INT4 code streams: all sections in one launch vs kvcodec on one core.
  {
    const SectionPlan plan = Get(PlanSection(Spec("int4"), Delta("none"), o.head_dim, rows_per_head), "plan");
    Workspace ws(b);
    const SectionScratch scratch = Get(PlaceScratch(b, plan, ws), "scratch");
    DeviceStreams streams = AllocStreams(b, plan);
    const int row_len = SymbolRowLen(o.head_dim, 4);
    const uint64_t symbols = static_cast<uint64_t>(plan.main_rows) * row_len;
    std::vector<std::future<std::vector<uint8_t>>> encoded;
    for (int s = 0; s < 2 * o.layers; ++s) {
      const void* src = s % 2 ? views[s / 2].values : views[s / 2].keys;
      Check(LaunchEncode(b, plan, scratch, src, kvcodec::DType::kBFloat16, rows.as<int64_t>(), streams.s), "encode");
      std::vector<uint8_t> sym(symbols);  // INT4 with an even head_dim: packed bytes are the symbols
      Check(b.CopyToHost(sym.data(), streams.s.main_codes, symbols), "download");
      encoded.push_back(std::async(std::launch::async, [sym = std::move(sym), row_len] {
        return kvcodec::RansEncode(sym, row_len, 8);
      }));
    }
    RansBatch batch;
    std::vector<std::vector<uint8_t>> coded;
    for (auto& f : encoded) coded.push_back(f.get());
    for (size_t s = 0; s < coded.size(); ++s) {
      Check(AddRansStream(coded[s], symbols, row_len, 8, s * symbols, &batch), "rANS stream");
    }
    Buffer out_symbols = Get(Buffer::Make(b, batch.out_bytes), "allocate");
    Buffer d_streams = Get(Upload(b, batch.streams), "upload"), d_tables = Get(Upload(b, batch.tables), "upload");
    Buffer d_data = Get(Upload(b, batch.data), "upload");
    Buffer d_status = Get(Buffer::Make(b, batch.streams.size() * 8), "allocate");
    const RansDecodeArgs args{d_streams.as<RansStreamDesc>(), static_cast<int64_t>(batch.streams.size()),
                              d_data.as<uint8_t>(), d_tables.as<RansTable>(), out_symbols.as<uint8_t>(),
                              d_status.as<uint64_t>()};
    const double gpu_ms = timer.BestMs(std::max(1, o.reps / 3), [&] { Check(b.RansDecode(args), "rANS"); });
    std::vector<uint64_t> status(batch.streams.size());
    Check(b.CopyToHost(status.data(), d_status.data(), status.size() * 8), "download");
    for (size_t i = 0; i < status.size(); ++i) Check(RansStatusToError(status[i], i), "rANS decode");
    std::vector<uint8_t> cpu_out(symbols);
    const double cpu_ms = BestWallMs(1, [&] { Check(kvcodec::RansDecode(coded[0], row_len, 8, cpu_out), "cpu rANS"); });
    std::vector<uint8_t> gpu_first(symbols);
    Check(b.CopyToHost(gpu_first.data(), out_symbols.data(), symbols), "download");
    if (gpu_first != cpu_out) Die("GPU rANS output differs from kvcodec's; figures withheld");
    const double total = static_cast<double>(symbols) * coded.size();
    out["rans_decode"] = {{"streams", coded.size()}, {"symbols", total}, {"gpu_ms", gpu_ms},
                          {"gpu_symbols_gbs", GBs(total, gpu_ms)}, {"cpu_one_stream_ms", cpu_ms},
                          {"cpu_core_gbs", GBs(symbols, cpu_ms)}};
    if (!o.json) {
      std::printf("\nrANS decode, %zu INT4 code streams of %.1f M symbols each: GPU %.1f ms (%.1f GB/s of symbols); "
                  "kvcodec one core %.1f ms per stream (%.2f GB/s)\n",
                  coded.size(), symbols / 1e6, gpu_ms, GBs(total, gpu_ms), cpu_ms, GBs(symbols, cpu_ms));
    }
  }
  if (o.json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace kvwire::gpu

int main(int argc, char** argv) {
  kvwire::gpu::Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](int* field) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      *field = std::atoi(argv[++i]);
    };
    if (arg == "--tokens") value(&o.tokens);
    else if (arg == "--layers") value(&o.layers);
    else if (arg == "--kv-heads") value(&o.kv_heads);
    else if (arg == "--head-dim") value(&o.head_dim);
    else if (arg == "--reps") value(&o.reps);
    else if (arg == "--json") o.json = true;
    else {
      std::fprintf(stderr,
                   "usage: kvwire_gpu_bench [--tokens 32768] [--layers 32] [--kv-heads 8] [--head-dim 128] "
                   "[--reps 10] [--json]\n");
      return 2;
    }
  }
  if (o.tokens < 1 || o.layers < 1 || o.kv_heads < 1 || o.head_dim < 2 || o.head_dim % 2 || o.reps < 1) {
    std::fprintf(stderr, "tokens, layers, kv-heads and reps must be >= 1, head-dim even\n");
    return 2;
  }
  return kvwire::gpu::Run(o);
}
