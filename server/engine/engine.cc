// The only translation unit of the engine library that includes libtorch (ATen only, not
// torch/torch.h: the autograd/nn headers are not needed for inference and double the
// compile time).
#include "server/engine/engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Context.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numbers>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/engine/blas_kernels.h"
#include "server/modelio/checkpoint_layout.h"
#include "server/modelio/safetensors.h"

namespace kvwire::engine {
namespace {

using modelio::Architecture;
using modelio::RopeScaling;

#define ENGINE_RETURN_IF_ERROR(expr)           \
  do {                                         \
    if (absl::Status _st = (expr); !_st.ok()) \
      return _st;                              \
  } while (0)

// Converts libtorch exceptions at the API boundary. c10::Error derives from
// std::exception; its what() carries a C++ backtrace, which is noise in a Status.
template <typename Fn>
auto CatchTorch(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

at::ScalarType ToTorch(kvcodec::DType d) {
  switch (d) {
    case kvcodec::DType::kFloat32:
      return at::kFloat;
    case kvcodec::DType::kFloat16:
      return at::kHalf;
    case kvcodec::DType::kBFloat16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

struct LayerWeights {
  at::Tensor wq, wk, wv, wo;
  at::Tensor bq, bk, bv, bo;  // undefined when the architecture has no bias
  at::Tensor gate, up, down;
  at::Tensor ln_attn, ln_mlp;
  std::optional<int64_t> sliding_window;
};

// Parses EngineOptions::device: "cpu", "cuda" or "cuda:N". InvalidArgument for anything
// else; FailedPrecondition when CUDA is asked for but this libtorch or machine lacks it.
absl::StatusOr<at::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  int index = 0;
  bool ok = name == "cuda";
  if (!ok && name.size() > 5 && name.compare(0, 5, "cuda:") == 0) {
    const char* first = name.data() + 5;
    const char* last = name.data() + name.size();
    auto [ptr, ec] = std::from_chars(first, last, index);
    ok = ec == std::errc() && ptr == last && index >= 0 && index < 128;
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown engine device '", name, "' (cpu, cuda or cuda:N)"));
  }
  // hasCUDART: libtorch was compiled with the CUDA runtime (the libtorch_cuda hooks are
  // linked in); hasCUDA: it also found a usable device.
  if (!at::globalContext().hasCUDART()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "engine device '", name,
        "': this build of libtorch has no CUDA (build against a CUDA-enabled libtorch, see "
        "engine.h)"));
  }
  const size_t count = at::hasCUDA() ? at::getNumGPUs() : 0;
  if (static_cast<size_t>(index) >= count) {
    const std::string which =
        count > 0 ? absl::StrCat(" ", index, " (", count, " visible)") : std::string(" is visible");
    return absl::FailedPreconditionError(
        absl::StrCat("engine device '", name, "': no CUDA device", which));
  }
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(index));
}

// Copies `t` (contiguous) into a byte vector, from whatever device it is on.
std::vector<uint8_t> ToBytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous().cpu();
  std::vector<uint8_t> out(c.numel() * c.element_size());
  std::memcpy(out.data(), c.data_ptr(), out.size());
  return out;
}

std::vector<float> ToFloatVector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous().cpu();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

}  // namespace

struct Engine::Impl {
  ModelConfig cfg;
  at::ScalarType dtype = at::kFloat;
  // Where weights and activations live. Host buffers (imported caches, token ids) are
  // wrapped with from_blob on the CPU and copied over; results are copied back.
  at::Device device = at::kCPU;
  kvcodec::DType cache_dtype = kvcodec::DType::kFloat32;
  int64_t heads = 0, kv_heads = 0, head_dim = 0, group = 0;
  double scale = 1.0;
  int prefill_chunk = 512;
  int threads = 1;

  // OpenMP's thread count is a per-thread setting (omp_set_num_threads changes only the
  // calling thread's ICV), so a call arriving on a different thread than Load's (an RPC
  // worker) would otherwise run with the OpenMP default. Cheap enough to check per call.
  void ApplyThreads() const {
    if (at::get_num_threads() != threads) at::set_num_threads(threads);
    SetBlasThreads(threads);
  }

  at::Tensor embed, final_norm, lm_head;
  std::vector<LayerWeights> layers;
  at::Tensor inv_freq;  // float32 [head_dim / 2], rope scaling applied

  // Tensor options for a new tensor of type `t` on the engine's device.
  at::TensorOptions On(at::ScalarType t) const {
    return at::TensorOptions().dtype(t).device(device);
  }

  absl::Status LoadWeights(const modelio::CheckpointReader& reader);
  void InitRope();

