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
  metrics_server_.reset();
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
  running->metrics_ = std::make_unique<metrics::NodeMetrics>("scout");
  running->metrics_->SetNodeInfo(running->model_->fingerprint, options.model.device);
  if (options.metrics_port >= 0) {
    std::string host = options.metrics_host;
    if (host.empty()) {
      const size_t colon = options.listen_address.rfind(':');
      host = colon == std::string::npos ? options.listen_address
                                        : options.listen_address.substr(0, colon);
      if (host == "[::]" || host.empty()) host = "0.0.0.0";
      if (host == "[::1]") host = "127.0.0.1";
    }
    auto server = metrics::MetricsServer::Start(host, options.metrics_port,
                                                running->metrics_->registry());
    if (!server.ok()) {
      running->shut_down_ = true;
      return server.status();
    }
    running->metrics_server_ = *std::move(server);
  }
  auto server_credentials = transport::MakeServerCredentials(options.security);
  if (!server_credentials.ok()) return server_credentials.status();
  auto upstream_credentials = transport::MakeUpstreamCredentials(options.security);
  if (!upstream_credentials.ok()) return upstream_credentials.status();
  running->service_ = std::make_unique<ScoutNodeService>(ScoutServiceOptions{
      .model = running->model_.get(),
      .prompt_channel = grpc::CreateChannel(options.prompt_address, *upstream_credentials),
      .default_codec = options.default_codec,
      .presets = options.presets,
      .default_timeout = options.default_timeout,
      .workers = options.workers,
      .max_queued = options.max_queued,
      .link_bits_per_second = options.link_mbps * 1e6,
      .metrics = running->metrics_.get(),
      .auth_token = options.security.auth_token});
  grpc::ServerBuilder builder;
  transport::ConfigureServerBuilder(builder);
  builder.AddListeningPort(options.listen_address, *server_credentials, &running->port_);
  builder.RegisterService(running->service_.get());
  running->server_ = builder.BuildAndStart();
  if (running->server_ == nullptr || running->port_ == 0) {
    if (running->server_ != nullptr) running->server_->Shutdown();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  return running;
}

}  // namespace kvwire::scout
