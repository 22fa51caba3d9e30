#include "server/modelio/hf_config.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/json_nesting.h"
#include "server/modelio/file_util.h"
#include "server/modelio/status_macros.h"

namespace kvwire::modelio {
namespace {

using nlohmann::json;
using internal::AV;

// Upper bound on any single dimension. Real models stay far below it (the largest vocab
// in use is ~256k); the cap guarantees that products of two dimensions and the byte sizes
// derived from them cannot overflow int64 downstream, which matters because the parser is
// fuzzed and configs come from disk.
constexpr int64_t kMaxDim = int64_t{1} << 24;

// config.json files are a few KB; anything this large is not a config.
constexpr std::uintmax_t kMaxConfigBytes = 16u << 20;

constexpr Architecture kAllArchitectures[] = {Architecture::kLlama, Architecture::kQwen2,
                                              Architecture::kMistral};

std::string Describe(const json& value) {
  // Short rendering of an offending value for error messages.
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

absl::Status TypeError(std::string_view key, std::string_view expected, const json& value) {
  return absl::InvalidArgumentError(absl::StrCat("config field '", AV(key), "' must be ", AV(expected),
                                                 ", got ", value.type_name(), " ",
                                                 Describe(value)));
}

// The accessors below treat an absent key and an explicit null alike (transformers
// configs write null for "not set") and check the JSON type before converting, so
// nlohmann never throws.

absl::StatusOr<std::optional<int64_t>> GetInt(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TypeError(key, "an integer in int64 range", *it);
    }
    return static_cast<int64_t>(v);
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  // A float such as 4096.0 is rejected on purpose: transformers would carry it as a
  // Python float and fail later in range()/reshape, so it is a broken config.
  return TypeError(key, "an integer", *it);
}

absl::StatusOr<std::optional<double>> GetDouble(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return TypeError(key, "a number", *it);
  return it->get<double>();
}

absl::StatusOr<std::optional<bool>> GetBool(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return TypeError(key, "a boolean", *it);
  return it->get<bool>();
}

absl::StatusOr<std::optional<std::string>> GetString(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return TypeError(key, "a string", *it);
  return it->get<std::string>();
}

absl::StatusOr<int64_t> RequireInt(const json& obj, std::string_view key) {
  MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> v, GetInt(obj, key));
  if (!v.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("config is missing required field '", AV(key), "'"));
  }
  return *v;
}

absl::StatusOr<double> RequireDouble(const json& obj, std::string_view key,
                                     std::string_view context) {
  MODELIO_ASSIGN_OR_RETURN(std::optional<double> v, GetDouble(obj, key));
  if (!v.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(context), " is missing required field '", AV(key), "'"));
  }
  return *v;
}

// bos/eos ids: an int, a list of ints, or null.
absl::StatusOr<std::vector<int64_t>> GetTokenIds(const json& obj, std::string_view key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::vector<int64_t>{};
  if (it->is_number_integer()) {
    MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> v, GetInt(obj, key));
    return std::vector<int64_t>{*v};
  }
  if (!it->is_array()) return TypeError(key, "an integer or a list of integers", *it);
  std::vector<int64_t> ids;
  for (const json& element : *it) {
    if (!element.is_number_integer() ||
        (element.is_number_unsigned() &&
         element.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
      return TypeError(key, "an integer or a list of integers", *it);
    }
    ids.push_back(element.get<int64_t>());
  }
  return ids;
}

std::optional<Architecture> ArchitectureFromClass(std::string_view name) {
  for (Architecture arch : kAllArchitectures) {
    if (ArchitectureClassName(arch) == name) return arch;
  }
  return std::nullopt;
}

std::optional<Architecture> ArchitectureFromModelType(std::string_view name) {
  for (Architecture arch : kAllArchitectures) {
    if (ModelTypeName(arch) == name) return arch;
  }
  return std::nullopt;
}

std::string SupportedArchitectures() {
  std::vector<std::string> names;
  for (Architecture arch : kAllArchitectures) {
    names.push_back(std::string(ArchitectureClassName(arch)));
  }
  return absl::StrJoin(names, ", ");
}

