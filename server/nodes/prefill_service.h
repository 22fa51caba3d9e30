// The PrefillNode gRPC service (callback API): tokenizes the prompt, prefills it, selects and
// encodes the KV cache with kvcodec, streams the frame to a DecodeNode and relays its reply
// with the prefill-side statistics added.
//
// Streaming: the upload opens before the model runs; as the engine finishes each layer
// (engine::PrefillOptions::on_layer) a LayerEncoder selects and encodes it on its own thread and
// every frame chunk is sent as soon as its layers are encoded (transport::FrameUpload), so
// prefill, encoding, transfer and the decode node's rebuild overlap. RequestStats.upload_seconds
// and overlap_seconds (also in the "request_done" log line) say how much. With chunked prefill a
// layer is final only during the prompt's last chunk, which bounds the overlap.
//
// Rate control (GenerateRequest.rate_control): with a quality ladder loaded, the node picks
// the codec per request from the prompt's token count (ChooseRung below) and reports the
// choice in GenerateReply.rate_decision; metrics label such requests "ladder:<rung>".
//
// Token contract with the decode node: see engine_consumer.h (the cache covers the prompt's
// first T-1 tokens; the last token travels in UploadHeader.suffix_token_ids).
//
// Prompt: chat `messages` are rendered with the model's chat template (add_generation_prompt)
// and tokenized with special tokens parsed; otherwise the prompt is context + "\n" + question
// (just the one that is set if only one is), tokenized as plain text (special-token spellings
// in user text are not matched), with the BOS id prepended when tokenizer_config.json says
// add_bos_token.
//
// Q2C's question span: for (context, question) prompts, the tokens after the longest common
// prefix of the tokenization of context + "\n" and of the whole prompt; for chat prompts, the
// tokens after the common prefix with the rendering of all messages but the last (the whole
// prompt if there is one message; also the whole prompt for a question without context). The
// span (clipped to the cache's T-1 tokens) is protected, so Q2C needs context before it.
//
// Status codes: UNAUTHENTICATED without the node's bearer token (when it has one);
// INVALID_ARGUMENT for an unknown preset or bad codec config text, both messages
// and context/question set, an empty prompt, a prompt of fewer than 2 tokens or with no room to
// generate (T >= max_position_embeddings), invalid UTF-8 that reached the prompt builder, a
// Q2C request without a question span or without context before it, bad generation options,
// rate control together with a codec or with no usable limit; FAILED_PRECONDITION for rate
// control on a node without a ladder, or for chat messages when the model's chat template
// cannot be rendered; RESOURCE_EXHAUSTED when max_queued requests already wait; OUT_OF_RANGE
// when no rung fits and the request requires one; DEADLINE_EXCEEDED when the client's deadline
// passes; whatever the decode node answered (FAILED_PRECONDITION for another model,
// UNAVAILABLE when it is down, ...) is relayed as is. Invalid UTF-8 in a proto3 string field
// never gets this far (protobuf's own serializer refuses to send it): gRPC's C++ server fails
// to parse such a request and answers INTERNAL before any kvwire code runs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "client/eval/ladder.h"
#include "kvcodec/kvcodec.h"
#include "proto/kvwire.grpc.pb.h"
#include "proto/kvwire.pb.h"
#include "server/metrics/metrics.h"
#include "server/nodes/model.h"
#include "server/nodes/presets.h"
#include "server/shadow/sampler.h"

