#include "server/scout/scout_server.h"

#include "absl/strings/str_cat.h"
#include "server/transport/decode_service.h"

namespace kvwire::scout {

RunningScout::~RunningScout() { Shutdown(); }

void RunningScout::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + grace);
  service_.reset();  // joins the workers once the calls have finished
}

void RunningScout::Wait() {
  if (server_) server_->Wait();
}

absl::StatusOr<std::unique_ptr<RunningScout>> StartScoutNode(const ScoutNodeOptions& options) {
  if (options.prompt_address.empty()) {
    return absl::InvalidArgumentError("a scout node needs the big node's address");
  }
  std::unique_ptr<RunningScout> running(new RunningScout());
  auto model = nodes::NodeModel::Load(options.model);
  if (!model.ok()) return model.status();
  running->model_ = *std::move(model);
  running->service_ = std::make_unique<ScoutNodeService>(ScoutServiceOptions{
      .model = running->model_.get(),
      .prompt_channel = grpc::CreateChannel(options.prompt_address,
                                            grpc::InsecureChannelCredentials()),
      .default_codec = options.default_codec,
      .presets = options.presets,
      .default_timeout = options.default_timeout,
      .workers = options.workers});
  grpc::ServerBuilder builder;
  transport::ConfigureServerBuilder(builder);
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(),
                           &running->port_);
  builder.RegisterService(running->service_.get());
  running->server_ = builder.BuildAndStart();
  if (running->server_ == nullptr || running->port_ == 0) {
    if (running->server_ != nullptr) running->server_->Shutdown();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  return running;
}

}  // namespace kvwire::scout
