// PromptNode: the big model's end of the scout and text paths. It decodes a TokenUpload's ids and
// kept positions, prefills the prompt with its own model, keeps only those positions of the
// cache (all of them on the text path) and generates, following the decode node's token contract
// (server/nodes/engine_consumer.h: the cache covers the first T-1 tokens, the last is fed).
//
// It also scores the scout's selection rule with its own attention and reports the overlap of
// the two kept sets (RequestStats.selection_overlap), so operators see how well the scout
// stands in for the big model.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "proto/kvwire.grpc.pb.h"
#include "server/nodes/model.h"
#include "server/transport/cache_budget.h"
#include "server/transport/decode_service.h"
#include "server/scout/work_queue.h"

namespace kvwire::scout {

struct PromptServiceOptions {
  const nodes::NodeModel* model = nullptr;  // not owned; outlives the service
  int workers = 2;
  // Requests that may wait for a worker; more are refused at once with RESOURCE_EXHAUSTED
  // (as PrefillServiceOptions::max_queued). 0: no limit.
  int max_queued = 64;
  int default_max_new_tokens = 128;
  // Non-empty: calls must carry this bearer token (server/transport/security.h).
  std::string auth_token;
  // The node's cache budget, shared with its DecodeNode service (may be null: no limit). Each
  // request reserves its full cache (every element in the engine's dtype) before the prefill;
  // beyond the limit it fails with RESOURCE_EXHAUSTED.
  std::shared_ptr<transport::CacheBudget> cache_budget;
};

class PromptNodeService final : public kvwire::v1::PromptNode::CallbackService {
 public:
  explicit PromptNodeService(PromptServiceOptions options);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const kvwire::v1::TokenUpload* upload,
                                     kvwire::v1::GenerateReply* reply) override;

  // The whole request, synchronously. Everything the upload can get wrong (ids, positions,
  // selection config, generation options) is checked before the cache budget is reserved or
  // the model runs. `interrupt` (a call's transport::CallInterrupt) is asked before the
  // reservation, before every layer of the prefill, after it and before every decode step;
  // its status ends the request and frees the reservation.
  absl::StatusOr<kvwire::v1::GenerateReply> Handle(const kvwire::v1::TokenUpload& upload,
                                                   const transport::Interrupt& interrupt) const;

 private:
  const PromptServiceOptions options_;
  WorkQueue queue_;  // last member: joined first, while the options are still alive
};

}  // namespace kvwire::scout
