#include "server/nodes/prefill_service.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <random>
#include <span>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/metrics/log.h"
#include "server/engine/engine.h"
#include "server/nodes/engine_consumer.h"
#include "server/nodes/layer_encoder.h"
#include "server/tokenizer/chat_template.h"
#include "server/transport/decode_service.h"
#include "server/transport/frame_receiver.h"
#include "server/transport/frame_upload.h"
#include "server/transport/security.h"

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

// Random, so ids from many prefill replicas do not collide in the logs.
std::string NewRequestId() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("req-%016x", rng());
}

std::string ClientMetadata(const grpc::CallbackServerContext* context, const char* key) {
  if (context == nullptr) return "";
  const auto& md = context->client_metadata();
  auto it = md.find(key);
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
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
    if (!model.chat_template_error.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("this model's chat template cannot be rendered (", model.chat_template_error,
                       "); send the prompt as context/question instead of messages"));
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
      // A question without context spans the whole prompt, a BOS included.
      prompt.question_begin =
          context.empty() ? 0 : static_cast<int>(CommonPrefix(*prefix_ids, prompt.token_ids));
      prompt.question_end = static_cast<int>(prompt.token_ids.size());
    }
  }
  if (prompt.token_ids.empty()) return absl::InvalidArgumentError("empty prompt (no tokens)");
  return prompt;
}

absl::StatusOr<ResolvedCodec> ResolveCodec(const kvwire::v1::GenerateRequest& request,
                                           const std::string& default_codec,
                                           const PresetMap& presets) {
  absl::StatusOr<kvcodec::CodecConfig> config;
  std::string what;
  std::string label = "custom";
  switch (request.codec_case()) {
    case kvwire::v1::GenerateRequest::kCodecConfig:
      what = absl::StrCat("codec config \"", request.codec_config(), "\"");
      config = kvcodec::CodecConfig::Parse(request.codec_config());
      break;
    case kvwire::v1::GenerateRequest::kCodecPreset:
      what = absl::StrCat("codec preset \"", request.codec_preset(), "\"");
      config = FindPreset(presets, request.codec_preset());
      label = request.codec_preset();
      break;
    default:
      what = absl::StrCat("default codec \"", default_codec, "\"");
      config = FindPreset(presets, default_codec);
      if (config.ok()) {
        label = default_codec;
      } else {
        config = kvcodec::CodecConfig::Parse(default_codec);
      }
      break;
  }
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", config.status().message()));
  }
  return ResolvedCodec{*std::move(config), std::move(label)};
}

absl::StatusOr<kvwire::v1::RateDecision> ChooseRung(const eval::QualityLadder& ladder,
                                                    const kvwire::v1::RateControl& rc,
                                                    int64_t tokens, double link_bits_per_second,
                                                    double other_seconds) {
  if (rc.byte_budget() == 0 && rc.ttft_target_seconds() == 0) {
    return absl::InvalidArgumentError(
        "rate control needs a byte budget or a time-to-first-token target");
  }
  if (!(rc.ttft_target_seconds() >= 0) || !std::isfinite(rc.ttft_target_seconds()) ||
      !(rc.link_mbps() >= 0) || !std::isfinite(rc.link_mbps())) {
    return absl::InvalidArgumentError(
        "ttft_target_seconds and link_mbps must be finite and not negative");
  }
  // The tighter of the two limits; a link budget is what crosses the link in the time the
  // target leaves after the node's own work.
  double budget = rc.byte_budget() > 0 ? static_cast<double>(rc.byte_budget()) : HUGE_VAL;
  if (rc.ttft_target_seconds() > 0) {
    const double link = rc.link_mbps() > 0 ? rc.link_mbps() * 1e6 : link_bits_per_second;
    if (!(link > 0)) {
      return absl::InvalidArgumentError(
          "a time-to-first-token target needs a link rate: set link_mbps, or start the node "
          "with --link-mbps or --assumed-link-mbps");
    }
    budget = std::min(budget, std::max(0.0, rc.ttft_target_seconds() - other_seconds) * link / 8);
  }
  auto choice = eval::PickRungForBudget(ladder, tokens, budget);
  if (!choice.ok()) return choice.status();
  const eval::LadderRung& rung = ladder.rungs[choice->index];
  if (!choice->fits && rc.require_fit()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "no ladder rung fits: the smallest (%s) needs %.0f bytes for %d tokens, the budget is "
        "%.0f", rung.name, choice->predicted_bytes, tokens, budget));
  }
  kvwire::v1::RateDecision d;
  d.set_rung(rung.name);
  d.set_codec_config(rung.codec);
  d.set_budget_bytes(budget);
  d.set_predicted_bytes(choice->predicted_bytes);
  d.set_fits(choice->fits);
  d.set_relative_score(rung.relative_score);
  return d;
}

