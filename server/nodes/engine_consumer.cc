#include "server/nodes/engine_consumer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/tokenizer.h"

namespace kvwire::nodes {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

absl::StatusOr<engine::GenerateOptions> ToGenerateOptions(const kvwire::v1::GenerationOptions& options,
                                                          int default_max_new_tokens) {
  if (options.max_new_tokens() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 0, got ", options.max_new_tokens()));
  }
  if (!(options.temperature() >= 0) || std::isinf(options.temperature())) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite value >= 0, got ", options.temperature()));
  }
  if (!(options.top_p() >= 0 && options.top_p() <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in [0, 1], got ", options.top_p()));
  }
  if (options.top_k() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", options.top_k()));
  }
  engine::GenerateOptions out;
  out.max_new_tokens = options.max_new_tokens() > 0 ? options.max_new_tokens() : default_max_new_tokens;
  out.sampling.temperature = options.temperature();
  out.sampling.top_p = options.top_p() > 0 ? options.top_p() : 1.0f;
  out.sampling.top_k = options.top_k();
  out.sampling.seed = options.seed();
  for (const std::string& stop : options.stop()) {
    if (stop.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    out.stop_strings.push_back(stop);
  }
  if (absl::Status s = engine::ValidateSampling(out.sampling); !s.ok()) {
    return absl::InvalidArgumentError(s.message());
  }
  return out;
}

kvwire::v1::FinishReason ToFinishReason(const std::string& reason) {
  if (reason == "eos") return kvwire::v1::FINISH_REASON_EOS;
  if (reason == "length") return kvwire::v1::FINISH_REASON_LENGTH;
  if (reason == "stop") return kvwire::v1::FINISH_REASON_STOP;
  return kvwire::v1::FINISH_REASON_UNSPECIFIED;
}

EngineConsumer::EngineConsumer(const NodeModel& model, EngineConsumerOptions options)
    : model_(model), options_(options) {}

absl::StatusOr<engine::GenerateOptions> EngineConsumer::CheckedOptions(
    const kvcodec::FrameInfo& info, const kvwire::v1::UploadHeader& header) const {
  auto options = ToGenerateOptions(header.options(), options_.default_max_new_tokens);
  if (!options.ok()) return options.status();
  if (header.suffix_token_ids().empty()) {
    return absl::InvalidArgumentError(
        "suffix_token_ids is empty: it must hold at least the prompt's last token, whose logits "
        "start generation");
  }
  if (header.prompt_tokens() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_tokens must be >= 0, got ", header.prompt_tokens()));
  }
  const engine::Engine& engine = *model_.engine;
  const int64_t max_positions = engine.config().max_position_embeddings;
  const int64_t prompt_length = int64_t{header.prompt_tokens()} + header.suffix_token_ids_size();
  if (prompt_length >= max_positions) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt_length,
                                                   " tokens leaves no room to generate (model's "
                                                   "max_position_embeddings is ",
                                                   max_positions, ")"));
  }
  const modelio::ModelConfig& config = engine.config();
  const kvcodec::CacheShape& shape = info.shape;
  if (shape.num_layers != config.num_hidden_layers || shape.num_kv_heads != config.num_key_value_heads ||
      shape.head_dim != config.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cache shape (layers ", shape.num_layers, ", kv heads ", shape.num_kv_heads, ", head_dim ",
        shape.head_dim, ") does not match the model (", config.num_hidden_layers, ", ",
        config.num_key_value_heads, ", ", config.head_dim, ")"));
  }
  if (shape.num_tokens > max_positions) {
    return absl::InvalidArgumentError(absl::StrCat("cache of ", shape.num_tokens,
                                                   " tokens exceeds the model's max_position_embeddings ",
                                                   max_positions));
  }
  return options;
}

absl::Status EngineConsumer::CheckUpload(const kvcodec::FrameInfo& info,
                                         const kvwire::v1::UploadHeader& header) const {
  return CheckedOptions(info, header).status();
}

