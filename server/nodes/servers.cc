#include "server/nodes/servers.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/transport/frame_receiver.h"

namespace kvwire::nodes {
namespace {

absl::Status BuildAndStart(const std::string& address, grpc::Service* service,
                           std::unique_ptr<grpc::Server>* server, int* port) {
  grpc::ServerBuilder builder;
  transport::ConfigureServerBuilder(builder);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  *server = builder.BuildAndStart();
  if (*server == nullptr || *port == 0) {
    if (*server != nullptr) (*server)->Shutdown();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  return absl::OkStatus();
}

}  // namespace

RunningServer::~RunningServer() { Shutdown(); }

void RunningServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
    server_.reset();
  }
  // The services outlive the server and wait for their own workers / consumers.
  prefill_service_.reset();
  decode_service_.reset();
}

void RunningServer::Wait() {
  if (server_) server_->Wait();
}

absl::StatusOr<std::unique_ptr<RunningServer>> StartDecodeNode(const NodeOptions& opts) {
  auto model = NodeModel::Load(opts.model);
  if (!model.ok()) return model.status();
  std::unique_ptr<RunningServer> running(new RunningServer());
  running->model_ = *std::move(model);
  running->consumer_ = std::make_unique<EngineConsumer>(
      *running->model_, EngineConsumerOptions{.default_max_new_tokens = opts.default_max_new_tokens});
  running->decode_service_ = std::make_unique<transport::DecodeNodeService>(
      transport::DecodeServiceOptions{.model_fingerprint = running->model_->fingerprint,
                                      .limits = opts.limits,
                                      .consumer = running->consumer_.get()});
  if (absl::Status s = BuildAndStart(opts.listen_address, running->decode_service_.get(),
                                     &running->server_, &running->port_);
      !s.ok()) {
    running->shut_down_ = true;
    return s;
  }
  return running;
}

absl::StatusOr<std::unique_ptr<RunningServer>> StartPrefillNode(const NodeOptions& opts) {
  if (opts.decode_address.empty()) {
    return absl::InvalidArgumentError("the prefill node needs a decode node address");
  }
  auto model = NodeModel::Load(opts.model);
  if (!model.ok()) return model.status();
  std::unique_ptr<RunningServer> running(new RunningServer());
  running->model_ = *std::move(model);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(transport::kMaxReceiveMessageBytes);
  running->prefill_service_ = std::make_unique<PrefillNodeService>(PrefillServiceOptions{
      .model = running->model_.get(),
      .decode_channel = grpc::CreateCustomChannel(opts.decode_address,
                                                  grpc::InsecureChannelCredentials(), args),
      .default_codec = opts.default_codec,
      .default_timeout = opts.default_timeout,
      .workers = opts.workers});
  if (absl::Status s = BuildAndStart(opts.listen_address, running->prefill_service_.get(),
                                     &running->server_, &running->port_);
      !s.ok()) {
    running->shut_down_ = true;
    return s;
  }
  return running;
}

}  // namespace kvwire::nodes