struct PrefillNodeService::Job {
  grpc::CallbackServerContext* context;
  const kvwire::v1::GenerateRequest* request;
  kvwire::v1::GenerateReply* reply;
  grpc::ServerUnaryReactor* reactor;
  Clock::time_point received;
  metrics::NodeMetrics::Scoped in_flight;
};

// What Run() learned about a request, for the metrics and the log line, whatever its outcome.
struct PrefillNodeService::Trace {
  std::string request_id;
  std::string preset;
  double selection_seconds = 0;
};

PrefillNodeService::PrefillNodeService(PrefillServiceOptions options)
    : options_(std::move(options)),
      decode_stub_(kvwire::v1::DecodeNode::NewStub(options_.decode_channel)),
      shadow_sampler_(options_.shadow_rate, options_.shadow_seed) {
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
  if (absl::Status auth = transport::CheckBearer(*context, options_.auth_token); !auth.ok()) {
    if (options_.metrics != nullptr) options_.metrics->CountRequest(auth.code());
    reactor->Finish(transport::ToGrpcStatus(auth));
    return reactor;
  }
  auto job = std::make_unique<Job>(Job{context, request, reply, reactor, Clock::now(), {}});
  if (options_.metrics != nullptr) job->in_flight = options_.metrics->TrackRequest();
  bool full = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    full = options_.max_queued > 0 && queue_.size() >= static_cast<size_t>(options_.max_queued);
    if (!stopping_ && !full) {
      queue_.push_back(std::move(job));
    }
  }
  if (job && full) {
    if (options_.metrics != nullptr) options_.metrics->CountRequest(absl::StatusCode::kResourceExhausted);
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 absl::StrCat("prefill node busy: ", options_.max_queued,
                                              " requests are already waiting; retry later")));
  } else if (job) {
    if (options_.metrics != nullptr) options_.metrics->CountRequest(absl::StatusCode::kUnavailable);
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
    job->in_flight.Release();
    job->reactor->Finish(transport::ToGrpcStatus(result.status()));
  }
}