// transformers picks the model class from architectures[0] and the config class from
// model_type; a config whose two disagree would load inconsistently, so both are checked.
absl::StatusOr<Architecture> ParseArchitecture(const json& obj) {
  std::optional<Architecture> from_class;
  auto it = obj.find("architectures");
  if (it != obj.end() && !it->is_null()) {
    if (!it->is_array()) return TypeError("architectures", "a list of strings", *it);
    if (!it->empty()) {
      const json& first = (*it)[0];
      if (!first.is_string()) return TypeError("architectures", "a list of strings", *it);
      const std::string name = first.get<std::string>();
      from_class = ArchitectureFromClass(name);
      if (!from_class.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("unsupported architecture '", name,
                                                       "' (supported: ",
                                                       SupportedArchitectures(), ")"));
      }
    }
  }
  MODELIO_ASSIGN_OR_RETURN(std::optional<std::string> model_type, GetString(obj, "model_type"));
  std::optional<Architecture> from_type;
  if (model_type.has_value()) {
    from_type = ArchitectureFromModelType(*model_type);
    if (!from_type.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unsupported model_type '", *model_type, "' (supported: llama, qwen2, mistral)"));
    }
  }
  if (from_class.has_value() && from_type.has_value() && *from_class != *from_type) {
    return absl::InvalidArgumentError(
        absl::StrCat("architectures[0] '", AV(ArchitectureClassName(*from_class)),
                     "' disagrees with model_type '", *model_type, "'"));
  }
  if (from_class.has_value()) return *from_class;
  if (from_type.has_value()) return *from_type;
  return absl::InvalidArgumentError("config has neither 'architectures' nor 'model_type'");
}

// One RoPE description: `field` names it in messages. rope_parameters (transformers 5) may
// leave rope_type out for plain RoPE; rope_scaling must name it.
absl::StatusOr<RopeScaling> ParseRopeObject(const json& rs, std::string_view field,
                                            bool type_optional) {
  RopeScaling out;
  const std::string where(field);
  // Newer configs use rope_type; older ones (and linear scaling examples) use type.
  MODELIO_ASSIGN_OR_RETURN(std::optional<std::string> type, GetString(rs, "rope_type"));
  if (!type.has_value()) {
    MODELIO_ASSIGN_OR_RETURN(type, GetString(rs, "type"));
  }
  if (!type.has_value()) {
    if (type_optional) return out;
    return absl::InvalidArgumentError(absl::StrCat(where, " has neither 'rope_type' nor 'type'"));
  }
  if (*type == "default") return out;
  if (*type == "linear") {
    out.type = RopeScaling::Type::kLinear;
    MODELIO_ASSIGN_OR_RETURN(out.factor, RequireDouble(rs, "factor", where));
    return out;
  }
  if (*type == "llama3") {
    out.type = RopeScaling::Type::kLlama3;
    MODELIO_ASSIGN_OR_RETURN(out.factor, RequireDouble(rs, "factor", where));
    MODELIO_ASSIGN_OR_RETURN(out.low_freq_factor, RequireDouble(rs, "low_freq_factor", where));
    MODELIO_ASSIGN_OR_RETURN(out.high_freq_factor, RequireDouble(rs, "high_freq_factor", where));
    MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> original,
                             GetInt(rs, "original_max_position_embeddings"));
    if (!original.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " is missing required field 'original_max_position_embeddings'"));
    }
    out.original_max_position_embeddings = *original;
    return out;
  }
  // yarn, dynamic, longrope, ... change the positional encoding in ways the engine does
  // not implement; loading such a model with plain RoPE would produce garbage silently.
  return absl::InvalidArgumentError(absl::StrCat("unsupported ", where, " type '", *type,
                                                 "' (supported: llama3, linear)"));
}

