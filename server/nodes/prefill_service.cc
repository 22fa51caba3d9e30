#include "server/nodes/prefill_service.h"

#include <algorithm>
#include <span>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/engine/engine.h"
#include "server/nodes/engine_consumer.h"
#include "server/tokenizer/chat_template.h"
#include "server/transport/decode_service.h"
#include "server/transport/frame_receiver.h"

namespace kvwire::nodes {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

size_t CommonPrefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

absl::StatusOr<std::vector<int32_t>> EncodeRaw(const NodeModel& model, std::string_view text) {
  std::vector<int32_t> ids;
  const tokenizer::GenerationTokens& gen = model.generation_tokens;
  if (gen.add_bos_token && gen.bos_token_id) ids.push_back(*gen.bos_token_id);
  auto body = model.tokenizer->Encode(text, /*parse_special=*/false);
  if (!body.ok()) return body.status();
  ids.insert(ids.end(), body->begin(), body->end());
  return ids;
}

// Errors of the client's making keep their code; the tokenizer's InvalidArgument (bad UTF-8)
// included.
absl::Status Annotate(const absl::Status& status, std::string_view what) {
  return absl::Status(status.code(), absl::StrCat(std::string(what), ": ", status.message()));
}

}  // namespace

absl::StatusOr<Prompt> BuildPrompt(const NodeModel& model, const kvwire::v1::GenerateRequest& request) {
  Prompt prompt;
  if (request.messages_size() > 0) {
    if (!request.context().empty() || !request.question().empty()) {
      return absl::InvalidArgumentError("give either messages or context/question, not both");
    }
    std::vector<tokenizer::ChatMessage> messages;
    for (const auto& m : request.messages()) messages.push_back({m.role(), m.content()});
    const tokenizer::ChatTemplate& tmpl = *model.chat_template;
    auto text = tmpl.Render(messages, /*add_generation_prompt=*/true);
    if (!text.ok()) return Annotate(text.status(), "chat template");
    auto ids = model.tokenizer->Encode(*text, /*parse_special=*/true);
    if (!ids.ok()) return Annotate(ids.status(), "prompt");
    prompt.token_ids = *std::move(ids);
    size_t begin = 0;
    if (messages.size() > 1) {
      auto head = tmpl.Render(std::span(messages).first(messages.size() - 1), false);
      if (head.ok()) {
        auto head_ids = model.tokenizer->Encode(*head, true);
        if (head_ids.ok()) begin = CommonPrefix(*head_ids, prompt.token_ids);
      }
    }
    prompt.question_begin = static_cast<int>(begin);
    prompt.question_end = static_cast<int>(prompt.token_ids.size());
  } else {
    const std::string& context = request.context();
    const std::string& question = request.question();
    if (context.empty() && question.empty()) {
      return absl::InvalidArgumentError("empty prompt: set context/question or messages");
    }
    const std::string prefix = context.empty() || question.empty() ? context : context + "\n";
    auto ids = EncodeRaw(model, prefix + question);
    if (!ids.ok()) return Annotate(ids.status(), "prompt");
    prompt.token_ids = *std::move(ids);
    if (!question.empty()) {
      auto prefix_ids = EncodeRaw(model, prefix);
      if (!prefix_ids.ok()) return Annotate(prefix_ids.status(), "prompt");
      prompt.question_begin = static_cast<int>(CommonPrefix(*prefix_ids, prompt.token_ids));
      prompt.question_end = static_cast<int>(prompt.token_ids.size());
    }
  }
  if (prompt.token_ids.empty()) return absl::InvalidArgumentError("empty prompt (no tokens)");
  return prompt;
}

absl::StatusOr<kvcodec::CodecConfig> ResolveCodec(const kvwire::v1::GenerateRequest& request,
                                                  const std::string& default_codec) {
  absl::StatusOr<kvcodec::CodecConfig> config;
  std::string what;
  switch (request.codec_case()) {
    case kvwire::v1::GenerateRequest::kCodecConfig:
      what = absl::StrCat("codec config \"", request.codec_config(), "\"");
      config = kvcodec::CodecConfig::Parse(request.codec_config());
      break;
    case kvwire::v1::GenerateRequest::kCodecPreset:
      what = absl::StrCat("codec preset \"", request.codec_preset(), "\"");
      config = kvcodec::Preset(request.codec_preset());
      break;
    default:
      what = absl::StrCat("default codec \"", default_codec, "\"");
      config = kvcodec::Preset(default_codec);
      if (!config.ok()) config = kvcodec::CodecConfig::Parse(default_codec);
      break;
  }
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", config.status().message()));
  }
  return config;
}

