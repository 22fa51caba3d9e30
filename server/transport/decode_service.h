// The DecodeNode gRPC service (callback API) and the matching client-side sender.
//
// Server: DecodeNodeService::Generate reads CacheUpload{header}, then CacheUpload{chunk}s, feeds
// the chunks to a FrameReceiver as they arrive (layers are verified and rebuilt while later ones
// are in flight) and, once the client half-closes after the frame's trailer, hands the frame to
// a CacheConsumer (the generation engine, attached later; this library does not depend on
// libtorch). The consumer runs on its own thread, never on a gRPC callback thread. The reply's
// statistics are filled with what the transport measured (bytes, bits per element, kept
// fraction, transfer and rebuild times) on top of the consumer's and the prefill node's.
//
// Status codes: see proto/kvwire.proto. Register the service on a grpc::ServerBuilder that went
// through ConfigureServerBuilder() so the receive message limit is the deliberate 8 MiB.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "kvcodec/kvcodec.h"
#include "proto/kvwire.grpc.pb.h"
#include "proto/kvwire.pb.h"
#include "server/metrics/metrics.h"
#include "server/transport/cache_budget.h"
#include "server/transport/frame_receiver.h"
#include "server/transport/idle_watchdog.h"

namespace kvwire::transport {

// gRPC metadata the prefill node sends with an upload: the request id (metrics::
// kRequestIdMetadata, "x-request-id") for the logs, and the name of the preset the frame was
// encoded with, for the decode node's per-preset byte counters.
inline constexpr char kPresetMetadata[] = "x-kvwire-preset";

// Asked by long-running work between steps: OK to go on, otherwise the status to stop with.
using Interrupt = std::function<absl::Status()>;

// The interrupt of a server call: CANCELLED once the client cancelled or went away,
// DEADLINE_EXCEEDED once the call's deadline has passed. `context` must outlive its use.
Interrupt CallInterrupt(const grpc::ServerContextBase* context);

// Consumes a fully received and verified frame. Implementations may block (generation); they
// run on a thread of their own. Called at most once per upload, and never for a bad upload.
// `interrupt` (never null) turns non-OK when the caller no longer waits for the reply; a
// consumer asks it between units of work (decode steps) and returns its status, so a cancelled
// request stops using the node's CPU and cache memory within one step.
class CacheConsumer {
 public:
  virtual ~CacheConsumer() = default;
  // Called once the frame header is verified, before any layer is rebuilt or memory reserved
  // for it: a non-OK status fails the upload right there (a shape this node's model cannot
  // use, bad generation options), instead of after the whole transfer.
  virtual absl::Status CheckUpload(const kvcodec::FrameInfo& /*info*/,
                                   const kvwire::v1::UploadHeader& /*header*/) const {
    return absl::OkStatus();
  }
  virtual absl::StatusOr<kvwire::v1::GenerateReply> Consume(
      const kvcodec::FrameInfo& info, std::vector<kvcodec::DecodedLayer> layers,
      const kvwire::v1::UploadHeader& header, const Interrupt& interrupt) = 0;
};

struct DecodeServiceOptions {
  // The model this node serves. Non-empty: frames (and upload headers) naming another model are
  // rejected with FAILED_PRECONDITION. Empty: the upload header's fingerprint, if any, is used.
  std::string model_fingerprint;
  kvcodec::DecodeLimits limits;
  // Not owned; must outlive the service. Null: reply with the frame's statistics only.
  CacheConsumer* consumer = nullptr;
  // Not owned; may be null. Counts calls by code, streams in flight, received bytes by preset,
  // the transfer / rebuild / decode stages, generated tokens and the caches held.
  metrics::NodeMetrics* metrics = nullptr;
  // Most bytes of rebuilt caches the node holds at once, over all uploads (0: no limit). Each
  // upload reserves its cache's full rebuilt size (every element in the frame's dtype) as soon
  // as the frame header arrives and keeps it until its call ends (generation included); an
  // upload that would exceed the limit fails with RESOURCE_EXHAUSTED before any layer is
  // rebuilt, so many concurrent requests cannot push the node into an out-of-memory kill.
  uint64_t max_cache_bytes = 0;
  // A budget shared with other services of the node (the PromptNode); when set it replaces
  // max_cache_bytes.
  std::shared_ptr<CacheBudget> cache_budget;
  // Non-empty: uploads must carry "authorization: Bearer <auth_token>" (server/transport/
  // security.h), else UNAUTHENTICATED before anything is read.
  std::string auth_token;
  // Preset names accepted as metric labels besides kvcodec's built-in ones (the node's preset
  // files); any other x-kvwire-preset value is counted as "custom", keeping labels bounded.
  std::set<std::string> preset_names;
  // An upload that sends nothing for this long is cancelled by the node, which frees its cache
  // reservation (a stalled sender without a deadline would otherwise hold it for good).
  // Zero: no limit. Generation after the upload is not affected.
  std::chrono::milliseconds upload_idle_timeout{60'000};
};

// Fills the transport's fields of `stats` for a frame of `wire_bytes` bytes whose layers are
// `layers`: raw_bytes, wire_bytes, bits_per_element, kept_fraction, num_layers, num_tokens.
void FillFrameStats(const kvcodec::FrameInfo& info, std::span<const kvcodec::DecodedLayer> layers,
                    uint64_t wire_bytes, kvwire::v1::RequestStats* stats);

// absl <-> gRPC statuses (the codes are numerically identical).
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Message sizes and flow control, set deliberately on both ends of an upload:
//   * messages: senders cut frames into slices of at most kMaxSliceBytes (1 MiB), and receivers
//     accept at most kMaxReceiveMessageBytes (8 MiB): a slice and its envelope always fit, and no
//     single message can make a node buffer more than 8 MiB. Uploading channels also refuse to
//     send more than that, so a sender bug fails on the sender. 1 MiB slices reach >= 70% of a
//     plain TCP copy on loopback (`kvwire bench transfer`); smaller ones pay per-message costs.
//   * flow control: HTTP/2 windows are left to gRPC's bandwidth-delay-product estimator (BDP
//     probing, switched on explicitly here), which grows the stream and connection windows to
//     what the link carries. A fixed window would have to be sized for the fastest, longest link
//     (1 Gbit/s x 100 ms = 12.5 MB per stream) and then let every concurrent upload buffer that
//     much on a slow one; the estimator adapts per connection.
// Sets the server's side (receive limit, BDP probing, no SO_REUSEPORT).
void ConfigureServerBuilder(grpc::ServerBuilder& builder);
// Sets an uploading channel's side (send and receive limits, BDP probing).
void ConfigureUploadChannel(grpc::ChannelArguments& args);

class DecodeNodeService final : public kvwire::v1::DecodeNode::CallbackService {
 public:
  explicit DecodeNodeService(DecodeServiceOptions options);
  // Waits for consumers still running (shut the server down first).
  ~DecodeNodeService() override;

