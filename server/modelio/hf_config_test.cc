#include "server/modelio/hf_config.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/modelio/test_util.h"

namespace kvwire::modelio {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The published config.json files (field values as released on the Hugging Face Hub).
constexpr char kQwen25_7B[] = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 131072,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 152064
})";

constexpr char kLlama31_8B[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

constexpr char kMistral7B_v01[] = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

// Llama-3.2-1B-Instruct: tied embeddings, explicit head_dim, a list of eos ids.
constexpr char kLlama32_1B_Instruct[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256
})";

ModelConfig MustParse(std::string_view json) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(json);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

void ExpectError(std::string_view json, std::string_view fragment) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(json);
  ASSERT_FALSE(c.ok()) << "parsed unexpectedly:\n" << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(std::string(fragment)));
}

// Replaces one exact substring of a known-good config (must occur).
std::string Edit(std::string_view base, std::string_view from, std::string_view to) {
  std::string s(base);
  const size_t pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

TEST(HfConfigTest, ParsesQwen25_7B) {
  const ModelConfig c = MustParse(kQwen25_7B);
  EXPECT_EQ(c.architecture, Architecture::kQwen2);
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.intermediate_size, 18944);
  EXPECT_EQ(c.num_hidden_layers, 28);
  EXPECT_EQ(c.num_attention_heads, 28);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.head_dim_explicit);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);  // Qwen2: q/k/v biases without a config key
  EXPECT_EQ(c.sliding_window, 131072);
  EXPECT_FALSE(c.use_sliding_window);
  EXPECT_EQ(c.max_window_layers, 28);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.bos_token_ids, std::vector<int64_t>{151643});
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151643});
  // use_sliding_window is false, so every layer attends fully.
  for (int layer : {0, 27}) EXPECT_EQ(SlidingWindowForLayer(c, layer), std::nullopt);
}

TEST(HfConfigTest, Qwen2SlidingWindowAppliesFromMaxWindowLayers) {
  const ModelConfig c = MustParse(Edit(Edit(kQwen25_7B, R"("use_sliding_window": false)",
                                            R"("use_sliding_window": true)"),
                                       R"("max_window_layers": 28)", R"("max_window_layers": 20)"));
  EXPECT_EQ(SlidingWindowForLayer(c, 19), std::nullopt);
  EXPECT_EQ(SlidingWindowForLayer(c, 20), 131072);
}

TEST(HfConfigTest, ParsesLlama31_8BWithLlama3RopeScaling) {
  const ModelConfig c = MustParse(kLlama31_8B);
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.sliding_window, std::nullopt);
  EXPECT_EQ(SlidingWindowForLayer(c, 0), std::nullopt);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.bos_token_ids, std::vector<int64_t>{128000});
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{128001});
}

TEST(HfConfigTest, ParsesMistral7BWithSlidingWindow) {
  const ModelConfig c = MustParse(kMistral7B_v01);
  EXPECT_EQ(c.architecture, Architecture::kMistral);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  // Mistral applies the window to every layer.
  EXPECT_EQ(SlidingWindowForLayer(c, 0), 4096);
  EXPECT_EQ(SlidingWindowForLayer(c, 31), 4096);
}

TEST(HfConfigTest, MistralNullSlidingWindowMeansFullAttention) {
  // Mistral-7B-v0.2 and later write "sliding_window": null.
  const ModelConfig c =
      MustParse(Edit(kMistral7B_v01, R"("sliding_window": 4096)", R"("sliding_window": null)"));
  EXPECT_EQ(c.sliding_window, std::nullopt);
  EXPECT_EQ(SlidingWindowForLayer(c, 3), std::nullopt);
}

TEST(HfConfigTest, ParsesExplicitHeadDimTiedEmbeddingsAndEosList) {
  const ModelConfig c = MustParse(kLlama32_1B_Instruct);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.head_dim_explicit);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
}

TEST(HfConfigTest, HeadDimMayDifferFromHiddenOverHeadsWhenExplicit) {
  // Mistral-Nemo style: 32 heads * 128 = 4096 != hidden 5120.
  const ModelConfig c = MustParse(Edit(Edit(kMistral7B_v01, R"("hidden_size": 4096)",
                                            R"("hidden_size": 5120)"),
                                       R"("model_type")", R"("head_dim": 128, "model_type")"));
  EXPECT_EQ(c.hidden_size, 5120);
  EXPECT_EQ(c.head_dim, 128);
}

