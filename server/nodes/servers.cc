#include "server/nodes/servers.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/transport/frame_receiver.h"

namespace kvwire::nodes {
namespace {

absl::Status BuildAndStart(const std::string& address, const transport::SecurityOptions& security,
                           std::vector<grpc::Service*> services,
                           std::unique_ptr<grpc::Server>* server, int* port) {
  auto credentials = transport::MakeServerCredentials(security);
  if (!credentials.ok()) return credentials.status();
  grpc::ServerBuilder builder;
  transport::ConfigureServerBuilder(builder);
  // Clients reconnect (and re-resolve DNS) every few minutes, so a prefill pod's round_robin
  // channel over the decode pool's headless Service picks up pods added since it started.
  // Calls in flight when the connection ages out finish on it.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, 5 * 60 * 1000);
  builder.AddListeningPort(address, *credentials, port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  *server = builder.BuildAndStart();
  if (*server == nullptr || *port == 0) {
    if (*server != nullptr) (*server)->Shutdown();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  return absl::OkStatus();
}

// The IPv4 host /metrics binds to by default: the gRPC listen address's host, with the IPv6
// wildcard and loopback mapped to their IPv4 equivalents (the exposer serves IPv4).
std::string MetricsHostFor(const std::string& listen_address) {
  const size_t colon = listen_address.rfind(':');
  std::string host = colon == std::string::npos ? listen_address : listen_address.substr(0, colon);
  if (host == "[::]" || host.empty()) return "0.0.0.0";
  if (host == "[::1]") return "127.0.0.1";
  return host;
}

}  // namespace

absl::Status RunningServer::StartMetrics(const NodeOptions& opts, std::string_view role) {
  metrics_ = std::make_unique<metrics::NodeMetrics>(role);
  metrics_->SetNodeInfo(model_->fingerprint, opts.model.device);
  if (opts.metrics_port < 0) return absl::OkStatus();
  const std::string host = opts.metrics_host.empty() ? MetricsHostFor(opts.listen_address) : opts.metrics_host;
  auto server = metrics::MetricsServer::Start(host, opts.metrics_port, metrics_->registry());
  if (!server.ok()) return server.status();
  metrics_server_ = *std::move(server);
  return absl::OkStatus();
}

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
  shadow_.reset();  // drops the passes still waiting, finishes the running one
  extra_service_.reset();
  metrics_server_.reset();
}

void RunningServer::Wait() {
  if (server_) server_->Wait();
}

absl::StatusOr<std::unique_ptr<RunningServer>> StartDecodeNode(const NodeOptions& opts) {
  auto model = NodeModel::Load(opts.model);
  if (!model.ok()) return model.status();
  std::unique_ptr<RunningServer> running(new RunningServer());
  running->model_ = *std::move(model);
  if (absl::Status s = running->StartMetrics(opts, "decode"); !s.ok()) {
    running->shut_down_ = true;
    return s;
  }
  std::set<std::string> preset_names;
  for (const auto& [name, text] : opts.presets) preset_names.insert(name);
  // One budget for the uploads and the shadow passes (and the caller's extra services).
  std::shared_ptr<transport::CacheBudget> budget =
      opts.cache_budget ? opts.cache_budget : std::make_shared<transport::CacheBudget>(opts.max_cache_bytes);
  if (opts.shadow.tokens > 0) {
    shadow::ShadowOptions shadow = opts.shadow;
    shadow.metrics = running->metrics_.get();
    shadow.cache_budget = budget;
    shadow.preset_names = preset_names;
    running->shadow_ =
        std::make_unique<shadow::ShadowRunner>(*running->model_->engine, std::move(shadow));
  }
  running->consumer_ = std::make_unique<EngineConsumer>(
      *running->model_, EngineConsumerOptions{.default_max_new_tokens = opts.default_max_new_tokens,
                                              .shadow = running->shadow_.get()});
  running->decode_service_ = std::make_unique<transport::DecodeNodeService>(
      transport::DecodeServiceOptions{.model_fingerprint = running->model_->fingerprint,
                                      .limits = opts.limits,
                                      .consumer = running->consumer_.get(),
                                      .metrics = running->metrics_.get(),
                                      .max_cache_bytes = opts.max_cache_bytes,
                                      .cache_budget = budget,
                                      .auth_token = opts.security.auth_token,
                                      .preset_names = std::move(preset_names),
                                      .upload_idle_timeout = opts.upload_idle_timeout});
  std::vector<grpc::Service*> services = {running->decode_service_.get()};
  if (opts.extra_decode_service) {
    running->extra_service_ = opts.extra_decode_service(*running->model_);
    services.push_back(running->extra_service_.get());
  }
  if (absl::Status s = BuildAndStart(opts.listen_address, opts.security, services, &running->server_,
                                     &running->port_);
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
  if (absl::Status s = running->StartMetrics(opts, "prefill"); !s.ok()) {
    running->shut_down_ = true;
    return s;
  }
  std::shared_ptr<const eval::QualityLadder> ladder;
  if (!opts.ladder_file.empty()) {
    auto loaded = eval::LoadLadderFile(opts.ladder_file);
    if (!loaded.ok()) {
      running->shut_down_ = true;
      return loaded.status();
    }
    if (loaded->model_fingerprint != running->model_->fingerprint) {
      running->shut_down_ = true;
      return absl::FailedPreconditionError(absl::StrCat(
          "ladder ", opts.ladder_file, " was measured on model ", loaded->model_fingerprint,
          ", this node serves ", running->model_->fingerprint));
    }
    ladder = std::make_shared<const eval::QualityLadder>(*std::move(loaded));
  }
  auto upstream = transport::MakeUpstreamCredentials(opts.security);
  if (!upstream.ok()) {
    running->shut_down_ = true;
    return upstream.status();
  }
  grpc::ChannelArguments args;
  transport::ConfigureUploadChannel(args);
  // Uploads spread over every address the decode name resolves to (a Kubernetes headless
  // Service gives one per ready decode pod); a single address behaves as before.
  args.SetLoadBalancingPolicyName("round_robin");
  running->prefill_service_ = std::make_unique<PrefillNodeService>(PrefillServiceOptions{
      .model = running->model_.get(),
      .decode_channel = grpc::CreateCustomChannel(opts.decode_address, *upstream, args),
      .default_codec = opts.default_codec,
      .default_timeout = opts.default_timeout,
      .link_bits_per_second = opts.link_mbps * 1e6,
      .auth_token = opts.security.auth_token,
      .workers = opts.workers,
      .max_queued = opts.max_queued,
      .presets = opts.presets,
      .metrics = running->metrics_.get(),
      .shadow_rate = opts.shadow_rate,
      .shadow_seed = opts.shadow_seed,
      .ladder = std::move(ladder),
      .assumed_link_bits_per_second = opts.assumed_link_mbps * 1e6});
  if (absl::Status s = BuildAndStart(opts.listen_address, opts.security,
                                     {running->prefill_service_.get()},
                                     &running->server_, &running->port_);
      !s.ok()) {
    running->shut_down_ = true;
    return s;
  }
  return running;
}

}  // namespace kvwire::nodes
