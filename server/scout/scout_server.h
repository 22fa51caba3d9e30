// Starting and stopping a scout node (what `kvwire serve scout` calls): the small model, a
// channel to the big node's PromptNode, and the ScoutNode service with gRPC health checking.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/nodes/model.h"
#include "server/nodes/presets.h"
#include "server/scout/scout_service.h"

namespace kvwire::scout {

struct ScoutNodeOptions {
  std::string listen_address = "127.0.0.1:0";  // port 0: the OS chooses
  nodes::ModelOptions model;                    // the scout (small) model
  std::string prompt_address;                   // the big node (its PromptNode service)
  std::string default_codec = "scout-q2c25";
  nodes::PresetMap presets;
  int workers = 2;
  std::chrono::milliseconds default_timeout{std::chrono::minutes(10)};
};

class RunningScout {
 public:
  ~RunningScout();  // Shutdown() with a 5 s grace period if not done yet
  RunningScout(const RunningScout&) = delete;
  RunningScout& operator=(const RunningScout&) = delete;

  int port() const { return port_; }
  void Shutdown(std::chrono::milliseconds grace = std::chrono::seconds(5));
  void Wait();

 private:
  friend absl::StatusOr<std::unique_ptr<RunningScout>> StartScoutNode(const ScoutNodeOptions&);
  RunningScout() = default;

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
