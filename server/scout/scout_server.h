// Starting and stopping a scout node (what `kvwire serve scout` calls): the small model, a
// channel to the big node's PromptNode, and the ScoutNode service with gRPC health checking.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_server.h"
#include "server/transport/security.h"
#include "server/nodes/model.h"
#include "server/nodes/presets.h"
#include "server/scout/scout_service.h"

namespace kvwire::scout {

struct ScoutNodeOptions {
  std::string listen_address = "127.0.0.1:0";  // port 0: the OS chooses
  nodes::ModelOptions model;                    // the scout (small) model
  std::string prompt_address;                   // the big node (its PromptNode service)
  std::string default_codec = "scout-snapkv25";
  nodes::PresetMap presets;
  int workers = 2;
  int max_queued = 64;  // see ScoutServiceOptions::max_queued
  std::chrono::milliseconds default_timeout{std::chrono::minutes(10)};
  // Emulated link to the big node in Mbit/s (0: none); see ScoutServiceOptions.
  double link_mbps = 0;
  // Prometheus /metrics as the other nodes serve it (role="scout"): -1 none, 0 an OS-chosen
  // port; `metrics_host` empty: the host of listen_address.
  int metrics_port = -1;
  std::string metrics_host;
  // TLS on the serving port and to the big node, and the bearer token (both directions).
  transport::SecurityOptions security;
};

class RunningScout {
 public:
  ~RunningScout();  // Shutdown() with a 5 s grace period if not done yet
  RunningScout(const RunningScout&) = delete;
  RunningScout& operator=(const RunningScout&) = delete;

  int port() const { return port_; }
  metrics::NodeMetrics& metrics() const { return *metrics_; }
  // "HOST:PORT" of /metrics, or "" when none is served.
  std::string metrics_address() const { return metrics_server_ ? metrics_server_->address() : ""; }
  const std::string& fingerprint() const { return model_->fingerprint; }
  void Shutdown(std::chrono::milliseconds grace = std::chrono::seconds(5));
  void Wait();

 private:
  friend absl::StatusOr<std::unique_ptr<RunningScout>> StartScoutNode(const ScoutNodeOptions&);
  RunningScout() = default;

  // Declared first: destroyed after the service that updates it.
  std::unique_ptr<metrics::NodeMetrics> metrics_;
  std::unique_ptr<metrics::MetricsServer> metrics_server_;
  std::unique_ptr<nodes::NodeModel> model_;
  std::unique_ptr<ScoutNodeService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

// InvalidArgument without a prompt_address; UnavailableError when the address cannot be bound;
// model loading errors as they come. The big node need not be up yet (calls then fail with
// UNAVAILABLE).
absl::StatusOr<std::unique_ptr<RunningScout>> StartScoutNode(const ScoutNodeOptions& options);

}  // namespace kvwire::scout