TEST(HfConfigTest, DefaultsFollowTransformers) {
  const ModelConfig c = MustParse(R"({
    "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4})");
  EXPECT_EQ(c.architecture, Architecture::kLlama);  // from model_type alone
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.torch_dtype.empty());
  EXPECT_TRUE(c.eos_token_ids.empty());

  const ModelConfig m = MustParse(R"({
    "model_type": "mistral", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4})");
  EXPECT_EQ(m.sliding_window, 4096);  // MistralConfig default
}

TEST(HfConfigTest, LinearRopeScalingAcceptsOldTypeKey) {
  const ModelConfig c = MustParse(Edit(kMistral7B_v01, R"("rope_theta")",
                                       R"("rope_scaling": {"type": "linear", "factor": 2.0},
                                          "rope_theta")"));
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
}

// transformers 5 moves rope_theta and the scaling into one rope_parameters object.
TEST(HfConfigTest, ReadsTransformers5RopeParameters) {
  const std::string v5 = Edit(Edit(kLlama31_8B, R"("rope_scaling": {)", R"("rope_parameters": {
    "rope_theta": 500000.0,)"), R"("rope_theta": 500000.0,
  "tie_word_embeddings")", R"("tie_word_embeddings")");
  ASSERT_EQ(v5.find("rope_scaling"), std::string::npos);
  const ModelConfig c = MustParse(v5);
  EXPECT_EQ(c.rope_scaling, MustParse(kLlama31_8B).rope_scaling);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);

  // Plain RoPE: rope_type "default", or no type at all.
  const std::string plain = Edit(kMistral7B_v01, R"("rope_theta": 10000.0)",
                                 R"("rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0})");
  const ModelConfig p = MustParse(plain);
  EXPECT_EQ(p.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_DOUBLE_EQ(p.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(MustParse(Edit(plain, R"("rope_type": "default", )", "")).rope_theta, 1e6);

  // Both forms together must agree.
  EXPECT_DOUBLE_EQ(MustParse(Edit(plain, R"("rope_parameters")", R"("rope_theta": 1000000.0, "rope_parameters")"))
                       .rope_theta,
                   1e6);
  ExpectError(Edit(plain, R"("rope_parameters")", R"("rope_theta": 5.0, "rope_parameters")"),
              "disagrees with rope_parameters.rope_theta");
  ExpectError(Edit(v5, R"("rope_parameters")", R"("rope_scaling": {"type": "linear", "factor": 2.0}, "rope_parameters")"),
              "rope_scaling and rope_parameters describe different");
  ExpectError(Edit(v5, R"("rope_type": "llama3")", R"("rope_type": "yarn")"),
              "unsupported rope_parameters type 'yarn'");
  ExpectError(Edit(kMistral7B_v01, R"("rope_theta": 10000.0)",
                   R"("rope_parameters": {"full_attention": {"rope_type": "default"}})"),
              "per layer type");
}

TEST(HfConfigTest, ToJsonRoundTrips) {
  for (const char* text : {kQwen25_7B, kLlama31_8B, kMistral7B_v01, kLlama32_1B_Instruct}) {
    const ModelConfig c = MustParse(text);
    const std::string json = ToJson(c);
    const ModelConfig back = MustParse(json);
    EXPECT_EQ(back, c) << json;
    // What transformers needs to pick the classes.
    EXPECT_THAT(json, HasSubstr("\"model_type\": \"" + std::string(ModelTypeName(c.architecture))));
    EXPECT_THAT(json, HasSubstr(std::string(ArchitectureClassName(c.architecture))));
    EXPECT_THAT(json, HasSubstr("\"hidden_act\": \"silu\""));
  }
  // Also round-trips the non-default corners.
  ModelConfig c = MustParse(kMistral7B_v01);
  c.sliding_window.reset();
  c.rope_scaling = {RopeScaling::Type::kLinear, 4.0, 1.0, 4.0, 0};
  c.eos_token_ids.clear();
  c.torch_dtype.clear();
  EXPECT_EQ(MustParse(ToJson(c)), c);
  ModelConfig l = MustParse(kLlama31_8B);
  l.attention_bias = true;
  l.tie_word_embeddings = true;
  EXPECT_EQ(MustParse(ToJson(l)), l);
}

TEST(HfConfigTest, ToJsonWritesArchitectureSpecificFields) {
  const std::string qwen = ToJson(MustParse(kQwen25_7B));
  EXPECT_THAT(qwen, HasSubstr("\"use_sliding_window\": false"));
  EXPECT_THAT(qwen, HasSubstr("\"max_window_layers\": 28"));
  EXPECT_THAT(qwen, Not(HasSubstr("attention_bias")));
  const std::string llama = ToJson(MustParse(kLlama31_8B));
  EXPECT_THAT(llama, HasSubstr("\"rope_type\": \"llama3\""));
  EXPECT_THAT(llama, HasSubstr("\"original_max_position_embeddings\": 8192"));
  EXPECT_THAT(llama, HasSubstr("\"attention_bias\": false"));
  EXPECT_THAT(llama, HasSubstr("\"rope_theta\": 500000.0"));
  EXPECT_THAT(llama, HasSubstr("\"rms_norm_eps\": 1e-05"));
  EXPECT_THAT(llama, Not(HasSubstr("sliding_window")));
  EXPECT_THAT(ToJson(MustParse(kMistral7B_v01)), HasSubstr("\"sliding_window\": 4096"));
  EXPECT_THAT(ToJson(MustParse(kLlama32_1B_Instruct)),
              HasSubstr("\"eos_token_id\": [\n    128001,"));
}

TEST(HfConfigTest, UnknownArchitectureIsNamed) {
  ExpectError(Edit(kLlama31_8B, "\"LlamaForCausalLM\"", "\"GemmaForCausalLM\""),
              "unsupported architecture 'GemmaForCausalLM'");
  ExpectError(R"({"model_type": "gpt2", "vocab_size": 1})", "unsupported model_type 'gpt2'");
  ExpectError(Edit(kLlama31_8B, R"("model_type": "llama")", R"("model_type": "qwen2")"),
              "disagrees with model_type 'qwen2'");
  ExpectError(R"({"vocab_size": 1})", "neither 'architectures' nor 'model_type'");
}

TEST(HfConfigTest, MissingRequiredFieldsAreNamed) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size",
                            "num_hidden_layers", "num_attention_heads"}) {
    // Drop the field by renaming its key.
    const std::string text =
        absl::StrReplaceAll(kLlama31_8B, {{absl::StrCat("\"", field, "\""), "\"renamed\""}});
    ExpectError(text, absl::StrCat("missing required field '", field, "'"));
  }
  ExpectError(Edit(kLlama31_8B, R"("original_max_position_embeddings": 8192,)", ""),
              "'original_max_position_embeddings'");
  ExpectError(Edit(kLlama31_8B, R"("rope_type": "llama3")", R"("kind": "llama3")"),
              "neither 'rope_type' nor 'type'");
}

