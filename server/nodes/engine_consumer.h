// The decode node's generator: turns a verified, rebuilt kvcodec frame plus its UploadHeader into
// a GenerateReply.
//
// Prefill/decode token contract (both nodes in this folder follow it):
//   * the prompt has T >= 2 tokens; the prefill node runs the model on the first T-1 of them
//     and ships that cache (possibly pruned by selection);
//   * UploadHeader.prompt_tokens = T-1, the prompt tokens the cache covers before selection
//     (the position the suffix continues from);
//   * UploadHeader.suffix_token_ids = the prompt tokens the cache does not cover, in order
//     (the prefill node sends exactly one: the last prompt token). It must not be empty: the
//     decode node feeds them with DecodeSession::Step at positions T-1, T, ... and the logits of
//     the last one start generation. The prefill node therefore never needs to ship logits, and
//     the first generated token is computed entirely on the decode node from the rebuilt cache.
//   * RequestStats.prompt_tokens = prompt_tokens + suffix size (= T).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/kvwire.pb.h"
#include "server/engine/generate.h"
#include "server/nodes/model.h"
#include "server/shadow/shadow_runner.h"
#include "server/transport/decode_service.h"

namespace kvwire::nodes {

// GenerationOptions -> engine::GenerateOptions (without eos ids or detokenizer).
// max_new_tokens 0 -> `default_max_new_tokens`; top_p 0 -> 1 (disabled). InvalidArgument for a
// negative max_new_tokens, temperature or top_k, a top_p outside [0, 1], NaN, or an empty stop
// string.
absl::StatusOr<engine::GenerateOptions> ToGenerateOptions(const kvwire::v1::GenerationOptions& options,
                                                          int default_max_new_tokens);

kvwire::v1::FinishReason ToFinishReason(const std::string& reason);

struct EngineConsumerOptions {
  // Used when the request's max_new_tokens is 0.
  int default_max_new_tokens = 128;
  // Not owned; may be null (no shadow passes). Uploads whose header carries a ShadowRequest
  // hand their rebuilt cache, prompt ids and generated tokens to it once generation is done.
  shadow::ShadowRunner* shadow = nullptr;
};

class EngineConsumer final : public transport::CacheConsumer {
 public:
  // `model` is not owned and must outlive the consumer. Thread-safe: the decode service may run
  // several consumers at once (each builds its own DecodeSession).
  EngineConsumer(const NodeModel& model, EngineConsumerOptions options = {});

  // Builds a DecodeSession from the frame (prompt_length = header.prompt_tokens, positions =
  // info.positions), feeds header.suffix_token_ids and generates. InvalidArgument for bad
  // generation options, an empty suffix, or ids outside the vocabulary; InvalidArgument from
  // DecodeSession::Create when the frame's shape does not fit the model; other engine errors as
  // they come. Stats: first_token_seconds (from Consume's start, i.e. the session build, to the
  // first generated token; the prefill node adds the time before it), tokens_per_second (after
  // the first token), prompt_tokens, generated_tokens. rebuild_seconds is the transport's
  // (verifying and dequantizing while the frame streams in).
  //
  // Shadow pass (header.shadow set and options.shadow given): the rebuilt layers are kept
  // instead of freed once the session holds its copy, and are submitted with the generated
  // tokens after generation has finished; Submit() never waits (a full queue drops the pass), so
  // the reply is complete and returned without any shadow work on this thread. A shadow pass's
  // problems never change the reply.
  //
  // `interrupt` is asked before every forward pass (suffix tokens and generated ones); its
  // non-OK status is returned at once and nothing is submitted for shadowing.
  // The checks Consume starts with, on the frame header alone (the decode service calls it
  // before the transfer): generation options, the suffix, the prompt length, and a cache shape
  // this model can decode from. InvalidArgument otherwise.
  absl::Status CheckUpload(const kvcodec::FrameInfo& info,
                           const kvwire::v1::UploadHeader& header) const override;

  absl::StatusOr<kvwire::v1::GenerateReply> Consume(const kvcodec::FrameInfo& info,
                                                    std::vector<kvcodec::DecodedLayer> layers,
                                                    const kvwire::v1::UploadHeader& header,
                                                    const transport::Interrupt& interrupt) override;

 private:
  // CheckUpload's checks; on success the request's generation options.
  absl::StatusOr<engine::GenerateOptions> CheckedOptions(const kvcodec::FrameInfo& info,
                                                         const kvwire::v1::UploadHeader& header) const;
  void SubmitShadow(const kvcodec::FrameInfo& info, std::vector<kvcodec::DecodedLayer> layers,
                    const kvwire::v1::UploadHeader& header,
                    const std::vector<int32_t>& generated) const;

  const NodeModel& model_;
  const EngineConsumerOptions options_;
};

}  // namespace kvwire::nodes