  absl::Status CheckToken(int64_t id) const {
    if (id < 0 || id >= cfg.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", cfg.vocab_size, ")"));
    }
    return absl::OkStatus();
  }

  // RMSNorm the way transformers computes it: normalise in float32, round to the model
  // dtype, then scale (the order matters for bfloat16 bit-compatibility).
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w) const {
    at::Tensor xf = x.to(at::kFloat);
    at::Tensor r = at::rsqrt(xf.pow(2).mean({-1}, /*keepdim=*/true) + cfg.rms_norm_eps);
    return w * (xf * r).to(dtype);
  }

  // Rotates x [heads, n, head_dim] for positions pos [n] (int64). Non-interleaved
  // ("rotate_half") layout, as HF checkpoints store q/k projections.
  at::Tensor Rope(const at::Tensor& x, const at::Tensor& pos) const {
    at::Tensor freqs = at::outer(pos.to(at::kFloat), inv_freq);  // [n, hd/2]
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    at::Tensor cos = emb.cos(), sin = emb.sin();
    at::Tensor xf = x.to(at::kFloat);
    const int64_t half = head_dim / 2;
    at::Tensor rotated = at::cat({-xf.narrow(-1, half, half), xf.narrow(-1, 0, half)}, -1);
    return (xf * cos + rotated * sin).to(dtype);
  }

  // x [n, in] times w [out, in] transposed, plus b. A decode step has n = 1, where torch's
  // linear still calls sgemm, and Debian's OpenBLAS (0.3.21) packs the whole weight matrix for
  // every such call; a matrix-vector product reads it once.
  static at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
    if (x.dim() != 2 || x.size(0) != 1) return at::linear(x, w, b);
    at::Tensor y = at::mv(w, x[0]);
    if (b.defined()) y.add_(b);
    return y.unsqueeze(0);
  }

  // Projects the normalised hidden states x [n, hidden] of layer `lw` into post-RoPE
  // q [heads, n, hd], k [kv_heads, n, hd] and v [kv_heads, n, hd].
  void Qkv(const LayerWeights& lw, const at::Tensor& x, const at::Tensor& pos, at::Tensor* q,
           at::Tensor* k, at::Tensor* v) const {
    const int64_t n = x.size(0);
    *q = Rope(Linear(x, lw.wq, lw.bq).view({n, heads, head_dim}).transpose(0, 1), pos);
    *k = Rope(Linear(x, lw.wk, lw.bk).view({n, kv_heads, head_dim}).transpose(0, 1), pos);
    *v = Linear(x, lw.wv, lw.bv).view({n, kv_heads, head_dim}).transpose(0, 1).contiguous();
  }

  // Grouped-query attention without repeating K/V: q [heads, n, hd] is viewed as
  // [kv_heads, group, n, hd] (query head h uses KV head h / group, as in transformers'
  // repeat_kv) and multiplied against k, v [kv_heads, S, hd]. `allowed` is a bool mask
  // broadcastable to [kv_heads, group, n, S]. Scores and softmax are float32 whatever the
  // dtype. Returns [n, heads * hd]; the probabilities go to *probs if given.
  at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& allowed, at::Tensor* probs) const {
    const int64_t n = q.size(1);
    at::Tensor qg = q.reshape({kv_heads, group, n, head_dim});
    at::Tensor scores =
        at::matmul(qg, k.unsqueeze(1).transpose(-1, -2)).to(at::kFloat).mul_(scale);
    scores.masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    at::Tensor p = at::softmax(scores, -1);
    if (probs != nullptr) *probs = p;
    at::Tensor out = at::matmul(p.to(dtype), v.unsqueeze(1));  // [kvh, g, n, hd]
    return out.reshape({heads, n, head_dim}).transpose(0, 1).reshape({n, heads * head_dim});
  }

  // Residual add of the attention output, then the SwiGLU MLP block.
  at::Tensor FinishLayer(const LayerWeights& lw, const at::Tensor& h,
                         const at::Tensor& attn) const {
    at::Tensor h2 = h + Linear(attn, lw.wo, lw.bo);
    at::Tensor x = RmsNorm(h2, lw.ln_mlp);
    at::Tensor act = at::silu(Linear(x, lw.gate)) * Linear(x, lw.up);
    return h2 + Linear(act, lw.down);
  }

  at::Tensor Logits(const at::Tensor& last_hidden) const {
    return Linear(RmsNorm(last_hidden, final_norm), lm_head);
  }

  // Writes into *out (see Engine::PrefillInto).
  absl::Status Prefill(std::span<const int32_t> tokens, const PrefillOptions& opts,
                       PrefillResult* out) const;
};

