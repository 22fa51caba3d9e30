// Starting and stopping the two node servers (what `kvwire serve prefill|decode` will call).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_server.h"
#include "server/nodes/engine_consumer.h"
#include "server/nodes/model.h"
#include "server/nodes/prefill_service.h"
#include "server/nodes/presets.h"
#include "server/shadow/shadow_runner.h"
#include "server/transport/decode_service.h"
#include "server/transport/security.h"

namespace kvwire::nodes {

struct NodeOptions {
  // host:port to listen on; port 0 lets the OS choose (RunningServer::port() reports it).
  std::string listen_address = "127.0.0.1:0";
  ModelOptions model;
  // Prefill node only: the decode node's address and the request defaults.
  std::string decode_address;
  std::string default_codec = "int4-rans";
  int workers = 2;
  int max_queued = 64;  // see PrefillServiceOptions::max_queued
  std::chrono::milliseconds default_timeout{std::chrono::minutes(10)};
  // Prefill node only: the share of requests (0..1) sampled for a shadow pass on the
  // decode node, and the sampler's seed (0: random). See PrefillServiceOptions.
  double shadow_rate = 0;
  uint64_t shadow_seed = 0;
  // Prefill node only: emulated link to the decode node in Mbit/s (0: none), see
  // PrefillServiceOptions::link_bits_per_second.
  double link_mbps = 0;
  // Prefill node only: a quality ladder file (`kvwire calibrate`) for rate-controlled requests,
  // checked against the node's model at start; and the link rate assumed for time-to-first-
  // token targets when neither the request nor link_mbps gives one (Mbit/s, 0: none).
  std::string ladder_file;
  double assumed_link_mbps = 0;
  // Decode node only.
  int default_max_new_tokens = 128;
  kvcodec::DecodeLimits limits;
  // Decode node only: shadow passes for the uploads that ask for one (shadow.tokens 0:
  // none, such uploads are answered as usual). `metrics`, `preset_names` and `cache_budget`
  // are set to the node's own.
  shadow::ShadowOptions shadow;
  // Most bytes of rebuilt caches held at once over all uploads (0: no limit); see
  // transport::DecodeServiceOptions::max_cache_bytes. Or a budget the caller shares with the
  // extra services (the PromptNode), which then replaces max_cache_bytes.
  uint64_t max_cache_bytes = 0;
  std::shared_ptr<transport::CacheBudget> cache_budget;
  // Decode node only: see transport::DecodeServiceOptions::upload_idle_timeout.
  std::chrono::milliseconds upload_idle_timeout{60'000};
  // TLS on the serving port and to the decode node, and the bearer token every kvwire call must
  // carry (decode node: its PromptNode too, through extra_decode_service). Off by default.
  transport::SecurityOptions security;
  // Prometheus /metrics: -1 serves none, 0 lets the OS choose the port (RunningServer::
  // metrics_port() reports it). `metrics_host` empty: the host of listen_address.
  int metrics_port = -1;
  std::string metrics_host;
  // Named presets (preset files): codecs requests may name, and metric label values.
  PresetMap presets;
  // Decode node only: more services to serve beside DecodeNode on the same port, made once the
  // model is loaded (the scout and text paths' PromptNode, server/scout, which depends on this
  // library and so is passed in rather than named here).
  std::function<std::unique_ptr<grpc::Service>(const NodeModel&)> extra_decode_service;
};

class RunningServer {
 public:
  ~RunningServer();  // Shutdown() with a 5 s grace period if not done yet
  RunningServer(const RunningServer&) = delete;
  RunningServer& operator=(const RunningServer&) = delete;

  int port() const { return port_; }
  const NodeModel& model() const { return *model_; }
  // The node's metrics (also when no /metrics endpoint is served).
  metrics::NodeMetrics& metrics() const { return *metrics_; }
  // The decode node's shadow passes; null on a prefill node or with shadow.tokens 0.
  shadow::ShadowRunner* shadow() const { return shadow_.get(); }
  // The /metrics port, or -1 when NodeOptions::metrics_port was -1.
  int metrics_port() const { return metrics_server_ ? metrics_server_->port() : -1; }
  // "HOST:PORT" of /metrics, or "" when none is served.
  std::string metrics_address() const { return metrics_server_ ? metrics_server_->address() : ""; }
  // Stops accepting calls, lets calls in flight finish until `grace` has passed (then cancels
  // them) and waits for the workers. Idempotent.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Blocks until Shutdown() (from another thread) completes.
  void Wait();

 private:
  friend absl::StatusOr<std::unique_ptr<RunningServer>> StartDecodeNode(const NodeOptions&);
  friend absl::StatusOr<std::unique_ptr<RunningServer>> StartPrefillNode(const NodeOptions&);
  RunningServer() = default;
  absl::Status StartMetrics(const NodeOptions& opts, std::string_view role);

  // Declared first: destroyed after the services that update it.
  std::unique_ptr<metrics::NodeMetrics> metrics_;
  std::unique_ptr<metrics::MetricsServer> metrics_server_;
  std::unique_ptr<NodeModel> model_;
  std::unique_ptr<shadow::ShadowRunner> shadow_;  // outlives the consumer
  std::unique_ptr<EngineConsumer> consumer_;
  std::unique_ptr<transport::DecodeNodeService> decode_service_;
  std::unique_ptr<grpc::Service> extra_service_;
  std::unique_ptr<PrefillNodeService> prefill_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

// Loads the model and serves DecodeNode on opts.listen_address (and /metrics, see NodeOptions).
// UnavailableError when an address cannot be bound; model loading errors as they come.
absl::StatusOr<std::unique_ptr<RunningServer>> StartDecodeNode(const NodeOptions& opts);
// Loads the model and serves PrefillNode, uploading to opts.decode_address (InvalidArgument if
// empty; the decode node need not be up yet: calls then fail with UNAVAILABLE). The channel
// balances uploads round-robin over every address the name resolves to (e.g.
// dns:///kvwire-decode-headless:50051).
absl::StatusOr<std::unique_ptr<RunningServer>> StartPrefillNode(const NodeOptions& opts);

}  // namespace kvwire::nodes
