// A trainable Llama decoder in libtorch autograd, numerically the same model that
// server/engine runs: RMSNorm (float32 statistics), rotate-half RoPE, grouped-query attention,
// SwiGLU MLP, untied LM head. Parameters carry their Hugging Face names, so a checkpoint is a
// plain name -> tensor map written with modelio's safetensors writer.
//
// Internal to the trainer: this header includes torch (slow to compile), so only trainer.cc
// and llama_model.cc include it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "server/modelio/hf_config.h"

namespace kvwire::train {

class LlamaModel {
 public:
  // Fresh weights: normal(0, 0.02), output projections of each block scaled by
  // 1/sqrt(2 * layers) so the residual stream does not grow with depth, norms at 1.
  // Deterministic for a seed (torch's CPU generator).
  LlamaModel(const modelio::ModelConfig& config, uint64_t seed);

  const modelio::ModelConfig& config() const { return config_; }
  // Named parameters in a fixed order (embedding, layers in order, final norm, LM head).
  const std::vector<std::pair<std::string, torch::Tensor>>& parameters() const { return params_; }
  int64_t parameter_count() const;

  // tokens: int64 [batch, T]. Returns float32 logits [batch, T, vocab]; position t predicts
  // token t + 1. Causal attention over each row; positions are 0..T-1 in every row.
  torch::Tensor Forward(const torch::Tensor& tokens) const { return Logits(Hidden(tokens)); }
  // The final-normed hidden states [batch, T, hidden], and the LM head applied to any
  // [..., hidden] selection of them: training needs logits only where there is a loss.
  torch::Tensor Hidden(const torch::Tensor& tokens) const;
  torch::Tensor Logits(const torch::Tensor& hidden) const;

  // Writes config.json and model.safetensors (float32) into dir.
  absl::Status SaveHf(const std::string& dir) const;
  // Overwrites the parameters with those of a checkpoint written by SaveHf (same config).
  absl::Status LoadHf(const std::string& dir);

 private:
  torch::Tensor& P(const std::string& name);
  const torch::Tensor& P(const std::string& name) const;
  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w) const;
  torch::Tensor Rope(const torch::Tensor& x) const;  // x [B, heads, T, hd]

  modelio::ModelConfig config_;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  torch::Tensor inv_freq_;  // float32 [head_dim / 2]
};

}  // namespace kvwire::train