absl::Status Engine::Impl::LoadWeights(const modelio::CheckpointReader& reader) {
  // Every weight passes through float32 (TensorToFloat handles F16/BF16/F32/F64 and
  // unaligned mmap data), then is rounded once to the engine dtype; peak extra memory is
  // one tensor.
  auto load = [&](const std::string& name, at::Tensor* out) -> absl::Status {
    absl::StatusOr<modelio::TensorView> view = reader.Get(name);
    if (!view.ok()) return view.status();
    absl::StatusOr<std::vector<float>> values = modelio::TensorToFloat(*view);
    if (!values.ok()) return values.status();
    *out = at::from_blob(values->data(), at::IntArrayRef(view->shape), at::kFloat)
               .to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
    return absl::OkStatus();
  };
  auto load_optional = [&](const std::string& name, at::Tensor* out) -> absl::Status {
    if (!reader.Has(name)) return absl::OkStatus();
    return load(name, out);
  };
  ENGINE_RETURN_IF_ERROR(load("model.embed_tokens.weight", &embed));
  ENGINE_RETURN_IF_ERROR(load("model.norm.weight", &final_norm));
  if (cfg.tie_word_embeddings) {
    lm_head = embed;
  } else {
    ENGINE_RETURN_IF_ERROR(load("lm_head.weight", &lm_head));
  }
  layers.resize(cfg.num_hidden_layers);
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    LayerWeights& lw = layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    ENGINE_RETURN_IF_ERROR(load(p + "self_attn.q_proj.weight", &lw.wq));
    ENGINE_RETURN_IF_ERROR(load(p + "self_attn.k_proj.weight", &lw.wk));
    ENGINE_RETURN_IF_ERROR(load(p + "self_attn.v_proj.weight", &lw.wv));
    ENGINE_RETURN_IF_ERROR(load(p + "self_attn.o_proj.weight", &lw.wo));
    // ValidateCheckpoint already checked that exactly the biases the config implies exist
    // (Qwen2: q/k/v; Llama attention_bias: q/k/v/o).
    ENGINE_RETURN_IF_ERROR(load_optional(p + "self_attn.q_proj.bias", &lw.bq));
    ENGINE_RETURN_IF_ERROR(load_optional(p + "self_attn.k_proj.bias", &lw.bk));
    ENGINE_RETURN_IF_ERROR(load_optional(p + "self_attn.v_proj.bias", &lw.bv));
    ENGINE_RETURN_IF_ERROR(load_optional(p + "self_attn.o_proj.bias", &lw.bo));
    ENGINE_RETURN_IF_ERROR(load(p + "mlp.gate_proj.weight", &lw.gate));
    ENGINE_RETURN_IF_ERROR(load(p + "mlp.up_proj.weight", &lw.up));
    ENGINE_RETURN_IF_ERROR(load(p + "mlp.down_proj.weight", &lw.down));
    ENGINE_RETURN_IF_ERROR(load(p + "input_layernorm.weight", &lw.ln_attn));
    ENGINE_RETURN_IF_ERROR(load(p + "post_attention_layernorm.weight", &lw.ln_mlp));
    lw.sliding_window = modelio::SlidingWindowForLayer(cfg, i);
  }
  return absl::OkStatus();
}

void Engine::Impl::InitRope() {
  // inv_freq[i] = theta^(-2i/d), computed in double and stored as float32 like transformers.
  const int64_t half = head_dim / 2;
  std::vector<float> f(half);
  const RopeScaling& rs = cfg.rope_scaling;
  for (int64_t i = 0; i < half; ++i) {
    double inv = 1.0 / std::pow(cfg.rope_theta, static_cast<double>(2 * i) / head_dim);
    if (rs.type == RopeScaling::Type::kLinear) {
      // Linear scaling divides positions by the factor; dividing the frequencies is the same.
      inv /= rs.factor;
    } else if (rs.type == RopeScaling::Type::kLlama3) {
      // Llama 3.1: wavelengths longer than original_max / low_freq_factor are slowed by
      // `factor`, shorter than original_max / high_freq_factor are kept, and the band in
      // between interpolates smoothly between the two.
      const double old_len = static_cast<double>(rs.original_max_position_embeddings);
      const double wavelen = 2.0 * std::numbers::pi / inv;
      const double low_wavelen = old_len / rs.low_freq_factor;
      const double high_wavelen = old_len / rs.high_freq_factor;
      if (wavelen > low_wavelen) {
        inv /= rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        inv = (1.0 - smooth) * inv / rs.factor + smooth * inv;
      }
    }
    f[i] = static_cast<float>(inv);
  }
  inv_freq = at::from_blob(f.data(), {half}, at::kFloat)
                 .to(device, /*non_blocking=*/false, /*copy=*/true);
}

