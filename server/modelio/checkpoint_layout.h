// The tensor names and shapes a Hugging Face checkpoint must contain for a config, and the
// check that a checkpoint on disk agrees with its config.json.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "server/modelio/hf_config.h"
#include "server/modelio/safetensors.h"

namespace kvwire::modelio {

using TensorShapeList = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// Every weight of the model, with the exact transformers state_dict names, in
// state_dict order: model.embed_tokens.weight [vocab, hidden]; per layer i
// model.layers.{i}.self_attn.{q,k,v}_proj.weight (+ .bias when the architecture has
// them: Qwen2 q/k/v, Llama with attention_bias q/k/v/o), o_proj.weight,
// mlp.{gate,up,down}_proj.weight, input_layernorm.weight, post_attention_layernorm.weight;
// model.norm.weight; lm_head.weight [vocab, hidden] unless tie_word_embeddings.
// `config` must pass ValidateModelConfig.
TensorShapeList ExpectedTensorShapes(const ModelConfig& config);

// Checks that `reader` holds exactly the weights ExpectedTensorShapes lists, each with
// that shape and a floating-point dtype (F16, BF16 or F32). InvalidArgument naming the
// tensor for: a missing tensor, a shape mismatch (message gives expected and actual), a
// non-float dtype, or an unexpected extra tensor (e.g. model.layers.{N} beyond
// num_hidden_layers - usually a config for a different model). Tolerated extras, as in
// transformers: *.rotary_emb.inv_freq buffers that old exports saved, and lm_head.weight
// when embeddings are tied.
absl::Status ValidateCheckpoint(const CheckpointReader& reader, const ModelConfig& config);

}  // namespace kvwire::modelio