// RoPE theta and scaling. transformers 4 writes `rope_theta` and `rope_scaling` at the top
// level; transformers 5 writes both inside `rope_parameters` (and reads `rope_scaling` as an
// alias of it). Both forms are read; a config that states the scaling twice, differently, is
// refused rather than guessed at.
absl::Status ParseRope(const json& obj, ModelConfig* c) {
  MODELIO_ASSIGN_OR_RETURN(std::optional<double> theta, GetDouble(obj, "rope_theta"));
  std::optional<RopeScaling> from_scaling;
  if (auto it = obj.find("rope_scaling"); it != obj.end() && !it->is_null()) {
    if (!it->is_object()) return TypeError("rope_scaling", "an object or null", *it);
    MODELIO_ASSIGN_OR_RETURN(from_scaling, ParseRopeObject(*it, "rope_scaling", false));
  }
  std::optional<RopeScaling> from_parameters;
  if (auto it = obj.find("rope_parameters"); it != obj.end() && !it->is_null()) {
    if (!it->is_object()) return TypeError("rope_parameters", "an object or null", *it);
    for (const auto& [key, value] : it->items()) {
      if (value.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rope_parameters per layer type ('", key, "') are not supported by these families"));
      }
    }
    MODELIO_ASSIGN_OR_RETURN(from_parameters, ParseRopeObject(*it, "rope_parameters", true));
    MODELIO_ASSIGN_OR_RETURN(std::optional<double> inner_theta, GetDouble(*it, "rope_theta"));
    if (inner_theta.has_value()) {
      if (theta.has_value() && *theta != *inner_theta) {
        return absl::InvalidArgumentError(absl::StrCat("rope_theta ", *theta,
                                                       " disagrees with rope_parameters.rope_theta ",
                                                       *inner_theta));
      }
      theta = inner_theta;
    }
  }
  if (from_scaling.has_value() && from_parameters.has_value() && *from_scaling != *from_parameters) {
    return absl::InvalidArgumentError("rope_scaling and rope_parameters describe different RoPE scalings");
  }
  c->rope_theta = theta.value_or(10000.0);
  c->rope_scaling = from_parameters.value_or(from_scaling.value_or(RopeScaling{}));
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseObject(const json& obj) {
  if (!obj.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json must be a JSON object, got ", obj.type_name()));
  }
  ModelConfig c;
  MODELIO_ASSIGN_OR_RETURN(c.architecture, ParseArchitecture(obj));

  MODELIO_ASSIGN_OR_RETURN(c.vocab_size, RequireInt(obj, "vocab_size"));
  MODELIO_ASSIGN_OR_RETURN(c.hidden_size, RequireInt(obj, "hidden_size"));
  MODELIO_ASSIGN_OR_RETURN(c.intermediate_size, RequireInt(obj, "intermediate_size"));
  MODELIO_ASSIGN_OR_RETURN(c.num_hidden_layers, RequireInt(obj, "num_hidden_layers"));
  MODELIO_ASSIGN_OR_RETURN(c.num_attention_heads, RequireInt(obj, "num_attention_heads"));

  MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, GetInt(obj, "num_key_value_heads"));
  c.num_key_value_heads = kv_heads.value_or(c.num_attention_heads);

  MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, GetInt(obj, "head_dim"));
  if (head_dim.has_value()) {
    c.head_dim = *head_dim;
    c.head_dim_explicit = true;
  } else if (c.num_attention_heads > 0) {
    // Validation below rejects the case where this division is not exact.
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }

  MODELIO_RETURN_IF_ERROR(ParseRope(obj, &c));
  MODELIO_ASSIGN_OR_RETURN(std::optional<double> eps, GetDouble(obj, "rms_norm_eps"));
  c.rms_norm_eps = eps.value_or(1e-6);
  MODELIO_ASSIGN_OR_RETURN(std::optional<bool> tie, GetBool(obj, "tie_word_embeddings"));
  c.tie_word_embeddings = tie.value_or(false);

  MODELIO_ASSIGN_OR_RETURN(std::optional<std::string> act, GetString(obj, "hidden_act"));
  if (act.has_value() && *act != "silu") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported hidden_act '", *act, "' (these families use silu)"));
  }

  MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> max_pos, GetInt(obj, "max_position_embeddings"));
  MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> window, GetInt(obj, "sliding_window"));
  const bool has_window_key = obj.contains("sliding_window");

  // Per-architecture fields and transformers' defaults for them.
  switch (c.architecture) {
    case Architecture::kLlama: {
      c.max_position_embeddings = max_pos.value_or(2048);
      MODELIO_ASSIGN_OR_RETURN(std::optional<bool> bias, GetBool(obj, "attention_bias"));
      c.attention_bias = bias.value_or(false);
      MODELIO_ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, GetBool(obj, "mlp_bias"));
      if (mlp_bias.value_or(false)) {
        return absl::InvalidArgumentError("mlp_bias=true is not supported");
      }
      // LlamaConfig has no sliding window; transformers ignores such a key, so do we.
      break;
    }
    case Architecture::kQwen2: {
      c.max_position_embeddings = max_pos.value_or(32768);
      c.attention_bias = true;  // Qwen2Attention hard-codes bias=True on q/k/v
      c.sliding_window = has_window_key ? window : std::optional<int64_t>(4096);
      MODELIO_ASSIGN_OR_RETURN(std::optional<bool> use, GetBool(obj, "use_sliding_window"));
      c.use_sliding_window = use.value_or(false);
      MODELIO_ASSIGN_OR_RETURN(std::optional<int64_t> mwl, GetInt(obj, "max_window_layers"));
      c.max_window_layers = mwl.value_or(28);
      break;
    }
    case Architecture::kMistral: {
      c.max_position_embeddings = max_pos.value_or(4096 * 32);
      c.sliding_window = has_window_key ? window : std::optional<int64_t>(4096);
      break;
    }
  }

  MODELIO_ASSIGN_OR_RETURN(std::optional<std::string> dtype, GetString(obj, "torch_dtype"));
  c.torch_dtype = dtype.value_or("");
  MODELIO_ASSIGN_OR_RETURN(c.bos_token_ids, GetTokenIds(obj, "bos_token_id"));
  MODELIO_ASSIGN_OR_RETURN(c.eos_token_ids, GetTokenIds(obj, "eos_token_id"));

  MODELIO_RETURN_IF_ERROR(ValidateModelConfig(c));
  return c;
}