absl::Status Engine::Impl::Prefill(std::span<const int32_t> tokens, const PrefillOptions& opts,
                                   PrefillResult* out) const {
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T == 0) return absl::InvalidArgumentError("empty prompt");
  if (T > cfg.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", T,
                                                   " tokens is longer than max_position_embeddings (",
                                                   cfg.max_position_embeddings, ")"));
  }
  for (int32_t id : tokens) ENGINE_RETURN_IF_ERROR(CheckToken(id));
  if (opts.prefill_chunk_override < 0) {
    return absl::InvalidArgumentError("prefill_chunk_override must be >= 0");
  }
  if (opts.snapkv_window < 0) {
    return absl::InvalidArgumentError("snapkv_window must be >= 0");
  }
  const bool want_question = opts.question_begin != -1 || opts.question_end != -1;
  if (want_question && !(opts.question_begin >= 0 && opts.question_begin < opts.question_end &&
                         opts.question_end <= T)) {
    return absl::InvalidArgumentError(absl::StrCat("question range [", opts.question_begin, ", ",
                                                   opts.question_end, ") is not a non-empty range within the ",
                                                   T, "-token prompt"));
  }
  const int64_t L = cfg.num_hidden_layers;
  // Query ranges whose attention rows are accumulated into scores: {begin, end, tensor}.
  struct ScoreRange {
    int64_t begin, end;
    at::Tensor acc;  // float32 [L, kv_heads, T]
  };
  std::vector<ScoreRange> ranges;
  int window_index = -1, question_index = -1;
  if (opts.snapkv_window > 0) {
    window_index = static_cast<int>(ranges.size());
    ranges.push_back({T - std::min<int64_t>(opts.snapkv_window, T), T,
                      at::zeros({L, kv_heads, T}, On(at::kFloat))});
  }
  if (want_question) {
    question_index = static_cast<int>(ranges.size());
    ranges.push_back(
        {opts.question_begin, opts.question_end, at::zeros({L, kv_heads, T}, On(at::kFloat))});
  }
  int accumulated_index = -1;
  if (opts.accumulated_scores) {
    accumulated_index = static_cast<int>(ranges.size());
    ranges.push_back({0, T, at::zeros({L, kv_heads, T}, On(at::kFloat))});
  }

  std::vector<int64_t> ids64(tokens.begin(), tokens.end());
  at::Tensor ids = at::from_blob(ids64.data(), {T}, at::kLong)
                       .to(device, /*non_blocking=*/false, /*copy=*/true);
  std::vector<at::Tensor> K(L), V(L);
  for (int64_t l = 0; l < L; ++l) {
    K[l] = at::empty({kv_heads, T, head_dim}, On(dtype));
    V[l] = at::empty({kv_heads, T, head_dim}, On(dtype));
  }
  at::Tensor debug_q;
  if (opts.debug_return_queries) debug_q = at::empty({L, heads, T, head_dim}, On(at::kFloat));

  const int64_t chunk = opts.prefill_chunk_override > 0 ? opts.prefill_chunk_override : prefill_chunk;
  // The caller's: on_layer's spans point into it, and it outlives this call even when it fails.
  PrefillResult& result = *out;
  result = PrefillResult{};
  result.keys.resize(L);
  result.values.resize(L);
  at::Tensor last_hidden;
  for (int64_t p0 = 0; p0 < T; p0 += chunk) {
    const int64_t n = std::min(chunk, T - p0);
    const int64_t S = p0 + n;  // keys visible to this chunk: every earlier token and itself
    at::Tensor pos = at::arange(p0, S, On(at::kLong));
    at::Tensor kpos = at::arange(0, S, On(at::kLong));
    at::Tensor dist = pos.unsqueeze(1) - kpos.unsqueeze(0);  // [n, S] query - key position
    at::Tensor causal = dist.ge(0);
    at::Tensor h = embed.index_select(0, ids.narrow(0, p0, n));
    for (int64_t l = 0; l < L; ++l) {
      if (opts.interrupt) ENGINE_RETURN_IF_ERROR(opts.interrupt());
      const LayerWeights& lw = layers[l];
      at::Tensor q, k, v;
      Qkv(lw, RmsNorm(h, lw.ln_attn), pos, &q, &k, &v);
      K[l].narrow(1, p0, n).copy_(k);
      V[l].narrow(1, p0, n).copy_(v);
      if (debug_q.defined()) debug_q[l].narrow(1, p0, n).copy_(q);
      // Mistral-style window: a query sees keys with query_pos - key_pos < window.
      at::Tensor allowed =
          lw.sliding_window ? causal.logical_and(dist.lt(*lw.sliding_window)) : causal;
      bool need_probs = false;
      for (const ScoreRange& r : ranges) need_probs |= r.begin < S && r.end > p0;
      at::Tensor probs;
      at::Tensor attn = Attend(q, K[l].narrow(1, 0, S), V[l].narrow(1, 0, S), allowed,
                               need_probs ? &probs : nullptr);
      // A chunk's rows are the complete causal attention of its queries (keys after the
      // chunk are masked anyway), so the score rows can be read off here: per head only
      // [rows in range, S] is ever held, never [T, T].
      for (ScoreRange& r : ranges) {
        const int64_t a = std::max(r.begin, p0), b = std::min(r.end, S);
        if (a >= b) continue;
        at::Tensor rows = probs.narrow(2, a - p0, b - a);  // [kvh, g, rows, S]
        r.acc[l].narrow(1, 0, S).add_(rows.sum({1, 2}));
      }
      if (p0 + n == T) {
        // Layer l is final: export it now (and drop the device copy) so that on_layer can ship
        // it while the next layers run.
        result.keys[l] = ToBytes(K[l]);
        result.values[l] = ToBytes(V[l]);
        K[l] = at::Tensor();
        V[l] = at::Tensor();
        if (opts.on_layer) {
          PrefillLayer done;
          done.layer = static_cast<int>(l);
          done.keys = result.keys[l];
          done.values = result.values[l];
          if (window_index >= 0) done.window_scores = ToFloatVector(ranges[window_index].acc[l]);
          if (question_index >= 0) done.question_scores = ToFloatVector(ranges[question_index].acc[l]);
          if (accumulated_index >= 0) {
            done.accumulated_scores = ToFloatVector(ranges[accumulated_index].acc[l]);
          }
          ENGINE_RETURN_IF_ERROR(opts.on_layer(done));
        }
      }
      h = FinishLayer(lw, h, attn);
    }
    if (p0 + n == T) last_hidden = h.narrow(0, n - 1, 1);
  }

  result.shape.num_layers = static_cast<int>(L);
  result.shape.num_kv_heads = static_cast<int>(kv_heads);
  result.shape.head_dim = static_cast<int>(head_dim);
  result.shape.num_tokens = static_cast<int>(T);
  result.shape.dtype = cache_dtype;
  result.positions.resize(T);
  for (int64_t t = 0; t < T; ++t) result.positions[t] = static_cast<int32_t>(t);
  result.last_logits = ToFloatVector(Logits(last_hidden).squeeze(0));
  auto to_scores = [&](const ScoreRange& r) {
    kvcodec::ImportanceScores s;
    s.num_layers = static_cast<int>(L);
    s.num_kv_heads = static_cast<int>(kv_heads);
    s.num_tokens = static_cast<int>(T);
    s.values = ToFloatVector(r.acc);
    return s;
  };
  if (window_index >= 0) result.window_scores = to_scores(ranges[window_index]);
  if (question_index >= 0) result.question_scores = to_scores(ranges[question_index]);
  if (accumulated_index >= 0) result.accumulated_scores = to_scores(ranges[accumulated_index]);
  if (debug_q.defined()) {
    for (int64_t l = 0; l < L; ++l) result.debug_queries.push_back(ToFloatVector(debug_q[l]));
  }
  return absl::OkStatus();
}

