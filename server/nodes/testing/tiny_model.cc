#include "server/nodes/testing/tiny_model.h"

#include <fstream>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/modelio/random_checkpoint.h"
#include "server/tokenizer/bpe_model.h"
#include "server/tokenizer/utf8.h"

namespace kvwire::nodes::testing {

using json = nlohmann::json;

std::string TinyTokenizerJson() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    tokenizer::utf8::Append(tokenizer::ByteLevelByteToChar(static_cast<uint8_t>(b)), &s);
    vocab[s] = b;
  }
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"}};
  json merge_list = json::array();
  int id = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    merge_list.push_back(a + " " + b);
  }
  json added = json::array();
  for (const auto& [tid, text] : std::vector<std::pair<int, std::string>>{
           {kEndOfText, "<|endoftext|>"}, {kImStart, "<|im_start|>"}, {kImEnd, "<|im_end|>"}}) {
    vocab[text] = tid;
    added.push_back({{"id", tid}, {"content", text}, {"special", true}, {"normalized", false},
                     {"single_word", false}, {"lstrip", false}, {"rstrip", false}});
  }
  json j = {{"version", "1.0"},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}}};
  return j.dump();
}

std::string TinyTokenizerConfigJson() {
  json j = {{"chat_template",
             "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
             "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
             "%}{{ '<|im_start|>assistant\\n' }}{% endif %}"},
            {"bos_token", nullptr},
            {"eos_token", "<|im_end|>"},
            {"pad_token", "<|endoftext|>"}};
  return j.dump();
}

modelio::ModelConfig TinyConfig(int layers) {
  modelio::ModelConfig c;
  c.architecture = modelio::Architecture::kQwen2;
  c.vocab_size = 272;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1e6;
  c.attention_bias = true;
  c.tie_word_embeddings = true;
  c.eos_token_ids = {kEndOfText};
  return c;
}

absl::Status WriteTinyModel(const std::filesystem::path& dir, const modelio::ModelConfig& config) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError("cannot create " + dir.string());
  if (absl::Status s = modelio::WriteRandomCheckpoint(dir.string(), config, 7, modelio::Dtype::kF32); !s.ok()) {
    return s;
  }
  std::ofstream(dir / "tokenizer.json") << TinyTokenizerJson();
  std::ofstream(dir / "tokenizer_config.json") << TinyTokenizerConfigJson();
  return absl::OkStatus();
}

}  // namespace kvwire::nodes::testing