absl::Status CheckDim(std::string_view name, int64_t value) {
  if (value <= 0 || value > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat(AV(name), " must be in [1, ", kMaxDim, "], got ", value));
  }
  return absl::OkStatus();
}

json TokenIdsToJson(const std::vector<int64_t>& ids) {
  if (ids.size() == 1) return ids[0];
  return json(ids);
}

}  // namespace

std::string_view ArchitectureClassName(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kMistral:
      return "MistralForCausalLM";
  }
  return "?";
}

std::string_view ModelTypeName(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kMistral:
      return "mistral";
  }
  return "?";
}

absl::Status ValidateModelConfig(const ModelConfig& c) {
  MODELIO_RETURN_IF_ERROR(CheckDim("vocab_size", c.vocab_size));
  MODELIO_RETURN_IF_ERROR(CheckDim("hidden_size", c.hidden_size));
  MODELIO_RETURN_IF_ERROR(CheckDim("intermediate_size", c.intermediate_size));
  MODELIO_RETURN_IF_ERROR(CheckDim("num_hidden_layers", c.num_hidden_layers));
  MODELIO_RETURN_IF_ERROR(CheckDim("num_attention_heads", c.num_attention_heads));
  MODELIO_RETURN_IF_ERROR(CheckDim("num_key_value_heads", c.num_key_value_heads));
  MODELIO_RETURN_IF_ERROR(CheckDim("max_position_embeddings", c.max_position_embeddings));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_attention_heads (", c.num_attention_heads,
                     ") must be a multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  }
  if (!c.head_dim_explicit) {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("hidden_size (", c.hidden_size, ") is not divisible by num_attention_heads (",
                       c.num_attention_heads, ") and head_dim is not given"));
    }
    if (c.head_dim != c.hidden_size / c.num_attention_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          "head_dim (", c.head_dim, ") != hidden_size / num_attention_heads (",
          c.hidden_size / c.num_attention_heads, ") and head_dim is not marked explicit"));
    }
  }
  MODELIO_RETURN_IF_ERROR(CheckDim("head_dim", c.head_dim));
  if (c.head_dim % 2 != 0) {
    // RoPE rotates pairs of dimensions.
    return absl::InvalidArgumentError(absl::StrCat("head_dim must be even, got ", c.head_dim));
  }
  if (!std::isfinite(c.rope_theta) || c.rope_theta <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("rope_theta must be > 0, got ", c.rope_theta));
  }
  if (!std::isfinite(c.rms_norm_eps) || c.rms_norm_eps <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rms_norm_eps must be > 0, got ", c.rms_norm_eps));
  }
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type != RopeScaling::Type::kNone) {
    if (!std::isfinite(rs.factor) || rs.factor < 1.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("rope_scaling.factor must be >= 1, got ", rs.factor));
    }
  }
  if (rs.type == RopeScaling::Type::kLlama3) {
    if (!std::isfinite(rs.low_freq_factor) || rs.low_freq_factor <= 0 ||
        !std::isfinite(rs.high_freq_factor) || rs.high_freq_factor <= rs.low_freq_factor) {
      // The llama3 formula divides by (high_freq_factor - low_freq_factor).
      return absl::InvalidArgumentError(absl::StrCat(
          "rope_scaling needs 0 < low_freq_factor < high_freq_factor, got ", rs.low_freq_factor,
          " and ", rs.high_freq_factor));
    }
    MODELIO_RETURN_IF_ERROR(CheckDim("rope_scaling.original_max_position_embeddings",
                                     rs.original_max_position_embeddings));
  }
  if (c.sliding_window.has_value()) {
    MODELIO_RETURN_IF_ERROR(CheckDim("sliding_window", *c.sliding_window));
  }
  if (!c.torch_dtype.empty() && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16" &&
      c.torch_dtype != "float32") {
    return absl::InvalidArgumentError(absl::StrCat("unsupported torch_dtype '", c.torch_dtype,
                                                   "' (bfloat16, float16 or float32)"));
  }
  for (const auto* ids : {&c.bos_token_ids, &c.eos_token_ids}) {
    for (int64_t id : *ids) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            ids == &c.bos_token_ids ? "bos_token_id " : "eos_token_id ", id,
            " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
  }

  // Rules for fields that only some architectures can express. Enforcing them keeps
  // ToJson faithful: a value that transformers would ignore for the architecture must
  // not be carried around as if it had an effect.
  switch (c.architecture) {
    case Architecture::kLlama:
      if (c.sliding_window.has_value() || c.use_sliding_window || c.max_window_layers != 0) {
        return absl::InvalidArgumentError("Llama has no sliding-window attention");
      }
      break;
    case Architecture::kQwen2:
      if (!c.attention_bias) {
        return absl::InvalidArgumentError("Qwen2 always has q/k/v biases (attention_bias)");
      }
      if (c.max_window_layers < 0 || c.max_window_layers > kMaxDim) {
        return absl::InvalidArgumentError(
            absl::StrCat("max_window_layers must be in [0, ", kMaxDim, "], got ",
                         c.max_window_layers));
      }
      if (c.use_sliding_window && !c.sliding_window.has_value()) {
        return absl::InvalidArgumentError("use_sliding_window is true but sliding_window is null");
      }
      break;
    case Architecture::kMistral:
      if (c.attention_bias) {
        return absl::InvalidArgumentError("Mistral has no attention biases");
      }
      if (c.use_sliding_window || c.max_window_layers != 0) {
        return absl::InvalidArgumentError(
            "use_sliding_window/max_window_layers are Qwen2 fields; Mistral uses sliding_window "
            "alone");
      }
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view text) {
  // Exceptions are confined to this boundary: the parse itself reports syntax errors by
  // throwing (the message carries the byte offset, which a bare "invalid" flag would not),
  // and the accessors above check types so nothing else should throw; the catch-all for
  // json::exception is a backstop, never a control path.
  MODELIO_RETURN_IF_ERROR(common::CheckJsonNesting(text, "config.json"));
  try {
    const json obj = json::parse(text.begin(), text.end());
    return ParseObject(obj);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json is not valid JSON: ", e.what()));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", e.what()));
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "config.json";
  MODELIO_ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(path, kMaxConfigBytes));
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path.string(), ": ", config.status().message()));
  }
  return config;
}