std::vector<kvcodec::LayerView> PrefillResult::layer_views() const {
  std::vector<kvcodec::LayerView> views(keys.size());
  for (size_t l = 0; l < keys.size(); ++l) views[l] = {keys[l].data(), values[l].data()};
  return views;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

const ModelConfig& Engine::config() const { return impl_->cfg; }
kvcodec::DType Engine::cache_dtype() const { return impl_->cache_dtype; }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  return CatchTorch("Engine::Load", [&]() -> absl::StatusOr<std::unique_ptr<Engine>> {
    auto impl = std::make_unique<Impl>();
    if (options.dtype == "float32") {
      impl->dtype = at::kFloat;
      impl->cache_dtype = kvcodec::DType::kFloat32;
    } else if (options.dtype == "bfloat16") {
      impl->dtype = at::kBFloat16;
      impl->cache_dtype = kvcodec::DType::kBFloat16;
    } else {
      // float16 matmuls are not implemented on the CPU in this libtorch.
      return absl::InvalidArgumentError(absl::StrCat("unsupported engine dtype '", options.dtype,
                                                     "' (float32 or bfloat16)"));
    }
    absl::StatusOr<at::Device> device = ParseDevice(options.device);
    if (!device.ok()) return device.status();
    impl->device = *device;
    if (options.prefill_chunk <= 0) {
      return absl::InvalidArgumentError("prefill_chunk must be > 0");
    }
    if (options.threads < 0) return absl::InvalidArgumentError("threads must be >= 0");
    absl::StatusOr<ModelConfig> cfg = modelio::LoadModelConfig(options.model_dir);
    if (!cfg.ok()) return cfg.status();
    impl->cfg = *std::move(cfg);
    absl::StatusOr<std::unique_ptr<modelio::CheckpointReader>> reader =
        modelio::CheckpointReader::Open(options.model_dir);
    if (!reader.ok()) return reader.status();
    ENGINE_RETURN_IF_ERROR(modelio::ValidateCheckpoint(**reader, impl->cfg));

    const int threads = options.threads > 0
                            ? options.threads
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    impl->threads = threads;
    impl->ApplyThreads();
    c10::InferenceMode guard;

    const ModelConfig& c = impl->cfg;
    impl->heads = c.num_attention_heads;
    impl->kv_heads = c.num_key_value_heads;
    impl->head_dim = c.head_dim;
    impl->group = c.num_attention_heads / c.num_key_value_heads;
    impl->scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    impl->prefill_chunk = options.prefill_chunk;
    ENGINE_RETURN_IF_ERROR(impl->LoadWeights(**reader));
    impl->InitRope();
    return std::unique_ptr<Engine>(new Engine(std::move(impl)));
  });
}

