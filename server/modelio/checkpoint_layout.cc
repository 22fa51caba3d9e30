#include "server/modelio/checkpoint_layout.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/modelio/status_macros.h"

namespace kvwire::modelio {

using internal::AV;

TensorShapeList ExpectedTensorShapes(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;
  // Qwen2Attention: bias on q/k/v only. LlamaAttention: bias=config.attention_bias on all
  // four projections. Mistral: never.
  const bool qkv_bias = c.architecture == Architecture::kQwen2 ||
                        (c.architecture == Architecture::kLlama && c.attention_bias);
  const bool o_bias = c.architecture == Architecture::kLlama && c.attention_bias;

  TensorShapeList out;
  out.reserve(static_cast<size_t>(c.num_hidden_layers) * 13 + 3);
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, hidden}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    out.push_back({p + "self_attn.q_proj.weight", {q_dim, hidden}});
    if (qkv_bias) out.push_back({p + "self_attn.q_proj.bias", {q_dim}});
    out.push_back({p + "self_attn.k_proj.weight", {kv_dim, hidden}});
    if (qkv_bias) out.push_back({p + "self_attn.k_proj.bias", {kv_dim}});
    out.push_back({p + "self_attn.v_proj.weight", {kv_dim, hidden}});
    if (qkv_bias) out.push_back({p + "self_attn.v_proj.bias", {kv_dim}});
    out.push_back({p + "self_attn.o_proj.weight", {hidden, q_dim}});
    if (o_bias) out.push_back({p + "self_attn.o_proj.bias", {hidden}});
    out.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
    out.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
    out.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
    out.push_back({p + "input_layernorm.weight", {hidden}});
    out.push_back({p + "post_attention_layernorm.weight", {hidden}});
  }
  out.push_back({"model.norm.weight", {hidden}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, hidden}});
  return out;
}

absl::Status ValidateCheckpoint(const CheckpointReader& reader, const ModelConfig& config) {
  MODELIO_RETURN_IF_ERROR(ValidateModelConfig(config));
  const std::string where = absl::StrCat("checkpoint ", reader.dir(), ": ");
  std::set<std::string, std::less<>> expected_names;
  for (const auto& [name, shape] : ExpectedTensorShapes(config)) {
    expected_names.insert(name);
    if (!reader.Has(name)) {
      return absl::InvalidArgumentError(absl::StrCat(where, "missing tensor '", name,
                                                     "' (config expects shape ",
                                                     ShapeToString(shape), ")"));
    }
    MODELIO_ASSIGN_OR_RETURN(TensorView view, reader.Get(name));
    if (view.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(where, "tensor '", name, "' has shape ",
                                                     ShapeToString(view.shape),
                                                     " but the config expects ",
                                                     ShapeToString(shape)));
    }
    if (view.dtype != Dtype::kF16 && view.dtype != Dtype::kBF16 && view.dtype != Dtype::kF32) {
      return absl::InvalidArgumentError(absl::StrCat(where, "tensor '", name, "' has dtype ",
                                                     AV(DtypeName(view.dtype)),
                                                     "; weights must be F16, BF16 or F32"));
    }
  }
  for (const std::string& name : reader.Names()) {
    if (expected_names.contains(name)) continue;
    if (absl::EndsWith(name, ".rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        where, "unexpected tensor '", name, "' for a ", AV(ArchitectureClassName(config.architecture)),
        " with ", config.num_hidden_layers, " layers (config and weights disagree?)"));
  }
  return absl::OkStatus();
}

}  // namespace kvwire::modelio
