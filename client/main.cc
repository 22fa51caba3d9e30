// kvwire: one binary, one subcommand per job.
// Exit codes: 0 success, 1 the job failed, 2 bad command line.
#include <CLI/CLI.hpp>

#include <malloc.h>

#include <cstdio>

#include "bench/codec_bench.h"

int main(int argc, char** argv) {
  // Caches and frames are hundreds of MB and are allocated per request. Keeping freed memory in
  // the heap instead of returning it to the kernel avoids re-faulting every page each time
  // (measured: page faults dominated encode time of the raw preset).
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"kvwire: compressed KV-cache transfer between LLM prefill and decode nodes"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvwire 0.1.0");

  kvwire::CodecBenchOptions demo_opts;
  demo_opts.tokens = 2048;
  demo_opts.reps = 1;
  auto* demo = app.add_subcommand("codec-demo",
                                  "Encode a synthetic KV cache with each preset and print bytes, bits per "
                                  "element, bandwidth, reconstruction error and speed");
  auto add_shape = [](CLI::App* cmd, kvwire::CodecBenchOptions& o) {
    cmd->add_option("--tokens", o.tokens, "Context tokens")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--layers", o.layers, "Layers")->capture_default_str()->check(CLI::Range(1, 1024));
    cmd->add_option("--kv-heads", o.kv_heads, "KV heads")->capture_default_str()->check(CLI::Range(1, 256));
    cmd->add_option("--head-dim", o.head_dim, "Head dimension")->capture_default_str()->check(CLI::Range(4, 1024));
    cmd->add_option("--reps", o.reps, "Repetitions; the best is reported")->capture_default_str()->check(CLI::Range(1, 100));
    cmd->add_option("--seed", o.seed, "Seed of the synthetic cache")->capture_default_str();
    cmd->add_option("--preset", o.presets, "Preset name or config string (repeatable)");
    cmd->add_flag("--json", o.json, "Machine-readable output");
  };
  add_shape(demo, demo_opts);

  auto* bench = app.add_subcommand("bench", "Benchmarks that print figures");
  bench->require_subcommand(1);
  kvwire::CodecBenchOptions bench_opts;
  auto* bench_codec = bench->add_subcommand(
      "codec", "Encode/decode GB/s per core of bf16 input, beside memcpy and zstd -1 in the same run");
  add_shape(bench_codec, bench_opts);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*demo) return kvwire::RunCodecDemo(demo_opts);
  if (*bench_codec) return kvwire::RunCodecBench(bench_opts);
  return 2;
}