TEST(HfConfigTest, BadValuesAreRejected) {
  ExpectError(Edit(kLlama31_8B, R"("num_key_value_heads": 8)", R"("num_key_value_heads": 5)"),
              "multiple of num_key_value_heads");
  ExpectError(Edit(kLlama31_8B, R"("hidden_size": 4096)", R"("hidden_size": 4100)"),
              "not divisible by num_attention_heads");
  ExpectError(Edit(kLlama31_8B, R"("hidden_size": 4096)", R"("hidden_size": 0)"),
              "hidden_size must be in");
  ExpectError(Edit(kLlama31_8B, R"("vocab_size": 128256)", R"("vocab_size": -3)"),
              "vocab_size must be in");
  ExpectError(Edit(kLlama31_8B, R"("hidden_size": 4096)", R"("hidden_size": 4096.0)"),
              "'hidden_size' must be an integer");
  ExpectError(Edit(kLlama31_8B, R"("hidden_size": 4096)", R"("hidden_size": "4096")"),
              "'hidden_size' must be an integer");
  ExpectError(Edit(kLlama31_8B, R"("hidden_size": 4096)", R"("hidden_size": 18446744073709551615)"),
              "int64 range");
  ExpectError(Edit(kLlama31_8B, R"("rms_norm_eps": 1e-05)", R"("rms_norm_eps": 0)"),
              "rms_norm_eps must be > 0");
  ExpectError(Edit(kLlama31_8B, R"("rope_theta": 500000.0)", R"("rope_theta": -1)"),
              "rope_theta must be > 0");
  ExpectError(Edit(kLlama31_8B, R"("tie_word_embeddings": false)", R"("tie_word_embeddings": 0)"),
              "'tie_word_embeddings' must be a boolean");
  ExpectError(Edit(kLlama31_8B, R"("rope_type": "llama3")", R"("rope_type": "yarn")"),
              "unsupported rope_scaling type 'yarn'");
  ExpectError(Edit(kLlama31_8B, R"("high_freq_factor": 4.0)", R"("high_freq_factor": 0.5)"),
              "low_freq_factor < high_freq_factor");
  ExpectError(Edit(kLlama31_8B, R"("factor": 8.0)", R"("factor": 0.5)"),
              "rope_scaling.factor must be >= 1");
  ExpectError(Edit(kLlama31_8B, R"("hidden_act": "silu")", R"("hidden_act": "gelu")"),
              "unsupported hidden_act 'gelu'");
  ExpectError(Edit(kLlama31_8B, R"("mlp_bias": false)", R"("mlp_bias": true)"), "mlp_bias");
  ExpectError(Edit(kLlama31_8B, R"("torch_dtype": "bfloat16")", R"("torch_dtype": "int8")"),
              "unsupported torch_dtype 'int8'");
  ExpectError(Edit(kLlama31_8B, R"("eos_token_id": 128001)", R"("eos_token_id": 999999)"),
              "eos_token_id 999999 is outside the vocabulary");
  ExpectError(Edit(kLlama31_8B, R"("eos_token_id": 128001)", R"("eos_token_id": [1, "x"])"),
              "'eos_token_id' must be an integer or a list");
  ExpectError(Edit(kMistral7B_v01, R"("sliding_window": 4096)", R"("sliding_window": 0)"),
              "sliding_window must be in");
  ExpectError(Edit(kLlama31_8B, R"("num_attention_heads": 32)",
                   R"("num_attention_heads": 32, "head_dim": 127)"),
              "head_dim must be even");
  ExpectError(R"({"architectures": "LlamaForCausalLM"})", "'architectures' must be a list");
}