absl::StatusOr<PrefillResult> Engine::Prefill(std::span<const int32_t> token_ids,
                                              const PrefillOptions& options) const {
  PrefillResult result;
  ENGINE_RETURN_IF_ERROR(PrefillInto(token_ids, options, &result));
  return result;
}

absl::Status Engine::PrefillInto(std::span<const int32_t> token_ids, const PrefillOptions& options,
                                 PrefillResult* out) const {
  return CatchTorch("Engine::Prefill", [&]() -> absl::Status {
    c10::InferenceMode guard;
    impl_->ApplyThreads();
    return impl_->Prefill(token_ids, options, out);
  });
}

// ---------------------------------------------------------------------------------------------
// DecodeSession
// ---------------------------------------------------------------------------------------------

struct DecodeSession::Impl {
  const Engine::Impl* eng = nullptr;
  // Per layer: K, V [kv_heads, capacity, hd] in the engine dtype, heads padded to the same
  // length; kpos [kv_heads, capacity] the original position of each row; valid [kv_heads,
  // capacity] false on padding; the first used[l] columns are the cache. New tokens are
  // written as a column shared by all heads into spare capacity, which grows by doubling, so a
  // step does not copy the cache (concatenation did: at 4096 tokens that copy cost more than
  // the attention).
  std::vector<at::Tensor> K, V, kpos, valid;
  std::vector<int64_t> used;
  int64_t next_pos = 0;

  // Makes room for one more column in layer l.
  void Reserve(size_t l) {
    const int64_t capacity = K[l].size(1);
    if (used[l] < capacity) return;
    const int64_t grown = std::max<int64_t>(2 * capacity, capacity + 64);
    auto grow = [&](at::Tensor& t) {
      std::vector<int64_t> shape = t.sizes().vec();
      shape[1] = grown;
      at::Tensor bigger = at::zeros(shape, t.options());
      bigger.narrow(1, 0, used[l]).copy_(t.narrow(1, 0, used[l]));
      t = bigger;
    };
    grow(K[l]);
    grow(V[l]);
    grow(kpos[l]);
    grow(valid[l]);
  }

  absl::StatusOr<std::vector<float>> Step(int32_t token) {
    const Engine::Impl& e = *eng;
    ENGINE_RETURN_IF_ERROR(e.CheckToken(token));
    if (next_pos >= e.cfg.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("position ", next_pos,
                                                     " is past max_position_embeddings (",
                                                     e.cfg.max_position_embeddings, ")"));
    }
    at::Tensor pos = at::full({1}, next_pos, e.On(at::kLong));
    at::Tensor ids = at::full({1}, static_cast<int64_t>(token), e.On(at::kLong));
    at::Tensor h = e.embed.index_select(0, ids);
    at::Tensor new_pos = at::full({e.kv_heads, 1}, next_pos, e.On(at::kLong));
    at::Tensor new_valid = at::ones({e.kv_heads, 1}, e.On(at::kBool));
    for (size_t l = 0; l < e.layers.size(); ++l) {
      const LayerWeights& lw = e.layers[l];
      at::Tensor q, k, v;
      e.Qkv(lw, e.RmsNorm(h, lw.ln_attn), pos, &q, &k, &v);
      Reserve(l);
      const int64_t at_col = used[l]++;
      const int64_t S = used[l];
      K[l].narrow(1, at_col, 1).copy_(k);
      V[l].narrow(1, at_col, 1).copy_(v);
      kpos[l].narrow(1, at_col, 1).copy_(new_pos);
      valid[l].narrow(1, at_col, 1).copy_(new_valid);
      at::Tensor allowed = valid[l].narrow(1, 0, S);
      if (lw.sliding_window) {
        allowed = allowed.logical_and((next_pos - kpos[l].narrow(1, 0, S)).lt(*lw.sliding_window));
      }
      at::Tensor attn = e.Attend(q, K[l].narrow(1, 0, S), V[l].narrow(1, 0, S),
                                 allowed.reshape({e.kv_heads, 1, 1, S}), nullptr);
      h = e.FinishLayer(lw, h, attn);
    }
    ++next_pos;
    return ToFloatVector(e.Logits(h).squeeze(0));
  }
};