  grpc::ServerReadReactor<kvwire::v1::CacheUpload>* Generate(
      grpc::CallbackServerContext* context, kvwire::v1::GenerateReply* reply) override;

  // Bytes reserved by the uploads in progress (see DecodeServiceOptions::max_cache_bytes).
  uint64_t reserved_cache_bytes() const;

 private:
  class Reactor;
  void ConsumerStarted();
  void ConsumerDone();

  const DecodeServiceOptions options_;
  mutable std::mutex mu_;
  std::condition_variable idle_;
  int running_consumers_ = 0;
  std::shared_ptr<CacheBudget> budget_;
  IdleWatchdog watchdog_;  // cancels stalled uploads
};

// Client side: uploads `frame` to a DecodeNode as `header` followed by slices of at most
// `chunk_size` bytes (1 <= chunk_size <= kMaxSliceBytes), then half-closes and waits for the
// reply. Returns the call's status (gRPC codes carried over) and, if OK, fills `reply`.
// `metadata` (lower-case keys) travels with the call.
absl::Status SendFrame(kvwire::v1::DecodeNode::StubInterface& stub,
                       const kvwire::v1::UploadHeader& header, std::span<const uint8_t> frame,
                       size_t chunk_size, std::chrono::system_clock::time_point deadline,
                       kvwire::v1::GenerateReply* reply,
                       const std::vector<std::pair<std::string, std::string>>& metadata = {});

}  // namespace kvwire::transport
