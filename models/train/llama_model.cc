#include "models/train/llama_model.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/modelio/safetensors.h"
#include "server/modelio/safetensors_writer.h"

namespace kvwire::train {
namespace {

std::string Layer(int64_t i, const char* rest) { return absl::StrCat("model.layers.", i, ".", rest); }

}  // namespace

LlamaModel::LlamaModel(const modelio::ModelConfig& config, uint64_t seed) : config_(config) {
  torch::manual_seed(seed);
  const int64_t d = config.hidden_size, hd = config.head_dim;
  const int64_t nq = config.num_attention_heads * hd, nkv = config.num_key_value_heads * hd;
  const double out_std = 0.02 / std::sqrt(2.0 * config.num_hidden_layers);
  auto add = [&](std::string name, std::vector<int64_t> shape, double std) {
    torch::Tensor t = std > 0 ? torch::randn(shape) * std : torch::ones(shape);
    params_.emplace_back(std::move(name), t.set_requires_grad(true));
  };
  add("model.embed_tokens.weight", {config.vocab_size, d}, 0.02);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    add(Layer(i, "input_layernorm.weight"), {d}, 0);
    add(Layer(i, "self_attn.q_proj.weight"), {nq, d}, 0.02);
    add(Layer(i, "self_attn.k_proj.weight"), {nkv, d}, 0.02);
    add(Layer(i, "self_attn.v_proj.weight"), {nkv, d}, 0.02);
    add(Layer(i, "self_attn.o_proj.weight"), {d, nq}, out_std);
    add(Layer(i, "post_attention_layernorm.weight"), {d}, 0);
    add(Layer(i, "mlp.gate_proj.weight"), {config.intermediate_size, d}, 0.02);
    add(Layer(i, "mlp.up_proj.weight"), {config.intermediate_size, d}, 0.02);
    add(Layer(i, "mlp.down_proj.weight"), {d, config.intermediate_size}, out_std);
  }
  add("model.norm.weight", {d}, 0);
  add("lm_head.weight", {config.vocab_size, d}, 0.02);

  // inv_freq as the engine computes it: in double, stored as float32.
  std::vector<float> f(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) {
    f[i] = static_cast<float>(1.0 / std::pow(config.rope_theta, static_cast<double>(2 * i) / hd));
  }
  inv_freq_ = torch::tensor(f);
}

int64_t LlamaModel::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  return n;
}

torch::Tensor& LlamaModel::P(const std::string& name) {
  for (auto& [n, t] : params_) {
    if (n == name) return t;
  }
  throw std::out_of_range(name);
}
const torch::Tensor& LlamaModel::P(const std::string& name) const {
  return const_cast<LlamaModel*>(this)->P(name);
}

torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& w) const {
  return w * (x * torch::rsqrt(x.pow(2).mean({-1}, true) + config_.rms_norm_eps));
}

torch::Tensor LlamaModel::Rope(const torch::Tensor& x) const {
  const int64_t T = x.size(2), half = config_.head_dim / 2;
  torch::Tensor pos = torch::arange(T, torch::kFloat);
  torch::Tensor freqs = torch::outer(pos, inv_freq_);
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * emb.cos() + rotated * emb.sin();
}

torch::Tensor LlamaModel::Hidden(const torch::Tensor& tokens) const {
  const int64_t B = tokens.size(0), T = tokens.size(1), hd = config_.head_dim;
  const int64_t H = config_.num_attention_heads, KV = config_.num_key_value_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  torch::Tensor causal = torch::ones({T, T}, torch::kBool).triu(1);
  torch::Tensor h = torch::embedding(P("model.embed_tokens.weight"), tokens);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    torch::Tensor x = RmsNorm(h, P(Layer(i, "input_layernorm.weight")));
    torch::Tensor q = torch::linear(x, P(Layer(i, "self_attn.q_proj.weight")))
                          .view({B, T, H, hd}).transpose(1, 2);
    torch::Tensor k = torch::linear(x, P(Layer(i, "self_attn.k_proj.weight")))
                          .view({B, T, KV, hd}).transpose(1, 2);
    torch::Tensor v = torch::linear(x, P(Layer(i, "self_attn.v_proj.weight")))
                          .view({B, T, KV, hd}).transpose(1, 2);
    q = Rope(q);
    k = Rope(k);
    // Query head j reads KV head j / (H / KV), as transformers' repeat_kv.
    if (KV != H) {
      k = k.repeat_interleave(H / KV, 1);
      v = v.repeat_interleave(H / KV, 1);
    }
    torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) * scale;
    scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
    torch::Tensor attn = torch::matmul(torch::softmax(scores, -1), v);
    attn = attn.transpose(1, 2).reshape({B, T, H * hd});
    h = h + torch::linear(attn, P(Layer(i, "self_attn.o_proj.weight")));
    x = RmsNorm(h, P(Layer(i, "post_attention_layernorm.weight")));
    torch::Tensor act = torch::silu(torch::linear(x, P(Layer(i, "mlp.gate_proj.weight")))) *
                        torch::linear(x, P(Layer(i, "mlp.up_proj.weight")));
    h = h + torch::linear(act, P(Layer(i, "mlp.down_proj.weight")));
  }
  return RmsNorm(h, P("model.norm.weight"));
}

torch::Tensor LlamaModel::Logits(const torch::Tensor& hidden) const {
  return torch::linear(hidden, P("lm_head.weight"));
}

absl::Status LlamaModel::SaveHf(const std::string& dir) const {
  std::vector<torch::Tensor> host;  // keeps the contiguous copies alive during the write
  std::vector<modelio::TensorToWrite> tensors;
  for (const auto& [name, t] : params_) {
    host.push_back(t.detach().to(torch::kFloat).contiguous());
    const torch::Tensor& c = host.back();
    tensors.push_back({name, modelio::Dtype::kF32, c.sizes().vec(),
                       {static_cast<const uint8_t*>(c.data_ptr()), c.numel() * sizeof(float)}});
  }
  absl::Status s = modelio::WriteShardedCheckpoint(dir, tensors, /*max_shard_bytes=*/0);
  if (!s.ok()) return s;
  modelio::ModelConfig cfg = config_;
  cfg.torch_dtype = "float32";
  FILE* f = std::fopen((dir + "/config.json").c_str(), "wb");
  if (f == nullptr) return absl::UnavailableError(absl::StrCat("cannot write ", dir, "/config.json"));
  const std::string json = modelio::ToJson(cfg);
  const bool ok = std::fwrite(json.data(), 1, json.size(), f) == json.size();
  if (std::fclose(f) != 0 || !ok) return absl::UnavailableError("writing config.json failed");
  return absl::OkStatus();
}

absl::Status LlamaModel::LoadHf(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<modelio::CheckpointReader>> reader =
      modelio::CheckpointReader::Open(dir);
  if (!reader.ok()) return reader.status();
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : params_) {
    absl::StatusOr<modelio::TensorView> view = (*reader)->Get(name);
    if (!view.ok()) return view.status();
    if (view->shape != t.sizes().vec()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": shape differs from the config"));
    }
    absl::StatusOr<std::vector<float>> values = modelio::TensorToFloat(*view);
    if (!values.ok()) return values.status();
    std::memcpy(t.data_ptr<float>(), values->data(), values->size() * sizeof(float));
  }
  return absl::OkStatus();
}

}  // namespace kvwire::train