absl::StatusOr<kvwire::v1::GenerateReply> PrefillNodeService::Handle(
    const kvwire::v1::GenerateRequest& request, Clock::time_point received,
    std::chrono::system_clock::time_point deadline, const grpc::CallbackServerContext* context) {
  Trace trace;
  trace.request_id = request.request_id();
  if (trace.request_id.empty()) trace.request_id = ClientMetadata(context, metrics::kRequestIdMetadata);
  if (trace.request_id.empty()) trace.request_id = NewRequestId();
  absl::StatusOr<kvwire::v1::GenerateReply> result = Run(request, received, deadline, context, trace);

  const absl::StatusCode code = result.status().code();
  nlohmann::json fields = {{"role", "prefill"},
                           {"request_id", trace.request_id},
                           {"preset", trace.preset},
                           {"code", absl::StatusCodeToString(code)},
                           {"seconds", SecondsSince(received)}};
  if (result.ok()) {
    const kvwire::v1::RequestStats& st = result->stats();
    if (options_.metrics != nullptr) {
      options_.metrics->ObserveTimeToFirstToken(st.first_token_seconds());
      options_.metrics->AddTokens(st.prompt_tokens(), 0);  // the decode node counts generated ones
    }
    fields.update({{"prompt_tokens", st.prompt_tokens()},
                   {"generated_tokens", st.generated_tokens()},
                   {"raw_bytes", st.raw_bytes()},
                   {"wire_bytes", st.wire_bytes()},
                   {"bits_per_element", st.bits_per_element()},
                   {"kept_ratio", st.kept_fraction()},
                   {"prefill_seconds", st.prefill_seconds()},
                   {"selection_seconds", trace.selection_seconds},
                   {"encode_seconds", st.encode_seconds()},
                   {"upload_seconds", st.upload_seconds()},
                   {"overlap_seconds", st.overlap_seconds()},
                   {"transfer_seconds", st.transfer_seconds()},
                   {"rebuild_seconds", st.rebuild_seconds()},
                   {"first_token_seconds", st.first_token_seconds()}});
  } else {
    fields["message"] = result.status().message();
  }
  if (options_.metrics != nullptr) options_.metrics->CountRequest(code);
  metrics::LogEvent(result.ok() ? metrics::LogLevel::kInfo : metrics::LogLevel::kWarning,
                    "request_done", fields);
  return result;
}

