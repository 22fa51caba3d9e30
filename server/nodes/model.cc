#include "server/nodes/model.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/metrics/log.h"

namespace kvwire::nodes {
namespace {

uint64_t Fnv1a64(std::string_view data, uint64_t basis) {
  uint64_t h = basis;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Reads a whole file; "" (and ok) if it does not exist.
absl::StatusOr<std::string> ReadOptionalFile(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string ModelFingerprint(const modelio::ModelConfig& config) {
  // The storage dtype is not part of the model's identity: a bfloat16 and a float32 copy of
  // the same checkpoint must accept each other's caches (the decode side converts).
  modelio::ModelConfig canonical_config = config;
  canonical_config.torch_dtype.clear();
  const std::string canonical =
      absl::StrCat(std::string(modelio::ArchitectureClassName(config.architecture)), "\n",
                   modelio::ToJson(canonical_config));
  const uint64_t a = Fnv1a64(canonical, 0xcbf29ce484222325ull);
  const uint64_t b = Fnv1a64(canonical, 0x84222325cbf29ce4ull ^ canonical.size());
  return absl::StrFormat("%s-%016x%016x", std::string(modelio::ModelTypeName(config.architecture)),
                         a, b);
}

absl::StatusOr<std::unique_ptr<NodeModel>> NodeModel::Load(const ModelOptions& options) {
  auto model = std::make_unique<NodeModel>();
  auto engine = engine::Engine::Load({.model_dir = options.model_dir,
                                      .dtype = options.dtype,
                                      .threads = options.threads,
                                      .prefill_chunk = options.prefill_chunk,
                                      .device = options.device});
  if (!engine.ok()) return engine.status();
  model->engine = *std::move(engine);
  const modelio::ModelConfig& config = model->engine->config();

  const std::filesystem::path tokenizer_path =
      options.tokenizer_path.empty()
          ? std::filesystem::path(options.model_dir) / "tokenizer.json"
          : std::filesystem::path(options.tokenizer_path);
  auto tok = tokenizer::Tokenizer::FromFile(tokenizer_path.string());
  if (!tok.ok()) return tok.status();
  model->tokenizer = *std::move(tok);
  if (model->tokenizer->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer ", tokenizer_path.string(), " has ", model->tokenizer->vocab_size(),
                     " ids but the model's vocab_size is ", config.vocab_size));
  }

  const std::filesystem::path dir = tokenizer_path.parent_path();
  auto tokenizer_config = ReadOptionalFile(dir / "tokenizer_config.json");
  if (!tokenizer_config.ok()) return tokenizer_config.status();
  auto generation_config = ReadOptionalFile(dir / "generation_config.json");
  if (!generation_config.ok()) return generation_config.status();
  if (!tokenizer_config->empty()) {
    auto tmpl = tokenizer::ChatTemplate::FromConfig(*tokenizer_config);
    if (tmpl.ok()) {
      model->chat_template = *std::move(tmpl);
    } else if (!absl::IsNotFound(tmpl.status())) {
      model->chat_template_error = std::string(tmpl.status().message());
      metrics::LogEvent(metrics::LogLevel::kWarning, "chat_template_unsupported",
                        {{"tokenizer_config", (dir / "tokenizer_config.json").string()},
                         {"reason", model->chat_template_error},
                         {"effect", "chat (messages) requests are refused; raw prompts work"}});
    }
  }
  if (!model->chat_template) model->chat_template = tokenizer::ChatTemplate::Raw();
  auto gen = tokenizer::ParseGenerationTokens(*tokenizer_config, *generation_config,
                                              model->tokenizer.get());
  if (!gen.ok()) return gen.status();
  model->generation_tokens = *std::move(gen);

  auto add_eos = [&](int64_t id) {
    if (id < 0 || id >= config.vocab_size) return;
    if (std::find(model->eos_ids.begin(), model->eos_ids.end(), id) == model->eos_ids.end()) {
      model->eos_ids.push_back(static_cast<int32_t>(id));
    }
  };
  for (int64_t id : config.eos_token_ids) add_eos(id);
  for (int32_t id : model->generation_tokens.eos_token_ids) add_eos(id);
  model->fingerprint = ModelFingerprint(config);
  return model;
}

}  // namespace kvwire::nodes
