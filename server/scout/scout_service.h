// ScoutNode: the edge end of the scout and text paths. For each GenerateRequest it tokenizes the
// prompt as the prefill node does (nodes::BuildPrompt), and
//   * scout path (the codec selects tokens: "select=q2c;keep=0.25", preset "scout-q2c25"...):
//     prefills the first T-1 tokens with its small model, scores them by the codec's selection
//     rule, sums the scores over the small model's layers and heads and keeps the top positions;
//   * text path (the codec keeps every token): skips the small model;
// then sends only the coded token ids and kept positions to a PromptNode on the big model's node
// and relays its reply, adding scout_seconds. Only selection is used from the codec: the big
// node's cache never crosses the link, so quantization does not apply on these paths.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/kvwire.grpc.pb.h"
#include "server/nodes/model.h"
#include "server/metrics/metrics.h"
#include "server/nodes/presets.h"
#include "server/scout/work_queue.h"
#include "server/transport/decode_service.h"

namespace kvwire::scout {

struct ScoutServiceOptions {
  const nodes::NodeModel* model = nullptr;  // the scout model; not owned
  std::shared_ptr<grpc::ChannelInterface> prompt_channel;  // the big node's PromptNode
  // SnapKV needs no question span, so it serves context-only prompts too; from the bundled
  // scout both SnapKV and Q2C keep 100% of full at 25% on passkey (docs/RESULTS.md, scout).
  std::string default_codec = "scout-snapkv25";
  nodes::PresetMap presets;
  std::chrono::milliseconds default_timeout{std::chrono::minutes(10)};
  int workers = 2;
  // Requests that may wait for a worker; more are refused at once with RESOURCE_EXHAUSTED
  // (as PrefillServiceOptions::max_queued). 0: no limit.
  int max_queued = 64;
  // Emulated link to the big node (bits per second; 0: none): the TokenUpload is held back for
  // its serialized size / rate before it is sent (transport::LinkPacer), for benchmarks.
  double link_bits_per_second = 0;
  // Not owned; may be null. Calls by code, requests in flight, the scout's prefill and
  // selection stages, the upload as "transfer", time to first token and prompt tokens.
  metrics::NodeMetrics* metrics = nullptr;
  // Non-empty: calls must carry this bearer token, and calls to the big node carry it too.
  std::string auth_token;
};

class ScoutNodeService final : public kvwire::v1::ScoutNode::CallbackService {
 public:
  explicit ScoutNodeService(ScoutServiceOptions options);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const kvwire::v1::GenerateRequest* request,
                                     kvwire::v1::GenerateReply* reply) override;

  // The whole request, synchronously; the big node's call gets `deadline`. `interrupt` (a
  // call's transport::CallInterrupt) is asked before any work, before every layer of the
  // scout's prefill and, while the big node works, every kInterruptPoll: its non-OK status
  // ends the request and cancels the big node's call, so that node stops working for nobody.
  absl::StatusOr<kvwire::v1::GenerateReply> Handle(const kvwire::v1::GenerateRequest& request,
                                                   std::chrono::system_clock::time_point deadline,
                                                   const transport::Interrupt& interrupt) const;

  // How often a waiting Handle asks its interrupt: the delay before a client's cancel reaches
  // the big node.
  static constexpr std::chrono::milliseconds kInterruptPoll{20};

 private:
  const ScoutServiceOptions options_;
  std::unique_ptr<kvwire::v1::PromptNode::Stub> stub_;
  WorkQueue queue_;
};

}  // namespace kvwire::scout