TEST(HfConfigTest, MalformedJsonIsAnErrorNotACrash) {
  ExpectError("", "not valid JSON");
  ExpectError("{", "not valid JSON");
  ExpectError(R"({"hidden_size": 4096,})", "not valid JSON");
  ExpectError("[1, 2, 3]", "must be a JSON object");
  ExpectError("null", "must be a JSON object");
  ExpectError(std::string(kLlama31_8B).substr(0, 200), "not valid JSON");
  ExpectError("\xff\xfe{}", "not valid JSON");
}

// Regression: a wrongly typed field is quoted in the error through json::dump(), which
// recursed once per level and overflowed the stack on a 4 MB config.
TEST(HfConfigTest, DeeplyNestedJsonIsAnErrorNotACrash) {
  const std::string deep = std::string(2'000'000, '[') + std::string(2'000'000, ']');
  ExpectError(Edit(kLlama31_8B, "128256", deep), "nests arrays/objects deeper than 128 levels");
  ExpectError(Edit(kLlama31_8B, "128256", std::string(100, '[') + std::string(100, ']')),
              "'vocab_size' must be");
}

TEST(HfConfigTest, ValidateRejectsInconsistentStructs) {
  ModelConfig c = MustParse(kQwen25_7B);
  c.attention_bias = false;
  EXPECT_FALSE(ValidateModelConfig(c).ok());
  ModelConfig m = MustParse(kMistral7B_v01);
  m.attention_bias = true;
  EXPECT_FALSE(ValidateModelConfig(m).ok());
  ModelConfig l = MustParse(kLlama31_8B);
  l.sliding_window = 4096;
  EXPECT_FALSE(ValidateModelConfig(l).ok());
  l = MustParse(kLlama31_8B);
  l.head_dim = 64;  // derived head_dim must match hidden / heads
  EXPECT_FALSE(ValidateModelConfig(l).ok());
}

TEST(HfConfigTest, LoadModelConfigReadsDirectory) {
  const std::filesystem::path dir = test::FreshTestDir();
  absl::StatusOr<ModelConfig> missing = LoadModelConfig(dir.string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  std::ofstream(dir / "config.json") << kQwen25_7B;
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 3584);

  std::ofstream(dir / "config.json") << "{ nope";
  absl::StatusOr<ModelConfig> bad = LoadModelConfig(dir.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("config.json"));
}

}  // namespace
}  // namespace kvwire::modelio