namespace kvwire::nodes {

// A tokenized prompt. `question_begin`/`question_end` delimit the question span in `token_ids`
// (both -1 when the prompt has none).
struct Prompt {
  std::vector<int32_t> token_ids;
  int question_begin = -1;
  int question_end = -1;
};

// Builds and tokenizes the request's prompt as described above (no length checks).
absl::StatusOr<Prompt> BuildPrompt(const NodeModel& model, const kvwire::v1::GenerateRequest& request);

// A request's codec and the `preset` label its metrics carry.
struct ResolvedCodec {
  kvcodec::CodecConfig config;
  // The preset's name when the codec was named (request preset or default), "custom" for
  // config text: labels stay bounded whatever clients send.
  std::string preset_label;
};

// The request's codec: its config text, else its preset, else `default_codec` (a preset name or
// config text). Names are looked up in `presets` first, then among kvcodec's built-ins.
// InvalidArgument when nothing parses.
absl::StatusOr<ResolvedCodec> ResolveCodec(const kvwire::v1::GenerateRequest& request,
                                           const std::string& default_codec,
                                           const PresetMap& presets = {});

struct PrefillServiceOptions {
  // Not owned; must outlive the service.
  const NodeModel* model = nullptr;
  // The decode node's channel (e.g. grpc::CreateChannel("host:port", ...)).
  std::shared_ptr<grpc::ChannelInterface> decode_channel;
  // Codec used when the request names none: a preset name or config text.
  std::string default_codec = "int4-rans";
  // Upload slice size (<= transport::kMaxSliceBytes).
  size_t slice_bytes = size_t{1} << 20;
  // Deadline for the decode call when the client set none.
  std::chrono::milliseconds default_timeout{std::chrono::minutes(10)};
  // Emulated link to the decode node (bits per second; 0: none): the upload is paced as an idle
  // link of this rate would deliver it (benchmarks of slow links).
  double link_bits_per_second = 0;
  // Non-empty: calls must carry this bearer token (UNAUTHENTICATED otherwise), and uploads to the
  // decode node carry it too (server/transport/security.h).
  std::string auth_token;
  // Requests worked on at once; more wait in a queue (the engine is CPU- or GPU-bound).
  int workers = 2;
  // Requests that may wait for a worker; more are refused at once with RESOURCE_EXHAUSTED
  // (each holds its prompt, up to 8 MiB, and a client past this depth would time out waiting
  // anyway). 0: no limit.
  int max_queued = 64;
  // Named presets (preset files) requests and `default_codec` may name.
  PresetMap presets;
  // Not owned; may be null. Counts calls by code, requests and upload streams in flight, bytes
  // and ratios by preset, the prefill / selection / encode stages, time to first token, tokens
  // and caches held.
  metrics::NodeMetrics* metrics = nullptr;
  // Share of requests (0..1), drawn independently per request, whose upload asks the decode
  // node for a shadow pass: UploadHeader.shadow carries the cached prompt's ids and the
  // preset (counted in kvwire_shadow_sampled_total). The sampler's seed; 0: random.
  double shadow_rate = 0;
  uint64_t shadow_seed = 0;
  // The quality ladder rate-controlled requests choose from (null: they fail with
  // FAILED_PRECONDITION), and the link rate their time-to-first-token targets assume when
  // neither the request nor link_bits_per_second gives one (0: none).
  std::shared_ptr<const eval::QualityLadder> ladder;
  double assumed_link_bits_per_second = 0;
};

// Rate control: the rung of `ladder` a request for `tokens` cached tokens gets. The budget is
// the tighter of rc.byte_budget and, with a time-to-first-token target, (target -
// other_seconds) * the link's bytes per second; the link is rc.link_mbps, else
// `link_bits_per_second`. InvalidArgument for neither limit, a target without any link rate,
// or bad numbers; OutOfRange when nothing fits and rc.require_fit.
absl::StatusOr<kvwire::v1::RateDecision> ChooseRung(const eval::QualityLadder& ladder,
                                                    const kvwire::v1::RateControl& rc,
                                                    int64_t tokens, double link_bits_per_second,
                                                    double other_seconds);

class PrefillNodeService final : public kvwire::v1::PrefillNode::CallbackService {
 public:
  explicit PrefillNodeService(PrefillServiceOptions options);
  // Stops the workers after the queued requests (shut the server down first).
  ~PrefillNodeService() override;

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const kvwire::v1::GenerateRequest* request,
                                     kvwire::v1::GenerateReply* reply) override;

  // The whole request, synchronously (what a worker runs), counted in the metrics and logged
  // as one "request_done" event. `received` is when the request arrived; `deadline` bounds the
  // decode call. The request id is request.request_id(), else the client's x-request-id
  // metadata, else a new random one; it travels to the decode node as x-request-id. Public for
  // tests and an in-process client.
  absl::StatusOr<kvwire::v1::GenerateReply> Handle(const kvwire::v1::GenerateRequest& request,
                                                   std::chrono::steady_clock::time_point received,
                                                   std::chrono::system_clock::time_point deadline,
                                                   const grpc::CallbackServerContext* context);

 private:
  struct Job;
  struct Trace;
  void WorkerLoop();
  absl::StatusOr<kvwire::v1::GenerateReply> Run(const kvwire::v1::GenerateRequest& request,
                                                std::chrono::steady_clock::time_point received,
                                                std::chrono::system_clock::time_point deadline,
                                                const grpc::CallbackServerContext* context,
                                                Trace& trace);

  const PrefillServiceOptions options_;
  std::unique_ptr<kvwire::v1::DecodeNode::Stub> decode_stub_;
  shadow::RequestSampler shadow_sampler_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Job>> queue_;  // FIFO (front = oldest)
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  // Recent prefill seconds per cached token (0 until the first request): rate control's
  // estimate of the time a time-to-first-token target must leave for the node's own work.
  std::atomic<double> prefill_seconds_per_token_{0};
};

}  // namespace kvwire::nodes
