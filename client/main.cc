// kvwire: one binary, one subcommand per job.
// Exit codes: 0 success, 1 the job failed, 2 bad command line.
#include <CLI/CLI.hpp>

#include <malloc.h>

#include <cstdio>

#include "bench/codec_bench.h"
#if KVWIRE_HAVE_ENGINE
#include "bench/engine_bench.h"
#endif
#if KVWIRE_HAVE_NODES
#include "client/calibrate_cmd.h"
#include "client/demo_cmd.h"
#include "client/eval_cmd.h"
#include "client/generate_cmd.h"
#include "client/serve_cmd.h"
#include "bench/e2e_bench.h"
#include "bench/transfer_bench.h"
#include "server/engine/blas_kernels.h"
#endif

int main(int argc, char** argv) {
  kvwire::engine::MaybeRestartWithBetterBlasKernels(argv);
  // Caches and frames are hundreds of MB and are allocated per request. Keeping freed memory in
  // the heap instead of returning it to the kernel avoids re-faulting every page each time
  // (measured: page faults dominated encode time of the raw preset).
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"kvwire: compressed KV-cache transfer between LLM prefill and decode nodes"};
  app.require_subcommand(1);
  // Wide enough for "--option TYPE:{choices}=default", so every description starts on its line.
  app.get_formatter()->column_width(56);
  app.set_version_flag("--version", "kvwire 0.1.0");
  app.footer(
      "Exit codes: 0 success; 1 the job failed (generate: the RPC failed, its gRPC code name and "
      "message on stderr; health: not SERVING; serve: the node could not start); 2 bad command line.");

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
#if KVWIRE_HAVE_ENGINE
  kvwire::EngineBenchOptions engine_opts;
  auto* bench_engine = bench->add_subcommand(
      "engine", "Model engine prefill/decode tokens/s, time to first token and peak memory (random "
                "Llama-shaped weights unless --model)");
  bench_engine->add_option("--model", engine_opts.model_dir, "Hugging Face checkpoint directory (default: random weights)");
  bench_engine->add_option("--tokens", engine_opts.tokens, "Prompt tokens")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  bench_engine->add_option("--decode-tokens", engine_opts.decode_tokens, "Greedy decode steps")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  bench_engine->add_option("--dtype", engine_opts.dtype, "Engine dtype")->capture_default_str()->check(CLI::IsMember({"float32", "bfloat16"}));
  bench_engine->add_option("--threads", engine_opts.threads, "Torch threads; 0 = all cores")->capture_default_str()->check(CLI::Range(0, 1024));
  bench_engine->add_option("--device", engine_opts.device, "cpu, cuda or cuda:N")->capture_default_str();
  bench_engine->add_option("--seed", engine_opts.seed, "Seed of the random weights and prompt")->capture_default_str();
  bench_engine->add_option("--hidden", engine_opts.hidden, "Random model: hidden size")->capture_default_str()->check(CLI::Range(2, 1 << 16));
  bench_engine->add_option("--layers", engine_opts.layers, "Random model: layers")->capture_default_str()->check(CLI::Range(1, 1024));
  bench_engine->add_option("--heads", engine_opts.heads, "Random model: attention heads")->capture_default_str()->check(CLI::Range(1, 1024));
  bench_engine->add_option("--kv-heads", engine_opts.kv_heads, "Random model: KV heads")->capture_default_str()->check(CLI::Range(1, 1024));
  bench_engine->add_option("--intermediate", engine_opts.intermediate, "Random model: MLP size")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  bench_engine->add_option("--vocab", engine_opts.vocab, "Random model: vocabulary")->capture_default_str()->check(CLI::Range(3, 1 << 22));
  bench_engine->add_flag("--json", engine_opts.json, "Machine-readable output");
