#include "server/scout/scout_service.h"

#include <condition_variable>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "server/nodes/prefill_service.h"
#include "server/scout/index_coding.h"
#include "server/scout/token_selection.h"
#include "server/transport/decode_service.h"
#include "server/transport/frame_upload.h"
#include "server/transport/security.h"

namespace kvwire::scout {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace

ScoutNodeService::ScoutNodeService(ScoutServiceOptions options)
    : options_(std::move(options)),
      stub_(kvwire::v1::PromptNode::NewStub(options_.prompt_channel)),
      queue_(options_.workers, options_.max_queued) {}

grpc::ServerUnaryReactor* ScoutNodeService::Generate(grpc::CallbackServerContext* context,
                                                     const kvwire::v1::GenerateRequest* request,
                                                     kvwire::v1::GenerateReply* reply) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  metrics::NodeMetrics* m = options_.metrics;
  if (absl::Status auth = transport::CheckBearer(*context, options_.auth_token); !auth.ok()) {
    if (m != nullptr) m->CountRequest(auth.code());
    reactor->Finish(transport::ToGrpcStatus(auth));
    return reactor;
  }
  auto in_flight = std::make_shared<metrics::NodeMetrics::Scoped>();
  if (m != nullptr) *in_flight = m->TrackRequest();
  const absl::Status posted = queue_.Post([this, context, request, reply, reactor, m, in_flight] {
    absl::StatusOr<kvwire::v1::GenerateReply> result =
        Handle(*request, context->deadline(), transport::CallInterrupt(context));
    if (m != nullptr) {
      m->CountRequest(result.status().code());
      if (result.ok()) {
        m->ObserveTimeToFirstToken(result->stats().first_token_seconds());
        m->AddTokens(result->stats().prompt_tokens(), 0);
      }
    }
    if (result.ok()) *reply = *std::move(result);
    in_flight->Release();
    reactor->Finish(transport::ToGrpcStatus(result.status()));
  });
  if (!posted.ok()) {
    if (m != nullptr) m->CountRequest(posted.code());
    in_flight->Release();
    reactor->Finish(transport::ToGrpcStatus(
        absl::Status(posted.code(), absl::StrCat("scout node ", posted.message()))));
  }
  return reactor;
}

absl::StatusOr<kvwire::v1::GenerateReply> ScoutNodeService::Handle(
    const kvwire::v1::GenerateRequest& request, std::chrono::system_clock::time_point deadline,
    const transport::Interrupt& interrupt) const {
  const Clock::time_point start = Clock::now();
  // A job that waited in the queue past its deadline, or whose client left, does no work.
  if (absl::Status s = interrupt(); !s.ok()) return s;
  const nodes::NodeModel& model = *options_.model;
  auto codec = nodes::ResolveCodec(request, options_.default_codec, options_.presets);
  if (!codec.ok()) return codec.status();
  auto prompt = nodes::BuildPrompt(model, request);
  if (!prompt.ok()) return prompt.status();
  const int T = static_cast<int>(prompt->token_ids.size());
  if (T < 2) return absl::InvalidArgumentError("the prompt needs at least 2 tokens");
  const int64_t max_positions = model.engine->config().max_position_embeddings;
  if (T >= max_positions) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", T, " tokens is too long (max ",
                                                   max_positions - 1, ")"));
  }
  if (request.options().max_new_tokens() < 0) {
    return absl::InvalidArgumentError("max_new_tokens must be >= 0");
  }

  kvwire::v1::TokenUpload upload;
  upload.set_request_id(request.request_id());
  *upload.mutable_options() = request.options();
  upload.set_question_begin(prompt->question_begin);
  upload.set_question_end(prompt->question_end);
  upload.set_scout_fingerprint(model.fingerprint);
  auto ids = EncodeTokenIds(prompt->token_ids);
  if (!ids.ok()) return ids.status();
  upload.set_token_ids(*std::move(ids));

  const kvcodec::SelectionConfig& rule = codec->config.selection;
  if (rule.method != kvcodec::SelectionMethod::kKeepAll) {
    const int cached = T - 1;
    const std::span<const int32_t> cached_ids(prompt->token_ids.data(), cached);
    const Clock::time_point prefill_start = Clock::now();
    engine::PrefillOptions prefill_options =
        ScoringPrefillOptions(rule, cached, prompt->question_begin, prompt->question_end);
    prefill_options.interrupt = interrupt;  // stops within a layer
    auto prefill = model.engine->Prefill(cached_ids, prefill_options);
    if (!prefill.ok()) return prefill.status();
    const Clock::time_point select_start = Clock::now();
    if (options_.metrics != nullptr) {
      options_.metrics->ObserveStage(
          metrics::Stage::kPrefill,
          std::chrono::duration<double>(select_start - prefill_start).count());
    }
    auto kept = SelectPositions(rule, *prefill, prompt->question_begin, prompt->question_end,
                                cached_ids);
    if (!kept.ok()) return kept.status();
    if (options_.metrics != nullptr) {
      options_.metrics->ObserveStage(
          metrics::Stage::kSelection,
          std::chrono::duration<double>(Clock::now() - select_start).count());
    }
    auto coded = EncodePositions(*kept, cached);
    if (!coded.ok()) return coded.status();
    upload.set_kept_positions(*std::move(coded));
    kvcodec::CodecConfig selection_only;
    selection_only.selection = rule;
    upload.set_selection_config(selection_only.ToString());
  }
  upload.mutable_edge_stats()->set_scout_seconds(
      std::chrono::duration<double>(Clock::now() - start).count());

  grpc::ClientContext call;
  if (!options_.auth_token.empty()) {
    call.AddMetadata(transport::kAuthorizationMetadata, transport::BearerValue(options_.auth_token));
  }
  call.set_deadline(std::min(deadline, std::chrono::system_clock::now() + options_.default_timeout));
  kvwire::v1::GenerateReply reply;
  // The upload is one message: an emulated link delays it by its whole serialization time.
  const Clock::time_point upload_start = Clock::now();
  transport::LinkPacer(options_.link_bits_per_second).Pace(upload.ByteSizeLong());
  const double upload_seconds = std::chrono::duration<double>(Clock::now() - upload_start).count();
  if (options_.metrics != nullptr) {
    options_.metrics->ObserveStage(metrics::Stage::kTransfer, upload_seconds);
  }
  if (absl::Status s = interrupt(); !s.ok()) return s;
  // Asynchronous, so this worker can watch its own call meanwhile: the big node's call only
  // copies the deadline, and a client's cancel would otherwise leave that node generating (and
  // holding a worker and cache memory) for nobody.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub_->async()->Generate(&call, &upload, &reply, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = std::move(s);
    done = true;
    cv.notify_one();
  });
  absl::Status stopped;
  {
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, kInterruptPoll, [&] { return done; })) {
      if (!stopped.ok()) continue;
      // Unlocked: TryCancel may run the callback, which takes `mu`, on this very thread.
      lock.unlock();
      stopped = interrupt();
      if (!stopped.ok()) call.TryCancel();  // the callback still comes, and must be waited for
      lock.lock();
    }
  }
  if (!stopped.ok()) return stopped;
  if (!status.ok()) return FromGrpc(status);
  reply.mutable_stats()->set_upload_seconds(upload_seconds);
  // The big node's first-token time starts at its own receipt; add the edge's share.
  kvwire::v1::RequestStats* stats = reply.mutable_stats();
  stats->set_first_token_seconds(stats->first_token_seconds() + upload.edge_stats().scout_seconds() +
                                 upload_seconds);
  return reply;
}

}  // namespace kvwire::scout