absl::StatusOr<kvwire::v1::GenerateReply> EngineConsumer::Consume(
    const kvcodec::FrameInfo& info, std::vector<kvcodec::DecodedLayer> layers,
    const kvwire::v1::UploadHeader& header, const transport::Interrupt& interrupt) {
  const Clock::time_point start = Clock::now();
  auto options = CheckedOptions(info, header);
  if (!options.ok()) return options.status();
  const engine::Engine& engine = *model_.engine;
  const int64_t max_positions = engine.config().max_position_embeddings;
  const int64_t prompt_length = int64_t{header.prompt_tokens()} + header.suffix_token_ids_size();

  auto session = engine::DecodeSession::Create(engine, info.shape, layers, header.prompt_tokens(),
                                               info.positions);
  if (!session.ok()) return session.status();
  const bool shadow = options_.shadow != nullptr && header.has_shadow();
  if (!shadow) {
    layers.clear();
    layers.shrink_to_fit();  // the session holds its own copy
  }

  std::vector<float> logits;
  for (int32_t id : header.suffix_token_ids()) {
    if (absl::Status s = interrupt(); !s.ok()) return s;
    auto step = (*session)->Step(id);
    if (!step.ok()) return step.status();
    logits = *std::move(step);
  }

  // Never step past the model's positions: the suffix ends at position prompt_length - 1.
  const int64_t room = max_positions - (*session)->position();
  options->max_new_tokens = static_cast<int>(std::min<int64_t>(options->max_new_tokens, room));
  options->eos_ids = model_.eos_ids;
  options->interrupt = interrupt;

  tokenizer::StreamingDecoder decoder(*model_.tokenizer, /*skip_special=*/true);
  std::optional<Clock::time_point> first_token;
  options->detokenize = [&](int32_t id) {
    if (!first_token) first_token = Clock::now();
    return decoder.Push(id);
  };
  auto result = engine::Generate(**session, logits, *options);
  if (!result.ok()) return result.status();
  const Clock::time_point end = Clock::now();
  session->reset();
  if (shadow) SubmitShadow(info, std::move(layers), header, result->tokens);

  kvwire::v1::GenerateReply reply;
  reply.set_request_id(header.request_id());
  std::string text = std::move(result->text);
  if (result->finish_reason != "stop") text += decoder.Flush();
  reply.set_text(std::move(text));
  for (int32_t id : result->tokens) reply.add_token_ids(id);
  reply.set_finish_reason(ToFinishReason(result->finish_reason));
  reply.set_codec_config(info.config_text);
  reply.set_model_fingerprint(model_.fingerprint);

  kvwire::v1::RequestStats* stats = reply.mutable_stats();
  stats->set_prompt_tokens(static_cast<int32_t>(prompt_length));
  stats->set_generated_tokens(static_cast<int32_t>(result->tokens.size()));
  if (first_token) {
    stats->set_first_token_seconds(Seconds(start, *first_token));
    const double decode_seconds = Seconds(*first_token, end);
    if (result->tokens.size() > 1 && decode_seconds > 0) {
      stats->set_tokens_per_second(static_cast<double>(result->tokens.size() - 1) / decode_seconds);
    }
  }
  return reply;
}

void EngineConsumer::SubmitShadow(const kvcodec::FrameInfo& info,
                                  std::vector<kvcodec::DecodedLayer> layers,
                                  const kvwire::v1::UploadHeader& header,
                                  const std::vector<int32_t>& generated) const {
  const kvwire::v1::ShadowRequest& request = header.shadow();
  shadow::ShadowInput input{.request_id = header.request_id(),
                            .preset = request.preset(),
                            .shape = info.shape,
                            .positions = info.positions,
                            .layers = std::move(layers),
                            .prompt_tokens = header.prompt_tokens()};
  input.prompt_token_ids.assign(request.prompt_token_ids().begin(), request.prompt_token_ids().end());
  input.suffix_token_ids.assign(header.suffix_token_ids().begin(), header.suffix_token_ids().end());
  const size_t n = std::min(generated.size(), static_cast<size_t>(std::max(0, options_.shadow->tokens())));
  input.generated.assign(generated.begin(), generated.begin() + n);
  options_.shadow->Submit(std::move(input));
}

}  // namespace kvwire::nodes