#endif
#if KVWIRE_HAVE_NODES
  kvwire::TransferBenchOptions transfer_opts;
  auto* bench_transfer = bench->add_subcommand(
      "transfer", "Loopback GB/s of one frame over the gRPC transport (verifying DecodeNodeService "
                  "and a byte-counting receiver) beside a plain TCP copy, at 64 KiB/256 KiB/1 MiB chunks");
  bench_transfer->add_option("--preset", transfer_opts.preset, "Preset name or config string")->capture_default_str();
  bench_transfer->add_option("--tokens", transfer_opts.tokens, "Context tokens")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  bench_transfer->add_option("--layers", transfer_opts.layers, "Layers")->capture_default_str()->check(CLI::Range(1, 1024));
  bench_transfer->add_option("--bytes", transfer_opts.bytes, "Send an uncompressed frame of about this many bytes instead (0: off)")->capture_default_str()->check(CLI::Range(uint64_t{0}, uint64_t{4} << 30));
  bench_transfer->add_option("--reps", transfer_opts.reps, "Repetitions; the best is reported")->capture_default_str()->check(CLI::Range(1, 100));
  bench_transfer->add_flag("--json", transfer_opts.json, "Machine-readable output");
  kvwire::E2eBenchOptions e2e_opts;
  auto* bench_e2e = bench->add_subcommand(
      "e2e", "Time to first token through in-process decode, prefill and scout nodes on loopback "
             "over an emulated link, for the text path and prefill-path presets, beside the floor "
             "(wire bytes / link rate + prefill time)");
  bench_e2e->add_option("--model", e2e_opts.model_dir, "Hugging Face model directory; without a config.json there, a random model of the --hidden/--layers/... shape")->capture_default_str();
  bench_e2e->add_option("--tokens", e2e_opts.tokens, "Prompt tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  bench_e2e->add_option("--link-mbps", e2e_opts.link_mbps, "Emulated link rates in Mbit/s (repeatable)")->capture_default_str()->check(CLI::Range(0.001, 1e7));
  bench_e2e->add_option("--preset", e2e_opts.presets, "'text' (the text path) or a preset of the prefill path (repeatable)")->capture_default_str();
  bench_e2e->add_option("--reps", e2e_opts.reps, "Timed requests per row after one warm-up; the best is reported")->capture_default_str()->check(CLI::Range(1, 100));
  bench_e2e->add_option("--threads", e2e_opts.threads, "Torch threads per node; 0 = all cores")->capture_default_str()->check(CLI::Range(0, 1024));
  bench_e2e->add_option("--hidden", e2e_opts.hidden, "Random model: hidden size")->capture_default_str()->check(CLI::Range(2, 1 << 16));
  bench_e2e->add_option("--layers", e2e_opts.layers, "Random model: layers")->capture_default_str()->check(CLI::Range(1, 1024));
  bench_e2e->add_option("--heads", e2e_opts.heads, "Random model: attention heads")->capture_default_str()->check(CLI::Range(1, 1024));
  bench_e2e->add_option("--kv-heads", e2e_opts.kv_heads, "Random model: KV heads")->capture_default_str()->check(CLI::Range(1, 1024));
  bench_e2e->add_option("--intermediate", e2e_opts.intermediate, "Random model: MLP size")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  bench_e2e->add_flag("--json", e2e_opts.json, "Machine-readable output");
  kvwire::cli::ServeOptions serve_opts;
  auto* serve = kvwire::cli::AddServeCommand(app, serve_opts);
  kvwire::cli::GenerateOptions generate_opts;
  auto* generate = kvwire::cli::AddGenerateCommand(app, generate_opts);
  kvwire::cli::HealthOptions health_opts;
  auto* health = kvwire::cli::AddHealthCommand(app, health_opts);
  kvwire::cli::EvalOptions eval_opts;
  auto* eval = kvwire::cli::AddEvalCommand(app, eval_opts);
  kvwire::cli::CalibrateOptions calibrate_opts;
  auto* calibrate = kvwire::cli::AddCalibrateCommand(app, calibrate_opts);
  kvwire::cli::DemoOptions demo_run_opts;
  auto* demo_run = kvwire::cli::AddDemoCommand(app, demo_run_opts);
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*demo) return kvwire::RunCodecDemo(demo_opts);
  if (*bench_codec) return kvwire::RunCodecBench(bench_opts);
#if KVWIRE_HAVE_ENGINE
  if (*bench_engine) return kvwire::RunEngineBench(engine_opts);
#endif
#if KVWIRE_HAVE_NODES
  if (*bench_transfer) return kvwire::RunTransferBench(transfer_opts);
  if (*bench_e2e) return kvwire::RunE2eBench(e2e_opts);
  if (*serve) return kvwire::cli::RunServe(serve_opts);
  if (*generate) return kvwire::cli::RunGenerate(generate_opts);
  if (*health) return kvwire::cli::RunHealth(health_opts);
  if (*eval) return kvwire::cli::RunEval(eval_opts);
  if (*calibrate) return kvwire::cli::RunCalibrate(calibrate_opts);
  if (*demo_run) return kvwire::cli::RunDemo(demo_run_opts);
#endif
  return 2;
}