absl::StatusOr<kvwire::v1::GenerateReply> PrefillNodeService::Run(
    const kvwire::v1::GenerateRequest& request, Clock::time_point received,
    std::chrono::system_clock::time_point deadline, const grpc::CallbackServerContext* context,
    Trace& trace) {
  metrics::NodeMetrics* const node_metrics = options_.metrics;
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
  const bool rate_controlled = request.has_rate_control();
  if (rate_controlled && request.codec_case() != kvwire::v1::GenerateRequest::CODEC_NOT_SET) {
    return absl::InvalidArgumentError("name a codec or ask for rate control, not both");
  }
  if (rate_controlled && options_.ladder == nullptr) {
    return absl::FailedPreconditionError(
        "rate control needs a quality ladder on the prefill node (serve prefill --ladder)");
  }
  auto resolved = ResolveCodec(request, options_.default_codec, options_.presets);
  if (!resolved.ok()) return resolved.status();
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
  std::optional<kvwire::v1::RateDecision> decision;
  if (rate_controlled) {
    const double link = options_.link_bits_per_second > 0 ? options_.link_bits_per_second
                                                          : options_.assumed_link_bits_per_second;
    auto chosen = ChooseRung(*options_.ladder, request.rate_control(), cached, link,
                             prefill_seconds_per_token_.load() * cached);
    if (!chosen.ok()) return chosen.status();
    auto rung_config = kvcodec::CodecConfig::Parse(chosen->codec_config());
    if (!rung_config.ok()) {
      return absl::InternalError(absl::StrCat("ladder rung ", chosen->rung(), ": ",
                                              rung_config.status().message()));
    }
    resolved->config = *std::move(rung_config);
    resolved->preset_label = absl::StrCat("ladder:", chosen->rung());
    decision = *std::move(chosen);
  }
  trace.preset = resolved->preset_label;
  kvcodec::CodecConfig* config = &resolved->config;
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
      if (begin == 0) {
        // The whole prompt would be the protected question: Q2C would keep every token.
        return absl::InvalidArgumentError(
            "Q2C selection needs context before the question: set context and question, or put "
            "the context in messages before the last one");
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

  // The cache's shape is known before the model runs, so the upload opens first: the header
  // travels while layer 0 is computed and each frame chunk follows as soon as its layers are
  // (prefill, encoding, transfer and the decode node's rebuild overlap).
  const modelio::ModelConfig& mc = engine.config();
  const kvcodec::CacheShape shape{.num_layers = static_cast<int>(mc.num_hidden_layers),
                                  .num_kv_heads = static_cast<int>(mc.num_key_value_heads),
                                  .head_dim = static_cast<int>(mc.head_dim),
                                  .num_tokens = cached,
                                  .dtype = engine.cache_dtype()};
  std::vector<int32_t> positions(cached);
  for (int t = 0; t < cached; ++t) positions[t] = t;

  kvwire::v1::UploadHeader header;
  header.set_request_id(trace.request_id);
  header.set_model_fingerprint(model.fingerprint);
  *header.mutable_options() = request.options();
  header.set_prompt_tokens(cached);
  header.add_suffix_token_ids(prompt->token_ids.back());
  if (shadow_sampler_.Sample()) {  // the decode node recomputes the full cache from the ids
    kvwire::v1::ShadowRequest* shadow = header.mutable_shadow();
    shadow->mutable_prompt_token_ids()->Assign(cache_ids.begin(), cache_ids.end());
    shadow->set_preset(trace.preset);
    if (node_metrics != nullptr) node_metrics->CountShadowSampled(trace.preset);
  }
  // frame_bytes stays 0: the frame is encoded while it is sent.
  kvwire::v1::RequestStats* stats = header.mutable_prefill_stats();
  stats->set_raw_bytes(shape.num_elements() * 2);
  stats->set_prompt_tokens(T);

  if (absl::Status s = alive(); !s.ok()) return s;
  metrics::NodeMetrics::Scoped stream;
  if (node_metrics != nullptr) stream = node_metrics->TrackStream();
  std::vector<std::pair<std::string, std::string>> metadata = {
      {metrics::kRequestIdMetadata, trace.request_id}, {transport::kPresetMetadata, trace.preset}};
  if (!options_.auth_token.empty()) {
    metadata.emplace_back(transport::kAuthorizationMetadata,
                          transport::BearerValue(options_.auth_token));
  }
  auto upload = transport::FrameUpload::Start(
      *decode_stub_, header,
      {.slice_bytes = std::min(options_.slice_bytes, transport::kMaxSliceBytes),
       .deadline = deadline,
       .link_bits_per_second = options_.link_bits_per_second,
       .metadata = std::move(metadata)});
  if (!upload.ok()) return upload.status();
  bool upload_ended = false;  // the decode node finished the call early (it rejected the upload)
  // The pipeline's wall clock starts before the header is handed to the upload: every write
  // (the header's too) then lies inside it, so the upload's share never exceeds it. Started at
  // the prefill instead, the header's write could fall before it and the overlap exceed
  // prefill + encode (by ~15 us, in 1 of 30 runs of the paced-link node test).
  const Clock::time_point pipeline_start = Clock::now();
  // Declared before the encoder, so it outlives the encoder's thread: that thread reads the
  // layers in place, and may still be reading one when the prefill fails part-way.
  engine::PrefillResult prefill;
  auto encoder = LayerEncoder::Start(shape, *config, model.fingerprint, positions, cache_ids,
                                     [&](std::vector<uint8_t> bytes) {
                                       if ((*upload)->Push(std::move(bytes))) return true;
                                       upload_ended = true;
                                       return false;
                                     });
  // Why the upload failed: the decode node's own status when it ended the call, else ours.
  auto abandon = [&](const absl::Status& ours) -> absl::Status {
    if (encoder.ok()) encoder->reset();  // joins the encoder thread
    if (upload_ended) {
      absl::Status theirs = (*upload)->Finish(nullptr);
      if (!theirs.ok()) {
        return absl::Status(theirs.code(), absl::StrCat("decode node: ", theirs.message()));
      }
    }
    (*upload)->Cancel();
    return ours;
  };
  if (!encoder.ok()) return abandon(encoder.status());
  prefill_options.on_layer = [&](const engine::PrefillLayer& layer) -> absl::Status {
    return (*encoder)->OnLayer(layer);
  };
  prefill_options.interrupt = alive;

  const Clock::time_point prefill_start = Clock::now();
  absl::Status prefilled = engine.PrefillInto(cache_ids, prefill_options, &prefill);
  const double prefill_seconds = SecondsSince(prefill_start);
  if (!prefilled.ok()) return abandon(prefilled);
  {
    // What rate control expects the next prompt's prefill to cost, per token (moving average).
    const double sample = prefill_seconds / cached;
    double old = prefill_seconds_per_token_.load();
    const double next = old == 0 ? sample : 0.8 * old + 0.2 * sample;
    prefill_seconds_per_token_.compare_exchange_strong(old, next);
  }
  metrics::NodeMetrics::CacheHold hold;
  if (node_metrics != nullptr) {
    node_metrics->ObserveStage(metrics::Stage::kPrefill, prefill_seconds);
    uint64_t cache_bytes = 0;
    for (const auto& k : prefill.keys) cache_bytes += k.size();
    for (const auto& v : prefill.values) cache_bytes += v.size();
    hold = node_metrics->HoldCache();
    hold.SetBytes(cache_bytes);
  }
  if (absl::Status s = (*encoder)->Finish(); !s.ok()) return abandon(s);
  const kvcodec::ByteAccounting& accounting = (*encoder)->accounting();
  const uint64_t frame_bytes = (*encoder)->frame_bytes();
  trace.selection_seconds = (*encoder)->selection_seconds();
  const double encode_seconds = (*encoder)->encode_seconds();
  // Release the uncompressed cache before waiting for the (possibly long) generation.
  prefill.keys.clear();
  prefill.values.clear();
  hold.Release();
  if (node_metrics != nullptr) {
    node_metrics->ObserveStage(metrics::Stage::kSelection, trace.selection_seconds);
    node_metrics->ObserveStage(metrics::Stage::kEncode, encode_seconds - trace.selection_seconds);
  }

  kvwire::v1::GenerateReply reply;
  absl::Status sent = (*upload)->Finish(&reply);
  stream.Release();
  if (!sent.ok()) {
    return absl::Status(sent.code(), absl::StrCat("decode node: ", sent.message()));
  }
  const Clock::time_point last_byte = (*upload)->last_write();
  const double upload_seconds = (*upload)->send_seconds();
  const double pipeline_seconds =
      std::chrono::duration<double>(last_byte - pipeline_start).count();
  const double overlap_seconds =
      std::max(0.0, prefill_seconds + encode_seconds + upload_seconds - pipeline_seconds);
  // The decode node merged our stats with its own; make sure the prefill-side ones survive and
  // turn its first-token time (from the start of its generation) into one from our request.
  kvwire::v1::RequestStats* out = reply.mutable_stats();
  out->set_prefill_seconds(prefill_seconds);
  out->set_encode_seconds(encode_seconds);
  out->set_upload_seconds(upload_seconds);
  out->set_overlap_seconds(overlap_seconds);
  out->set_raw_bytes(accounting.raw_bytes);
  out->set_wire_bytes(frame_bytes);
  out->set_bits_per_element(accounting.elements ? 8.0 * frame_bytes / accounting.elements : 0);
  out->set_kept_fraction(accounting.kept_fraction());
  out->set_prompt_tokens(T);
  out->set_first_token_seconds(
      std::chrono::duration<double>(last_byte - received).count() + out->first_token_seconds());
  reply.set_request_id(header.request_id());
  if (reply.codec_config().empty()) reply.set_codec_config(config->ToString());
  if (decision) *reply.mutable_rate_decision() = *std::move(decision);
  if (node_metrics != nullptr) {
    node_metrics->ObserveFrame(trace.preset,
                               {.raw_bytes = accounting.raw_bytes,
                                .wire_bytes = frame_bytes,
                                .elements = accounting.elements,
                                .kept_ratio = accounting.kept_fraction()},
                               /*with_ratios=*/true);
  }
  return reply;
}

}  // namespace kvwire::nodes
