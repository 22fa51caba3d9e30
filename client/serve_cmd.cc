#include "client/serve_cmd.h"

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "grpcpp/grpcpp.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "server/metrics/log.h"
#include "server/nodes/presets.h"
#include "server/nodes/servers.h"
#include "server/scout/prompt_service.h"
#include "server/scout/scout_server.h"
#include "server/transport/security.h"

namespace kvwire::cli {

namespace {

// Reads a config file into the options of `cmd` the command line did not set. Throws
// CLI::ParseError subclasses (exit code 2), as CLI11 does for the command line.
void ApplyConfigFile(CLI::App* cmd, const std::string& path) {
  CLI::ConfigTOML format;
  const std::vector<CLI::ConfigItem> items = format.from_file(path);  // CLI::FileError if unreadable
  for (const CLI::ConfigItem& item : items) {
    const std::string name = item.fullname();
    if (name == "config") throw CLI::ValidationError("--config", "a config file cannot name another");
    CLI::Option* opt = cmd->get_option_no_throw("--" + name);
    if (opt == nullptr) {
      throw CLI::ValidationError("--config", "unknown option '" + name + "' in " + path);
    }
    if (opt->count() > 0) continue;  // the command line wins
    opt->add_result(item.inputs);
    opt->run_callback();
  }
}

// Options required on the command line or in the config file.
void Require(const std::string& value, const char* flag) {
  if (value.empty()) {
    throw CLI::RequiredError(std::string(flag) + " (on the command line or in --config)");
  }
}

}  // namespace

CLI::App* AddServeCommand(CLI::App& app, ServeOptions& opts) {
  auto* serve = app.add_subcommand("serve", "Run a prefill, decode or scout node until SIGINT/SIGTERM");
  serve->require_subcommand(1);
  static constexpr char kExitCodes[] =
      "Exit codes: 0 stopped cleanly by SIGINT/SIGTERM; 1 the node could not start (model, port, "
      "TLS or token files); 2 bad command line or config file.";
  serve->footer(kExitCodes);
  auto add_common = [&opts](CLI::App* cmd, const char* default_listen) {
    cmd->footer(kExitCodes);
    cmd->add_option("--listen", opts.listen, "host:port to listen on (port 0: the OS chooses)")
        ->default_str(default_listen);
    cmd->add_option("--config", opts.config_file,
                    "TOML/INI file of options: 'name = value' per line, names without dashes "
                    "(e.g. model = \"models/target\"); the command line wins");
    cmd->add_option("--model", opts.model_dir, "Hugging Face model directory (required)");
    cmd->add_option("--tokenizer", opts.tokenizer_path, "tokenizer.json (default: <model>/tokenizer.json)");
    cmd->add_option("--dtype", opts.dtype, "Engine dtype")->capture_default_str()->check(CLI::IsMember({"float32", "bfloat16"}));
    cmd->add_option("--device", opts.device, "cpu, cuda or cuda:N")->capture_default_str();
    cmd->add_option("--threads", opts.threads, "Torch threads; 0 = all cores")->capture_default_str()->check(CLI::Range(0, 1024));
    cmd->add_option("--workers", opts.workers, "Requests worked on at once")->capture_default_str()->check(CLI::Range(1, 1024));
    cmd->add_option("--max-queued", opts.max_queued, "Requests that may wait for a worker; more get RESOURCE_EXHAUSTED at once (0: no limit)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
    cmd->add_option("--max-new-tokens", opts.max_new_tokens, "Default generation length (decode node)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--grace", opts.grace_seconds, "Seconds calls in flight may take to finish on shutdown")->capture_default_str()->check(CLI::Range(0.0, 3600.0));
    cmd->add_option("--metrics-port", opts.metrics_port, "Port of the Prometheus /metrics endpoint, on the --listen host (0: the OS chooses; -1: none)")->capture_default_str()->check(CLI::Range(-1, 65535));
    cmd->add_option("--presets", opts.preset_files, "File of named codec presets, 'name = config' per line (repeatable; e.g. presets and a quality ladder)");
    cmd->add_option("--tls-cert", opts.tls_cert, "Serve TLS with this PEM certificate (with --tls-key; default: plain text, meant for loopback)")->check(CLI::ExistingFile);
    cmd->add_option("--tls-key", opts.tls_key, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
    cmd->add_option("--tls-client-ca", opts.tls_client_ca, "Require client certificates signed by this PEM CA bundle (mutual TLS; needs --tls-cert)")->check(CLI::ExistingFile);
    cmd->add_option("--auth-token-file", opts.auth_token_file, "Require 'authorization: Bearer <token>' (the file's contents) on every kvwire call, and send it on this node's own upstream calls; health checks stay open (default: no token)")->check(CLI::ExistingFile);
    cmd->add_option("--log-level", opts.log_level, "Least level of the JSON log lines on stderr")->capture_default_str()->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  };
  auto* decode = serve->add_subcommand("decode", "Serve kvwire.v1.DecodeNode (rebuild uploaded caches and generate) and kvwire.v1.PromptNode (the scout and text paths)");
  add_common(decode, "127.0.0.1:50051");
  decode->add_option("--shadow-tokens", opts.shadow_tokens, "Generated tokens a shadow pass decodes again with the full cache, for the requests the prefill node sampled (--shadow-rate); 0: no shadow passes")->capture_default_str()->check(CLI::Range(0, 4096));
  decode->add_option("--max-cache-mib", opts.max_cache_mib,
                     "Most MiB of KV caches held at once over all requests (cache uploads and the "
                     "scout/text paths' prefills); requests beyond it fail with RESOURCE_EXHAUSTED "
                     "(0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 30));
  decode->add_option("--upload-idle-timeout", opts.upload_idle_timeout_s,
                     "Seconds an upload may send nothing before the node cancels it and frees its "
                     "cache reservation (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  decode->callback([&opts, decode] {
    if (!opts.config_file.empty()) ApplyConfigFile(decode, opts.config_file);
    Require(opts.model_dir, "--model");
    opts.role = "decode";
    if (opts.listen.empty()) opts.listen = "127.0.0.1:50051";
  });
  auto* prefill = serve->add_subcommand("prefill", "Serve kvwire.v1.PrefillNode: prefill, encode, upload to a decode node");
  add_common(prefill, "127.0.0.1:50052");
  prefill->add_option("--shadow-rate", opts.shadow_rate, "Share of requests (0..1) the decode node checks after answering with a shadow pass on the full cache (agreement, KL, reconstruction error by preset)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  prefill->add_option("--decode", opts.decode_address, "The decode node's host:port, or a gRPC name such as dns:///host:port (required)");
  prefill->add_option("--codec", opts.codec, "Default codec: a preset name or config text")->capture_default_str();
  prefill->add_option("--upstream-ca", opts.upstream_ca, "Connect to the decode node with TLS, verifying its certificate with this PEM CA bundle (this node's --tls-cert/--tls-key are its client certificate)")->check(CLI::ExistingFile);
  prefill->add_option("--link-mbps", opts.link_mbps,
                      "Emulate a link of this many Mbit/s to the decode node: cache uploads are "
                      "paced at that rate (0: off; for benchmarks)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e7));
  prefill->add_option("--ladder", opts.ladder_file,
                      "Quality ladder (kvwire calibrate) for requests that ask for rate control "
                      "(a byte budget or a time-to-first-token target) instead of a codec; it "
                      "must have been measured on this node's model")
      ->check(CLI::ExistingFile);
  prefill->add_option("--assumed-link-mbps", opts.assumed_link_mbps,
                      "Link rate to the decode node that time-to-first-token targets assume "
                      "when a request gives none (Mbit/s; 0: such requests must give one; "
                      "--link-mbps, when set, is used instead)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e7));
  prefill->callback([&opts, prefill] {
    if (!opts.config_file.empty()) ApplyConfigFile(prefill, opts.config_file);
    Require(opts.model_dir, "--model");
    Require(opts.decode_address, "--decode");
    opts.role = "prefill";
    if (opts.listen.empty()) opts.listen = "127.0.0.1:50052";
  });
  auto* scout = serve->add_subcommand("scout", "Serve kvwire.v1.ScoutNode: a small model picks the positions to keep; only token ids and positions go to the big model's node");
  add_common(scout, "127.0.0.1:50053");
  scout->add_option("--target", opts.target_address, "The big model's decode node host:port (its PromptNode) (required)");
  scout->add_option("--codec", opts.codec, "Default codec (its selection is used): a preset name or config text")->default_str("scout-snapkv25");
  scout->add_option("--upstream-ca", opts.upstream_ca, "Connect to the big node with TLS, verifying its certificate with this PEM CA bundle (this node's --tls-cert/--tls-key are its client certificate)")->check(CLI::ExistingFile);
  scout->add_option("--link-mbps", opts.link_mbps,
                    "Emulate a link of this many Mbit/s to the big node: each token upload is "
                    "held back for its size / rate (0: off; for benchmarks)")
      ->capture_default_str()->check(CLI::Range(0.0, 1e7));
  scout->callback([&opts, scout] {
    if (!opts.config_file.empty()) ApplyConfigFile(scout, opts.config_file);
    Require(opts.model_dir, "--model");
    Require(opts.target_address, "--target");
    opts.role = "scout";
    if (opts.listen.empty()) opts.listen = "127.0.0.1:50053";
    if (opts.codec == "int4-rans") opts.codec = "scout-snapkv25";  // the prefill default means nothing here
  });
  return serve;
}

namespace {

// The host part of a listen address, for printing "host:port" with the bound port.
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

int WaitForStopSignal(sigset_t& stop_signals) {
  int sig = 0;
  if (int err = sigwait(&stop_signals, &sig); err != 0) {
    std::cerr << "kvwire serve: sigwait failed (" << err << ")\n";
    sig = SIGTERM;
  }
  return sig;
}

// The scout node serves /metrics (role="scout") and logs its start and stop like the others.
int RunScout(const ServeOptions& opts, const kvwire::nodes::NodeOptions& node,
             sigset_t& stop_signals) {
  auto scout = kvwire::scout::StartScoutNode({.listen_address = node.listen_address,
                                              .model = node.model,
                                              .prompt_address = opts.target_address,
                                              .default_codec = opts.codec,
                                              .presets = node.presets,
                                              .workers = opts.workers,
                                              .max_queued = opts.max_queued,
                                              .link_mbps = opts.link_mbps,
                                              .metrics_port = opts.metrics_port,
                                              .security = node.security});
  if (!scout.ok()) {
    std::cerr << "kvwire serve scout: " << scout.status().ToString() << "\n";
    return 1;
  }
  const std::string address = HostOf(opts.listen) + ":" + std::to_string((*scout)->port());
  std::cout << "kvwire scout node listening on " << address << " model=" << (*scout)->fingerprint()
            << " target=" << opts.target_address << std::endl;
  const std::string metrics_address = (*scout)->metrics_address();
  if (!metrics_address.empty()) {
    std::cout << "kvwire scout node metrics on http://" << metrics_address << "/metrics" << std::endl;
  }
  kvwire::metrics::LogEvent(kvwire::metrics::LogLevel::kInfo, "node_started",
                            {{"role", "scout"}, {"address", address},
                             {"metrics_address", metrics_address},
                             {"model", (*scout)->fingerprint()},
                             {"target", opts.target_address}});
  const int sig = WaitForStopSignal(stop_signals);
  kvwire::metrics::LogEvent(kvwire::metrics::LogLevel::kInfo, "node_stopping",
                            {{"role", "scout"}, {"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  (*scout)->Shutdown(std::chrono::milliseconds(static_cast<int64_t>(opts.grace_seconds * 1000)));
  scout->reset();
  kvwire::metrics::LogEvent(kvwire::metrics::LogLevel::kInfo, "node_stopped", {{"role", "scout"}});
  return 0;
}

}  // namespace

int RunServe(const ServeOptions& opts) {
  // Block the stop signals before any thread starts (torch, gRPC), so that every thread inherits
  // the mask and only sigwait() below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  if (int err = pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr); err != 0) {
    std::cerr << "kvwire serve: pthread_sigmask failed (" << err << ")\n";
    return 1;
  }
  // grpc.health.v1.Health and server reflection on every server built from now on.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  if (absl::Status s = kvwire::metrics::SetLogLevel(opts.log_level); !s.ok()) {
    std::cerr << "kvwire serve: " << s.message() << "\n";
    return 1;
  }
  auto presets = kvwire::nodes::LoadPresetFiles(opts.preset_files);
  if (!presets.ok()) {
    std::cerr << "kvwire serve " << opts.role << ": " << presets.status().ToString() << "\n";
    return 1;
  }

  kvwire::nodes::NodeOptions node;
  node.listen_address = opts.listen;
  node.model = {.model_dir = opts.model_dir,
                .tokenizer_path = opts.tokenizer_path,
                .dtype = opts.dtype,
                .threads = opts.threads,
                .device = opts.device};
  node.decode_address = opts.decode_address;
  node.default_codec = opts.codec;
  node.workers = opts.workers;
  node.max_queued = opts.max_queued;
  node.default_max_new_tokens = opts.max_new_tokens;
  node.metrics_port = opts.metrics_port;
  node.link_mbps = opts.link_mbps;
  node.ladder_file = opts.ladder_file;
  node.assumed_link_mbps = opts.assumed_link_mbps;
  node.security = {.tls_cert_file = opts.tls_cert,
                   .tls_key_file = opts.tls_key,
                   .tls_client_ca_file = opts.tls_client_ca,
                   .upstream_ca_file = opts.upstream_ca};
  if (!opts.auth_token_file.empty()) {
    auto token = kvwire::transport::ReadTokenFile(opts.auth_token_file);
    if (!token.ok()) {
      std::cerr << "kvwire serve " << opts.role << ": " << token.status().ToString() << "\n";
      return 1;
    }
    node.security.auth_token = *token;
  }
  // One budget for the decode node's uploads and its PromptNode's prefills.
  node.cache_budget = std::make_shared<kvwire::transport::CacheBudget>(opts.max_cache_mib << 20);
  node.presets = *std::move(presets);
  node.shadow_rate = opts.shadow_rate;
  node.shadow.tokens = opts.shadow_tokens;
  node.upload_idle_timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::llround(opts.upload_idle_timeout_s * 1000)));
  if (opts.role == "scout") return RunScout(opts, node, stop_signals);
  node.extra_decode_service = [&opts, token = node.security.auth_token,
                               budget = node.cache_budget](const kvwire::nodes::NodeModel& model) {
    return std::make_unique<kvwire::scout::PromptNodeService>(kvwire::scout::PromptServiceOptions{
        .model = &model,
        .workers = opts.workers,
        .max_queued = opts.max_queued,
        .default_max_new_tokens = opts.max_new_tokens,
        .auth_token = token,
        .cache_budget = budget});
  };
  auto server = opts.role == "prefill" ? kvwire::nodes::StartPrefillNode(node)
                                       : kvwire::nodes::StartDecodeNode(node);
  if (!server.ok()) {
    std::cerr << "kvwire serve " << opts.role << ": " << server.status().ToString() << "\n";
    return 1;
  }
  const std::string address = HostOf(opts.listen) + ":" + std::to_string((*server)->port());
  std::cout << "kvwire " << opts.role << " node listening on " << address
            << " model=" << (*server)->model().fingerprint << std::endl;
  const std::string metrics_address = (*server)->metrics_address();
  if (!metrics_address.empty()) {
    std::cout << "kvwire " << opts.role << " node metrics on http://" << metrics_address
              << "/metrics" << std::endl;
  }
  kvwire::metrics::LogEvent(kvwire::metrics::LogLevel::kInfo, "node_started",
                            {{"role", opts.role},
                             {"address", address},
                             {"metrics_address", metrics_address},
                             {"model", (*server)->model().fingerprint},
                             {"device", opts.device},
                             {"presets", node.presets.size()}});

  const int sig = WaitForStopSignal(stop_signals);
  kvwire::metrics::LogEvent(kvwire::metrics::LogLevel::kInfo, "node_stopping",
                            {{"role", opts.role}, {"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"},
                             {"grace_seconds", opts.grace_seconds}});
  (*server)->Shutdown(std::chrono::milliseconds(static_cast<int64_t>(opts.grace_seconds * 1000)));
  server->reset();
  kvwire::metrics::LogEvent(kvwire::metrics::LogLevel::kInfo, "node_stopped", {{"role", opts.role}});
  return 0;
}

}  // namespace kvwire::cli