struct PrefillNodeService::Job {
  grpc::CallbackServerContext* context;
  const kvwire::v1::GenerateRequest* request;
  kvwire::v1::GenerateReply* reply;
  grpc::ServerUnaryReactor* reactor;
  Clock::time_point received;
};

PrefillNodeService::PrefillNodeService(PrefillServiceOptions options)
    : options_(std::move(options)),
      decode_stub_(kvwire::v1::DecodeNode::NewStub(options_.decode_channel)) {
  const int n = std::max(1, options_.workers);
  for (int i = 0; i < n; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

PrefillNodeService::~PrefillNodeService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

grpc::ServerUnaryReactor* PrefillNodeService::Generate(grpc::CallbackServerContext* context,
                                                       const kvwire::v1::GenerateRequest* request,
                                                       kvwire::v1::GenerateReply* reply) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto job = std::make_unique<Job>(Job{context, request, reply, reactor, Clock::now()});
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(std::move(job));
    }
  }
  if (job) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "prefill node is shutting down"));
  } else {
    cv_.notify_one();
  }
  return reactor;
}

void PrefillNodeService::WorkerLoop() {
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      job = std::move(queue_.front());
      queue_.erase(queue_.begin());
    }
    absl::StatusOr<kvwire::v1::GenerateReply> result =
        Handle(*job->request, job->received, job->context->deadline(), job->context);
    if (result.ok()) *job->reply = *std::move(result);
    job->reactor->Finish(transport::ToGrpcStatus(result.status()));
  }
}

