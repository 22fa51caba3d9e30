// Hugging Face `config.json` for the decoder families kvwire serves: Llama (incl. Llama-3
// rope scaling), Qwen2/Qwen2.5 and Mistral.
//
// Parsing is strict where a wrong value would silently build a different model (missing
// dimensions, non-integer sizes, unknown rope scaling) and follows the transformers
// defaults for the optional fields, so a config that transformers loads as architecture X
// means the same thing here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::modelio {

enum class Architecture { kLlama, kQwen2, kMistral };

// "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM".
std::string_view ArchitectureClassName(Architecture arch);
// The config's `model_type`: "llama", "qwen2", "mistral".
std::string_view ModelTypeName(Architecture arch);

// `rope_scaling` (transformers 4), or the scaling part of `rope_parameters` (transformers 5,
// which also moves rope_theta there). kNone also covers a null/absent entry and rope_type
// "default".
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;  // kLinear and kLlama3
  // kLlama3 only (Llama-3.1 uses 1, 4 and 8192).
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;

  bool operator==(const RopeScaling&) const = default;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // parsed default: num_attention_heads (plain MHA)
  // Per-head dimension. Parsed default: hidden_size / num_attention_heads. Some models
  // (Mistral-Nemo, Llama-3.2 variants) set it explicitly to a value that does not
  // multiply back to hidden_size; head_dim_explicit records that so ToJson reproduces it.
  int64_t head_dim = 0;
  bool head_dim_explicit = false;

  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;

  // Whether the attention projections carry biases. Qwen2 always has q/k/v biases (the
  // config has no switch; parsing sets this true and validation requires it). Llama reads
  // the `attention_bias` key, which in transformers adds biases to q/k/v AND o_proj.
  // Mistral never has biases (must be false).
  bool attention_bias = false;

  // Sliding-window attention, as the raw config values; use SlidingWindowForLayer() for
  // the effective window. Mistral: applies to every layer when set (v0.1: 4096; later
  // versions write null). Qwen2: applies only if use_sliding_window, and only to layers
  // with index >= max_window_layers. Llama: never present.
  std::optional<int64_t> sliding_window;
  bool use_sliding_window = false;  // Qwen2 only
  int64_t max_window_layers = 0;    // Qwen2 only

  int64_t max_position_embeddings = 0;
  // "bfloat16", "float16", "float32" or empty when the config does not say.
  std::string torch_dtype;
  // Token ids; configs write either an int or a list (Llama-3 instruct lists several eos).
  std::vector<int64_t> bos_token_ids;
  std::vector<int64_t> eos_token_ids;

  bool operator==(const ModelConfig&) const = default;
};

// Parses config.json text. Errors (all InvalidArgument): malformed JSON, unknown or
// unsupported architecture (the message names it), a required field missing
// (vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads),
// a field of the wrong JSON type, and any value ValidateModelConfig rejects.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json);

// Reads and parses `<dir>/config.json`. NotFound when the file is missing; parse errors
// are prefixed with the path.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// Checks internal consistency: positive dimensions, num_attention_heads divisible by
// num_key_value_heads, head_dim == hidden_size / num_attention_heads exactly unless
// head_dim_explicit, sane rope/eps values, architecture-specific bias and
// sliding-window rules.
absl::Status ValidateModelConfig(const ModelConfig& config);

// Serialises to a config.json that transformers accepts for the architecture: the
// `architectures`/`model_type` pair, every field above under its transformers name, plus
// the constant fields these families always carry (hidden_act "silu", initializer_range,
// attention_dropout, use_cache). Keys are sorted as transformers writes them. Round-trips:
// ParseModelConfig(ToJson(c)) == c for any c that passes ValidateModelConfig.
std::string ToJson(const ModelConfig& config);

// The attention window for a layer, or nullopt for full causal attention. Encodes the
// per-architecture rules described at ModelConfig::sliding_window.
std::optional<int64_t> SlidingWindowForLayer(const ModelConfig& config, int64_t layer);

}  // namespace kvwire::modelio
