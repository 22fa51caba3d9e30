#include "server/scout/prompt_service.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/nodes/engine_consumer.h"
#include "server/scout/index_coding.h"
#include "server/scout/token_selection.h"
#include "server/transport/decode_service.h"
#include "server/transport/security.h"

namespace kvwire::scout {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The prefill's rows at `kept`, for every layer and KV head: the cache the scout asked for.
std::vector<kvcodec::DecodedLayer> GatherKept(const engine::PrefillResult& prefill,
                                              const std::vector<int32_t>& kept) {
  const kvcodec::CacheShape& s = prefill.shape;
  const size_t row = static_cast<size_t>(s.head_dim) * kvcodec::DTypeSize(s.dtype);
  std::vector<kvcodec::DecodedLayer> layers(s.num_layers);
  for (int l = 0; l < s.num_layers; ++l) {
    kvcodec::DecodedLayer& out = layers[l];
    out.layer = l;
    out.kept.assign(s.num_kv_heads, kept);
    for (int h = 0; h < s.num_kv_heads; ++h) {
      for (auto [src, dst] : {std::pair{&prefill.keys[l], &out.keys},
                              std::pair{&prefill.values[l], &out.values}}) {
        kvcodec::ByteBuffer buf(kept.size() * row);
        const uint8_t* head = src->data() + static_cast<size_t>(h) * s.num_tokens * row;
        for (size_t i = 0; i < kept.size(); ++i) {
          std::memcpy(buf.data() + i * row, head + static_cast<size_t>(kept[i]) * row, row);
        }
        dst->push_back(std::move(buf));
      }
    }
  }
  return layers;
}

}  // namespace

PromptNodeService::PromptNodeService(PromptServiceOptions options)
    : options_(std::move(options)), queue_(options_.workers, options_.max_queued) {}

grpc::ServerUnaryReactor* PromptNodeService::Generate(grpc::CallbackServerContext* context,
                                                      const kvwire::v1::TokenUpload* upload,
                                                      kvwire::v1::GenerateReply* reply) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status auth = transport::CheckBearer(*context, options_.auth_token); !auth.ok()) {
    reactor->Finish(transport::ToGrpcStatus(auth));
    return reactor;
  }
  const absl::Status posted = queue_.Post([this, context, upload, reply, reactor] {
    absl::StatusOr<kvwire::v1::GenerateReply> result = Handle(*upload, transport::CallInterrupt(context));
    if (result.ok()) *reply = *std::move(result);
    reactor->Finish(transport::ToGrpcStatus(result.status()));
  });
  if (!posted.ok()) {
    reactor->Finish(transport::ToGrpcStatus(
        absl::Status(posted.code(), absl::StrCat("prompt node ", posted.message()))));
  }
  return reactor;
}

