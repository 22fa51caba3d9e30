// What a node serves: the engine, the tokenizer, the chat template, the generation tokens and
// the model fingerprint, loaded together from one Hugging Face model directory.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/engine.h"
#include "server/modelio/hf_config.h"
#include "server/tokenizer/chat_template.h"
#include "server/tokenizer/tokenizer.h"

namespace kvwire::nodes {

// A short, stable identifier of a model: "<model_type>-<32 hex digits>", the hex being a
// 128-bit FNV-1a hash (two 64-bit lanes; not cryptographic) of the architecture class name and
// the canonical config.json text (modelio::ToJson of the parsed config, so key order and
// whitespace of the file on disk do not matter; torch_dtype is left out, so bfloat16 and float32
// copies of one checkpoint match). Equal configs give equal fingerprints on every
// platform. It identifies the architecture and hyper-parameters, not the weights: two
// checkpoints with the same config.json share a fingerprint. At most 64 bytes
// (kvcodec::kMaxFingerprintBytes).
std::string ModelFingerprint(const modelio::ModelConfig& config);

struct ModelOptions {
  std::string model_dir;
  // tokenizer.json; empty: <model_dir>/tokenizer.json. The chat template and generation tokens
  // come from tokenizer_config.json / generation_config.json next to it (both optional).
  std::string tokenizer_path;
  // engine::EngineOptions.
  std::string dtype = "float32";
  int threads = 0;
  std::string device = "cpu";
  int prefill_chunk = 512;
};

struct NodeModel {
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  // Raw when tokenizer_config.json is absent or its template is not one chat_template.h knows.
  std::optional<tokenizer::ChatTemplate> chat_template;
  // Why the model's own chat template could not be used (empty when it could, or when there
  // is none). Chat requests are then refused rather than sent as bare concatenated text.
  std::string chat_template_error;
  tokenizer::GenerationTokens generation_tokens;
  // config.json's eos ids, then generation_config.json / tokenizer_config.json's (deduplicated).
  std::vector<int32_t> eos_ids;
  std::string fingerprint;

  // NotFound / InvalidArgument from the engine and tokenizer loaders. A tokenizer whose
  // vocabulary exceeds the model's embedding table is InvalidArgument.
  static absl::StatusOr<std::unique_ptr<NodeModel>> Load(const ModelOptions& options);
};

}  // namespace kvwire::nodes