DecodeSession::DecodeSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DecodeSession::~DecodeSession() = default;

int DecodeSession::position() const { return static_cast<int>(impl_->next_pos); }

absl::StatusOr<std::unique_ptr<DecodeSession>> DecodeSession::Create(
    const Engine& engine, const kvcodec::CacheShape& shape,
    std::span<const kvcodec::DecodedLayer> layers, int prompt_length,
    std::span<const int32_t> positions) {
  return CatchTorch("DecodeSession::Create", [&]() -> absl::StatusOr<std::unique_ptr<DecodeSession>> {
    c10::InferenceMode guard;
    const Engine::Impl& e = *engine.impl_;
    if (shape.num_layers != e.cfg.num_hidden_layers || shape.num_kv_heads != e.kv_heads ||
        shape.head_dim != e.head_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cache shape (layers ", shape.num_layers, ", kv heads ", shape.num_kv_heads,
          ", head_dim ", shape.head_dim, ") does not match the model (", e.cfg.num_hidden_layers,
          ", ", e.kv_heads, ", ", e.head_dim, ")"));
    }
    if (layers.size() != static_cast<size_t>(shape.num_layers)) {
      return absl::InvalidArgumentError(absl::StrCat("cache has ", layers.size(),
                                                     " layers, the model ", shape.num_layers));
    }
    if (prompt_length < 0 || prompt_length > e.cfg.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt length ", prompt_length, " outside [0, max_position_embeddings]"));
    }
    // Without `positions`, kept entries are original positions in [0, prompt_length); with
    // it, they are token indices in [0, shape.num_tokens) and positions[i] is index i's
    // original position.
    const bool indexed = !positions.empty();
    int64_t next_pos = prompt_length;
    int64_t index_limit = prompt_length;
    if (indexed) {
      if (positions.size() != static_cast<size_t>(shape.num_tokens)) {
        return absl::InvalidArgumentError(absl::StrCat("cache has ", shape.num_tokens,
                                                       " tokens but ", positions.size(),
                                                       " positions"));
      }
      for (size_t i = 0; i < positions.size(); ++i) {
        if (positions[i] < 0 || positions[i] >= e.cfg.max_position_embeddings ||
            (i > 0 && positions[i] <= positions[i - 1])) {
          return absl::InvalidArgumentError(absl::StrCat(
              "token positions must be strictly increasing in [0, max_position_embeddings = ",
              e.cfg.max_position_embeddings, "); index ", i, " is ", positions[i]));
        }
      }
      next_pos = std::max<int64_t>(prompt_length, int64_t{positions.back()} + 1);
      index_limit = shape.num_tokens;
    }
    const size_t row_bytes = static_cast<size_t>(shape.head_dim) * kvcodec::DTypeSize(shape.dtype);
    const at::ScalarType src_type = ToTorch(shape.dtype);
    auto impl = std::make_unique<Impl>();
    impl->eng = &e;
    impl->next_pos = next_pos;
    for (size_t l = 0; l < layers.size(); ++l) {
      const kvcodec::DecodedLayer& dl = layers[l];
      if (dl.layer != static_cast<int>(l) || dl.kept.size() != static_cast<size_t>(e.kv_heads) ||
          dl.keys.size() != dl.kept.size() || dl.values.size() != dl.kept.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cache layer ", l, " (numbered ", dl.layer,
                         ") does not hold one kept/keys/values entry per KV head (",
                         e.kv_heads, ")"));
      }
      size_t max_kept = 0;
      for (int64_t h = 0; h < e.kv_heads; ++h) {
        const std::vector<int32_t>& kept = dl.kept[h];
        for (size_t i = 0; i < kept.size(); ++i) {
          if (kept[i] < 0 || kept[i] >= index_limit || (i > 0 && kept[i] <= kept[i - 1])) {
            return absl::InvalidArgumentError(absl::StrCat(
                "layer ", l, " head ", h, ": kept ", indexed ? "token indices" : "positions",
                " must be strictly increasing in [0, ", index_limit, ")"));
          }
        }
        if (dl.keys[h].size() != kept.size() * row_bytes ||
            dl.values[h].size() != kept.size() * row_bytes) {
          return absl::InvalidArgumentError(absl::StrCat("layer ", l, " head ", h, ": ",
                                                         kept.size(), " kept rows need ",
                                                         kept.size() * row_bytes, " bytes of K and V"));
        }
        max_kept = std::max(max_kept, kept.size());
      }
      const int64_t S = static_cast<int64_t>(max_kept);
      at::Tensor K = at::zeros({e.kv_heads, S, e.head_dim}, e.On(e.dtype));
      at::Tensor V = at::zeros({e.kv_heads, S, e.head_dim}, e.On(e.dtype));
      at::Tensor kpos = at::zeros({e.kv_heads, S}, e.On(at::kLong));
      at::Tensor valid = at::zeros({e.kv_heads, S}, e.On(at::kBool));
      for (int64_t h = 0; h < e.kv_heads; ++h) {
        const int64_t n = static_cast<int64_t>(dl.kept[h].size());
        if (n == 0) continue;
        // from_blob does not copy; the .copy_ converts into the engine dtype.
        K[h].narrow(0, 0, n).copy_(at::from_blob(const_cast<uint8_t*>(dl.keys[h].data()),
                                                 {n, e.head_dim}, src_type));
        V[h].narrow(0, 0, n).copy_(at::from_blob(const_cast<uint8_t*>(dl.values[h].data()),
                                                 {n, e.head_dim}, src_type));
        std::vector<int64_t> p(dl.kept[h].begin(), dl.kept[h].end());
        if (indexed) {
          for (int64_t& x : p) x = positions[static_cast<size_t>(x)];
        }
        kpos[h].narrow(0, 0, n).copy_(at::from_blob(p.data(), {n}, at::kLong));
        valid[h].narrow(0, 0, n).fill_(true);
      }
      impl->used.push_back(S);
      impl->K.push_back(K);
      impl->V.push_back(V);
      impl->kpos.push_back(kpos);
      impl->valid.push_back(valid);
    }
    return std::unique_ptr<DecodeSession>(new DecodeSession(std::move(impl)));
  });
}

