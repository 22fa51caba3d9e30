// A tiny Qwen2-style model directory for tests of the nodes and the CLI: random weights, a
// byte-level BPE tokenizer (256 byte tokens, five merges, ChatML special tokens) and a ChatML
// tokenizer_config.json. Small enough to load and run in milliseconds.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "server/modelio/hf_config.h"

namespace kvwire::nodes::testing {

inline constexpr int kEndOfText = 261, kImStart = 262, kImEnd = 263;

std::string TinyTokenizerJson();
std::string TinyTokenizerConfigJson();
// vocab 272 (covers the tokenizer), hidden 64, 4 heads / 2 KV heads, head_dim 16.
modelio::ModelConfig TinyConfig(int layers);
// Writes config.json, weights (seed 7, float32), tokenizer.json and tokenizer_config.json.
absl::Status WriteTinyModel(const std::filesystem::path& dir, const modelio::ModelConfig& config);

}  // namespace kvwire::nodes::testing
