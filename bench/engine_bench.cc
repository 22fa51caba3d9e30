#include "bench/engine_bench.h"

#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "server/engine/blas_kernels.h"
#include "server/engine/engine.h"
#include "server/modelio/checkpoint_layout.h"
#include "server/modelio/hf_config.h"
#include "server/modelio/random_checkpoint.h"

namespace kvwire {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr double kMiB = 1024.0 * 1024.0;

// Peak resident set size of the process so far (ru_maxrss is in KiB on Linux).
double PeakRssMiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) * 1024.0 / kMiB;
}

// Current resident set size, from /proc/self/statm (second field, in pages); 0 if unreadable.
double CurrentRssMiB() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long size = 0, resident = 0;
  const int n = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / kMiB;
}

// A mkdtemp directory, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    std::error_code ec;
    std::string tmpl =
        (std::filesystem::temp_directory_path(ec) / "kvwire_engine_bench_XXXXXX").string();
    if (ec) tmpl = "/tmp/kvwire_engine_bench_XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

int64_t ParameterCount(const modelio::ModelConfig& c) {
  int64_t n = 0;
  for (const auto& [name, shape] : modelio::ExpectedTensorShapes(c)) {
    int64_t e = 1;
    for (int64_t d : shape) e *= d;
    n += e;
  }
  return n;
}

std::vector<int32_t> Prompt(int n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> out(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    out[i] = static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(vocab));
  }
  return out;
}

int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int Fail(const char* what, const absl::Status& st) {
  std::fprintf(stderr, "error: %s: %s\n", what, st.ToString().c_str());
  return 1;
}

}  // namespace