absl::StatusOr<kvwire::v1::GenerateReply> PrefillNodeService::Handle(
    const kvwire::v1::GenerateRequest& request, Clock::time_point received,
    std::chrono::system_clock::time_point deadline, const grpc::CallbackServerContext* context) {
  if (deadline == std::chrono::system_clock::time_point::max()) {
    deadline = std::chrono::system_clock::now() + options_.default_timeout;
  }
  auto alive = [&]() -> absl::Status {
    if (std::chrono::system_clock::now() >= deadline) {
      return absl::DeadlineExceededError("deadline exceeded on the prefill node");
    }
    if (context != nullptr && context->IsCancelled()) return absl::CancelledError("cancelled");
    return absl::OkStatus();
  };
  const NodeModel& model = *options_.model;
  const engine::Engine& engine = *model.engine;

  // Everything the client can get wrong is checked before the model runs.
  auto config = ResolveCodec(request, options_.default_codec);
  if (!config.ok()) return config.status();
  if (auto gen = ToGenerateOptions(request.options(), 1); !gen.ok()) return gen.status();
  auto prompt = BuildPrompt(model, request);
  if (!prompt.ok()) return prompt.status();
  const int T = static_cast<int>(prompt->token_ids.size());
  const int64_t max_positions = engine.config().max_position_embeddings;
  if (T < 2) {
    return absl::InvalidArgumentError(
        "prompt must have at least 2 tokens (the cache covers all but the last)");
  }
  if (T >= max_positions) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", T,
                                                   " tokens is too long: the model's "
                                                   "max_position_embeddings is ",
                                                   max_positions));
  }
  const int cached = T - 1;
  const std::span<const int32_t> cache_ids(prompt->token_ids.data(), cached);

  engine::PrefillOptions prefill_options;
  kvcodec::SelectionConfig& selection = config->selection;
  switch (selection.method) {
    case kvcodec::SelectionMethod::kSnapKV:
    case kvcodec::SelectionMethod::kAnchorRule:
      prefill_options.snapkv_window = std::max(1, selection.window);
      break;
    case kvcodec::SelectionMethod::kQ2C: {
      const int begin = prompt->question_begin;
      const int end = std::min(prompt->question_end, cached);
      if (begin < 0 || begin >= end) {
        return absl::InvalidArgumentError(
            "Q2C selection needs a question span that the cache covers (a question of at least "
            "2 tokens)");
      }
      prefill_options.question_begin = begin;
      prefill_options.question_end = end;
      selection.protect_begin = begin;
      selection.protect_end = end;
      break;
    }
    case kvcodec::SelectionMethod::kH2O:
      prefill_options.accumulated_scores = true;
      break;
    default:
      break;
  }

  if (absl::Status s = alive(); !s.ok()) return s;
  const Clock::time_point prefill_start = Clock::now();
  auto prefill = engine.Prefill(cache_ids, prefill_options);
  if (!prefill.ok()) return prefill.status();
  const double prefill_seconds = SecondsSince(prefill_start);
  if (absl::Status s = alive(); !s.ok()) return s;

  const Clock::time_point encode_start = Clock::now();
  const kvcodec::ImportanceScores* scores = nullptr;
  if (prefill->window_scores) scores = &*prefill->window_scores;
  if (prefill->question_scores) scores = &*prefill->question_scores;
  if (prefill->accumulated_scores) scores = &*prefill->accumulated_scores;
  auto kept = kvcodec::Select(selection, prefill->shape, scores, cache_ids);
  if (!kept.ok()) return kept.status();
  auto encoder = kvcodec::FrameEncoder::Create(prefill->shape, *config, model.fingerprint,
                                               prefill->positions);
  if (!encoder.ok()) return encoder.status();
  const std::vector<kvcodec::LayerView> views = prefill->layer_views();
  std::vector<uint8_t> frame = (*encoder)->Header();
  for (int c = 0; c < (*encoder)->num_chunks(); ++c) {
    const auto [first, count] = (*encoder)->chunk_layers(c);
    auto bytes = (*encoder)->EncodeChunk(
        c, std::span(views).subspan(first, count),
        std::span<const std::vector<std::vector<int32_t>>>(kept->kept).subspan(first, count));
    if (!bytes.ok()) return bytes.status();
    frame.insert(frame.end(), bytes->begin(), bytes->end());
  }
  const std::vector<uint8_t> trailer = (*encoder)->Trailer();
  frame.insert(frame.end(), trailer.begin(), trailer.end());
  const kvcodec::ByteAccounting& accounting = (*encoder)->accounting();
  const double encode_seconds = SecondsSince(encode_start);
  // Release the uncompressed cache before the (possibly long) remote call.
  prefill->keys.clear();
  prefill->values.clear();

  kvwire::v1::UploadHeader header;
  header.set_request_id(request.request_id().empty()
                            ? absl::StrCat("req-", std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                       received.time_since_epoch())
                                                       .count())
                            : request.request_id());
  header.set_model_fingerprint(model.fingerprint);
  *header.mutable_options() = request.options();
  header.set_prompt_tokens(cached);
  header.add_suffix_token_ids(prompt->token_ids.back());
  header.set_frame_bytes(frame.size());
  kvwire::v1::RequestStats* stats = header.mutable_prefill_stats();
  stats->set_raw_bytes(accounting.raw_bytes);
  stats->set_wire_bytes(frame.size());
  stats->set_bits_per_element(accounting.elements ? 8.0 * frame.size() / accounting.elements : 0);
  stats->set_kept_fraction(accounting.kept_fraction());
  stats->set_prefill_seconds(prefill_seconds);
  stats->set_encode_seconds(encode_seconds);
  stats->set_prompt_tokens(T);

  if (absl::Status s = alive(); !s.ok()) return s;
  const double before_send = SecondsSince(received);
  kvwire::v1::GenerateReply reply;
  absl::Status sent = transport::SendFrame(*decode_stub_, header, frame,
                                           std::min(options_.slice_bytes, transport::kMaxSliceBytes),
                                           deadline, &reply);
  if (!sent.ok()) {
    return absl::Status(sent.code(), absl::StrCat("decode node: ", sent.message()));
  }
  // The decode node merged our stats with its own; make sure the prefill-side ones survive and
  // turn its first-token time (from the start of its generation) into one from our request.
  kvwire::v1::RequestStats* out = reply.mutable_stats();
  out->set_prefill_seconds(prefill_seconds);
  out->set_encode_seconds(encode_seconds);
  out->set_raw_bytes(accounting.raw_bytes);
  out->set_wire_bytes(frame.size());
  out->set_bits_per_element(stats->bits_per_element());
  out->set_kept_fraction(accounting.kept_fraction());
  out->set_prompt_tokens(T);
  out->set_first_token_seconds(before_send + out->transfer_seconds() + out->first_token_seconds());
  reply.set_request_id(header.request_id());
  if (reply.codec_config().empty()) reply.set_codec_config(config->ToString());
  return reply;
}

}  // namespace kvwire::nodes