absl::StatusOr<std::unique_ptr<DecodeSession>> DecodeSession::FromPrefill(
    const Engine& engine, const PrefillResult& prefill) {
  const kvcodec::CacheShape& s = prefill.shape;
  const size_t head_bytes =
      static_cast<size_t>(s.num_tokens) * s.head_dim * kvcodec::DTypeSize(s.dtype);
  std::vector<kvcodec::DecodedLayer> layers(s.num_layers);
  std::vector<int32_t> all(s.num_tokens);
  for (int t = 0; t < s.num_tokens; ++t) all[t] = t;
  for (int l = 0; l < s.num_layers; ++l) {
    if (prefill.keys[l].size() != head_bytes * s.num_kv_heads ||
        prefill.values[l].size() != head_bytes * s.num_kv_heads) {
      return absl::InvalidArgumentError("prefill result buffers do not match its shape");
    }
    layers[l].layer = l;
    for (int h = 0; h < s.num_kv_heads; ++h) {
      layers[l].kept.push_back(all);
      const uint8_t* k = prefill.keys[l].data() + h * head_bytes;
      const uint8_t* v = prefill.values[l].data() + h * head_bytes;
      layers[l].keys.emplace_back(k, k + head_bytes);
      layers[l].values.emplace_back(v, v + head_bytes);
    }
  }
  return Create(engine, s, layers, s.num_tokens, prefill.positions);
}

absl::StatusOr<std::vector<float>> DecodeSession::Step(int32_t token) {
  return CatchTorch("DecodeSession::Step", [&]() -> absl::StatusOr<std::vector<float>> {
    c10::InferenceMode guard;
    impl_->eng->ApplyThreads();
    return impl_->Step(token);
  });
}

absl::StatusOr<std::vector<int32_t>> GenerateGreedy(DecodeSession& session, int32_t first_token,
                                                    int max_new_tokens,
                                                    std::span<const int32_t> eos_ids) {
  std::vector<int32_t> out;
  int32_t token = first_token;
  for (int i = 0; i < max_new_tokens; ++i) {
    absl::StatusOr<std::vector<float>> logits = session.Step(token);
    if (!logits.ok()) return logits.status();
    token = static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) -
                                 logits->begin());
    out.push_back(token);
    if (std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end()) break;
  }
  return out;
}

}  // namespace kvwire::engine