int RunEngineBench(const EngineBenchOptions& o) {
  if (o.tokens < 1 || o.decode_tokens < 0) {
    std::fprintf(stderr, "error: --tokens must be >= 1 and --decode-tokens >= 0\n");
    return 2;
  }
  if (o.threads < 0) {
    std::fprintf(stderr, "error: --threads must be >= 0\n");
    return 2;
  }

  // The checkpoint: the given one, or a random Llama of the requested shape.
  TempDir tmp;
  std::string model_dir = o.model_dir;
  double write_s = 0;
  if (model_dir.empty()) {
    if (o.hidden < 1 || o.layers < 1 || o.heads < 1 || o.kv_heads < 1 || o.intermediate < 1 ||
        o.vocab < 3 || o.hidden % o.heads != 0 || o.heads % o.kv_heads != 0 ||
        (o.hidden / o.heads) % 2 != 0) {
      std::fprintf(stderr,
                   "error: the random model needs positive sizes, vocab >= 3, hidden divisible by "
                   "heads with an even head_dim, and heads divisible by kv-heads\n");
      return 2;
    }
    if (tmp.path().empty()) {
      std::fprintf(stderr, "error: cannot create a temporary directory\n");
      return 1;
    }
    modelio::ModelConfig c;
    c.architecture = modelio::Architecture::kLlama;
    c.vocab_size = o.vocab;
    c.hidden_size = o.hidden;
    c.intermediate_size = o.intermediate;
    c.num_hidden_layers = o.layers;
    c.num_attention_heads = o.heads;
    c.num_key_value_heads = o.kv_heads;
    c.head_dim = o.hidden / o.heads;
    c.max_position_embeddings = std::max<int64_t>(4096, int64_t{o.tokens} + o.decode_tokens);
    c.rope_theta = 500000.0;
    c.rms_norm_eps = 1e-5;
    c.bos_token_ids = {1};
    c.eos_token_ids = {2};
    if (absl::Status st = modelio::ValidateModelConfig(c); !st.ok()) {
      std::fprintf(stderr, "error: random model shape: %s\n", st.ToString().c_str());
      return 2;
    }
    model_dir = tmp.path();
    const auto t0 = Clock::now();
    // bf16 files: half the bytes to write; the engine converts to its dtype on load.
    if (absl::Status st =
            modelio::WriteRandomCheckpoint(model_dir, c, o.seed, modelio::Dtype::kBF16);
        !st.ok()) {
      return Fail("writing the random checkpoint", st);
    }
    write_s = Since(t0);
  }

  engine::EngineOptions eo;
  eo.model_dir = model_dir;
  eo.dtype = o.dtype;
  eo.threads = o.threads;
  eo.device = o.device;
  auto t0 = Clock::now();
  absl::StatusOr<std::unique_ptr<engine::Engine>> loaded = engine::Engine::Load(eo);
  if (!loaded.ok()) return Fail("loading the model", loaded.status());
  const double load_s = Since(t0);
  engine::Engine& eng = **loaded;
  const modelio::ModelConfig& cfg = eng.config();
  const int64_t params = ParameterCount(cfg);
  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (int64_t{o.tokens} + o.decode_tokens > cfg.max_position_embeddings) {
    std::fprintf(stderr, "error: %d + %d tokens exceed the model's max_position_embeddings (%lld)\n",
                 o.tokens, o.decode_tokens, static_cast<long long>(cfg.max_position_embeddings));
    return 2;
  }

  const std::vector<int32_t> prompt = Prompt(o.tokens, cfg.vocab_size, o.seed);
  // Warm-up (thread pools, allocator) outside the measurements.
  {
    absl::StatusOr<engine::PrefillResult> warm =
        eng.Prefill(std::span(prompt).first(std::min(o.tokens, 32)));
    if (!warm.ok()) return Fail("warm-up prefill", warm.status());
  }

  const double rss_before = CurrentRssMiB();
  t0 = Clock::now();
  absl::StatusOr<engine::PrefillResult> prefill = eng.Prefill(prompt);
  if (!prefill.ok()) return Fail("prefill", prefill.status());
  const double prefill_s = Since(t0);
  // The first token is known as soon as the prefill's last logits are.
  const int32_t first_token = Argmax(prefill->last_logits);
  const double ttft_s = Since(t0);
  const double peak_after_prefill = PeakRssMiB();
  const double rss_after_prefill = CurrentRssMiB();
  double kv_bytes = 0;
  for (size_t l = 0; l < prefill->keys.size(); ++l) {
    kv_bytes += static_cast<double>(prefill->keys[l].size() + prefill->values[l].size());
  }

  t0 = Clock::now();
  absl::StatusOr<std::unique_ptr<engine::DecodeSession>> session =
      engine::DecodeSession::FromPrefill(eng, *prefill);
  if (!session.ok()) return Fail("creating the decode session", session.status());
  const double session_s = Since(t0);
  int32_t token = first_token;
  t0 = Clock::now();
  for (int i = 0; i < o.decode_tokens; ++i) {
    absl::StatusOr<std::vector<float>> logits = (*session)->Step(token);
    if (!logits.ok()) return Fail("decode step", logits.status());
    token = Argmax(*logits);
  }
  const double decode_s = Since(t0);
  const double peak_rss = PeakRssMiB();

  const double prefill_tps = o.tokens / prefill_s;
  const double decode_tps = o.decode_tokens > 0 ? o.decode_tokens / decode_s : 0.0;
  const double growth = std::max(0.0, peak_after_prefill - rss_before);

  if (o.json) {
    nlohmann::json j;
    j["model"] = o.model_dir.empty() ? "random" : o.model_dir;
    j["shape"] = {{"architecture", std::string(modelio::ModelTypeName(cfg.architecture))},
                  {"hidden", cfg.hidden_size},
                  {"layers", cfg.num_hidden_layers},
                  {"heads", cfg.num_attention_heads},
                  {"kv_heads", cfg.num_key_value_heads},
                  {"head_dim", cfg.head_dim},
                  {"intermediate", cfg.intermediate_size},
                  {"vocab", cfg.vocab_size}};
    j["parameters"] = params;
    j["dtype"] = o.dtype;
    j["device"] = o.device;
    j["threads"] = threads;
    j["blas"] = engine::BlasName();
    j["tokens"] = o.tokens;
    j["decode_tokens"] = o.decode_tokens;
    if (o.model_dir.empty()) j["checkpoint_write_s"] = write_s;
    j["load_s"] = load_s;
    j["prefill_s"] = prefill_s;
    j["prefill_tokens_per_s"] = prefill_tps;
    j["ttft_s"] = ttft_s;
    j["session_create_s"] = session_s;
    j["decode_s"] = decode_s;
    j["decode_tokens_per_s"] = decode_tps;
    j["kv_cache_mib"] = kv_bytes / kMiB;
    j["rss_before_prefill_mib"] = rss_before;
    j["rss_after_prefill_mib"] = rss_after_prefill;
    j["prefill_peak_rss_growth_mib"] = growth;
    j["peak_rss_mib"] = peak_rss;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  std::printf("model: %s %s, hidden %lld, %lld layers, %lld heads (%lld KV, head_dim %lld), "
              "intermediate %lld, vocab %lld: %.1fM parameters\n",
              o.model_dir.empty() ? "random-weight" : o.model_dir.c_str(),
              std::string(modelio::ModelTypeName(cfg.architecture)).c_str(),
              static_cast<long long>(cfg.hidden_size), static_cast<long long>(cfg.num_hidden_layers),
              static_cast<long long>(cfg.num_attention_heads),
              static_cast<long long>(cfg.num_key_value_heads), static_cast<long long>(cfg.head_dim),
              static_cast<long long>(cfg.intermediate_size), static_cast<long long>(cfg.vocab_size),
              params / 1e6);
  std::printf("engine: %s on %s, %d threads, %s; load %.2f s", o.dtype.c_str(), o.device.c_str(),
              threads, engine::BlasName(), load_s);
  if (o.model_dir.empty()) std::printf(" (random checkpoint written in %.2f s)", write_s);
  std::printf("\n\n");
  std::printf("%-34s %14s\n", "metric", "value");
  std::printf("%-34s %14d\n", "prompt tokens", o.tokens);
  std::printf("%-34s %14.3f\n", "prefill s", prefill_s);
  std::printf("%-34s %14.1f\n", "prefill tokens/s", prefill_tps);
  std::printf("%-34s %14.1f\n", "time to first token ms", ttft_s * 1e3);
  std::printf("%-34s %14.1f\n", "decode session import ms", session_s * 1e3);
  std::printf("%-34s %14d\n", "decode tokens", o.decode_tokens);
  std::printf("%-34s %14.1f\n", "decode tokens/s", decode_tps);
  std::printf("%-34s %14.1f\n", "KV cache MiB", kv_bytes / kMiB);
  std::printf("%-34s %14.1f\n", "RSS before prefill MiB", rss_before);
  std::printf("%-34s %14.1f\n", "RSS growth during prefill MiB", growth);
  std::printf("%-34s %14.1f\n", "peak RSS MiB (ru_maxrss)", peak_rss);
  std::printf("\ntime to first token = prefill + argmax of its last logits; decode = greedy steps "
              "on a session FromPrefill; RSS growth = peak RSS after prefill - RSS before it\n");
  return 0;
}

}  // namespace kvwire