absl::StatusOr<kvwire::v1::GenerateReply> PromptNodeService::Handle(
    const kvwire::v1::TokenUpload& upload, const transport::Interrupt& interrupt) const {
  const Clock::time_point start = Clock::now();
  const nodes::NodeModel& model = *options_.model;
  const int64_t max_positions = model.engine->config().max_position_embeddings;
  auto ids = DecodeTokenIds(upload.token_ids(), max_positions);
  if (!ids.ok()) return ids.status();
  const int T = static_cast<int>(ids->size());
  if (T < 2) return absl::InvalidArgumentError(absl::StrCat("prompt of ", T, " tokens; need 2"));
  if (T >= max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", T, " tokens leaves no room to generate (max_position_embeddings ",
        max_positions, ")"));
  }
  const int cached = T - 1;
  std::vector<int32_t> kept;
  if (upload.kept_positions().empty()) {
    for (int t = 0; t < cached; ++t) kept.push_back(t);
  } else {
    auto decoded = DecodePositions(upload.kept_positions(), cached);
    if (!decoded.ok()) return decoded.status();
    kept = *std::move(decoded);
    if (kept.empty()) return absl::InvalidArgumentError("the scout kept no position");
  }
  const std::span<const int32_t> cached_ids(ids->data(), cached);
  std::optional<kvcodec::SelectionConfig> rule;
  if (!upload.selection_config().empty()) {
    auto parsed = kvcodec::CodecConfig::Parse(upload.selection_config());
    if (!parsed.ok()) return parsed.status();
    rule = parsed->selection;
    // A rule this node cannot apply to its own scores would otherwise fail after the prefill.
    if (absl::Status s = CheckSelection(*rule, upload.question_begin(), upload.question_end(),
                                        cached_ids);
        !s.ok()) {
      return s;
    }
  }
  const modelio::ModelConfig& mc = model.engine->config();
  kvcodec::FrameInfo info;
  info.shape = {.num_layers = static_cast<int>(mc.num_hidden_layers),
                .num_kv_heads = static_cast<int>(mc.num_key_value_heads),
                .head_dim = static_cast<int>(mc.head_dim),
                .num_tokens = cached,
                .dtype = model.engine->cache_dtype()};
  kvwire::v1::UploadHeader header;
  header.set_request_id(upload.request_id());
  *header.mutable_options() = upload.options();
  header.set_prompt_tokens(cached);
  header.add_suffix_token_ids((*ids)[cached]);
  nodes::EngineConsumer consumer(model,
                                 {.default_max_new_tokens = options_.default_max_new_tokens});
  // The consumer's own checks (generation options above all), before the budget and the
  // prefill rather than after them.
  if (absl::Status s = consumer.CheckUpload(info, header); !s.ok()) return s;
  if (absl::Status s = interrupt(); !s.ok()) return s;

  const uint64_t cache_bytes = 2ull * static_cast<uint64_t>(mc.num_hidden_layers) *
                               static_cast<uint64_t>(mc.num_key_value_heads) *
                               static_cast<uint64_t>(mc.head_dim) * static_cast<uint64_t>(cached) *
                               kvcodec::DTypeSize(model.engine->cache_dtype());
  transport::CacheReservation reservation;
  if (absl::Status s = transport::CacheReservation::Make(options_.cache_budget.get(), cache_bytes,
                                                         &reservation);
      !s.ok()) {
    return s;
  }
  engine::PrefillOptions prefill_options;
  if (rule) {
    prefill_options = ScoringPrefillOptions(*rule, cached, upload.question_begin(),
                                            upload.question_end());
  }
  prefill_options.interrupt = interrupt;  // a cancelled or expired request stops within a layer
  auto prefill = model.engine->Prefill(cached_ids, prefill_options);
  if (!prefill.ok()) return prefill.status();
  const double prefill_seconds = SecondsSince(start);
  double overlap = 1.0;
  if (rule) {
    auto own = SelectPositions(*rule, *prefill, upload.question_begin(), upload.question_end(),
                               cached_ids);
    if (!own.ok()) return own.status();
    overlap = Overlap(kept, *own);
  }

  info.shape = prefill->shape;
  info.positions = prefill->positions;
  info.config_text = upload.selection_config().empty() ? "text" : upload.selection_config();
  info.model_fingerprint = model.fingerprint;
  std::vector<kvcodec::DecodedLayer> layers = GatherKept(*prefill, kept);
  const uint64_t full_elements = prefill->shape.num_elements();
  prefill->keys.clear();
  prefill->values.clear();
  if (absl::Status s = interrupt(); !s.ok()) return s;

  auto reply = consumer.Consume(info, std::move(layers), header, interrupt);
  if (!reply.ok()) return reply.status();

  kvwire::v1::RequestStats* stats = reply->mutable_stats();
  const uint64_t wire = upload.ByteSizeLong();
  stats->set_raw_bytes(full_elements * 2);
  stats->set_wire_bytes(wire);
  stats->set_bits_per_element(full_elements ? 8.0 * wire / full_elements : 0.0);
  stats->set_kept_fraction(static_cast<double>(kept.size()) / cached);
  stats->set_prefill_seconds(prefill_seconds);
  stats->set_scout_seconds(upload.edge_stats().scout_seconds());
  stats->set_selection_overlap(overlap);
  stats->set_num_layers(prefill->shape.num_layers);
  stats->set_num_tokens(static_cast<int>(kept.size()));
  stats->set_first_token_seconds(stats->first_token_seconds() + prefill_seconds);
  reply->set_codec_config(info.config_text);
  reply->set_model_fingerprint(model.fingerprint);
  return reply;
}

}  // namespace kvwire::scout