std::string ToJson(const ModelConfig& c) {
  // nlohmann's default object type is a std::map, so keys come out sorted, matching
  // transformers' save_pretrained (json.dumps(sort_keys=True)).
  json j;
  j["architectures"] = json::array({std::string(ArchitectureClassName(c.architecture))});
  j["model_type"] = std::string(ModelTypeName(c.architecture));
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  if (c.head_dim_explicit) j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hidden_act"] = "silu";
  j["initializer_range"] = 0.02;
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  if (!c.bos_token_ids.empty()) j["bos_token_id"] = TokenIdsToJson(c.bos_token_ids);
  if (!c.eos_token_ids.empty()) j["eos_token_id"] = TokenIdsToJson(c.eos_token_ids);

  switch (c.rope_scaling.type) {
    case RopeScaling::Type::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::Type::kLinear:
      // Both spellings: transformers < 4.43 reads "type", newer versions "rope_type".
      j["rope_scaling"] = {
          {"type", "linear"}, {"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
      break;
    case RopeScaling::Type::kLlama3:
      // Exactly the Llama-3.1 layout (llama3 needs transformers >= 4.43 anyway).
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", c.rope_scaling.factor},
          {"low_freq_factor", c.rope_scaling.low_freq_factor},
          {"high_freq_factor", c.rope_scaling.high_freq_factor},
          {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
      break;
  }

  auto window = [&]() -> json {
    return c.sliding_window.has_value() ? json(*c.sliding_window) : json(nullptr);
  };
  switch (c.architecture) {
    case Architecture::kLlama:
      j["attention_bias"] = c.attention_bias;
      j["mlp_bias"] = false;
      j["pretraining_tp"] = 1;
      break;
    case Architecture::kQwen2:
      j["sliding_window"] = window();
      j["use_sliding_window"] = c.use_sliding_window;
      j["max_window_layers"] = c.max_window_layers;
      break;
    case Architecture::kMistral:
      j["sliding_window"] = window();
      break;
  }
  // replace: never throw on odd bytes in torch_dtype; validation would have rejected them.
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::optional<int64_t> SlidingWindowForLayer(const ModelConfig& c, int64_t layer) {
  switch (c.architecture) {
    case Architecture::kLlama:
      return std::nullopt;
    case Architecture::kMistral:
      return c.sliding_window;
    case Architecture::kQwen2:
      if (c.use_sliding_window && layer >= c.max_window_layers) return c.sliding_window;
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace kvwire::modelio
