#include "client/serve_cmd.h"

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/nodes/servers.h"

namespace kvwire::cli {

CLI::App* AddServeCommand(CLI::App& app, ServeOptions& opts) {
  auto* serve = app.add_subcommand("serve", "Run a prefill or decode node until SIGINT/SIGTERM");
  serve->require_subcommand(1);
  auto add_common = [&opts](CLI::App* cmd, const char* default_listen) {
    cmd->add_option("--listen", opts.listen, "host:port to listen on (port 0: the OS chooses)")
        ->default_str(default_listen);
    cmd->add_option("--model", opts.model_dir, "Hugging Face model directory")->required();
    cmd->add_option("--tokenizer", opts.tokenizer_path, "tokenizer.json (default: <model>/tokenizer.json)");
    cmd->add_option("--dtype", opts.dtype, "Engine dtype")->capture_default_str()->check(CLI::IsMember({"float32", "bfloat16"}));
    cmd->add_option("--device", opts.device, "cpu, cuda or cuda:N")->capture_default_str();
    cmd->add_option("--threads", opts.threads, "Torch threads; 0 = all cores")->capture_default_str()->check(CLI::Range(0, 1024));
    cmd->add_option("--workers", opts.workers, "Requests worked on at once (prefill node)")->capture_default_str()->check(CLI::Range(1, 1024));
    cmd->add_option("--max-new-tokens", opts.max_new_tokens, "Default generation length (decode node)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--grace", opts.grace_seconds, "Seconds calls in flight may take to finish on shutdown")->capture_default_str()->check(CLI::Range(0.0, 3600.0));
  };
  auto* decode = serve->add_subcommand("decode", "Serve kvwire.v1.DecodeNode: rebuild uploaded caches and generate");
  add_common(decode, "127.0.0.1:50051");
  decode->callback([&opts] {
    opts.role = "decode";
    if (opts.listen.empty()) opts.listen = "127.0.0.1:50051";
  });
  auto* prefill = serve->add_subcommand("prefill", "Serve kvwire.v1.PrefillNode: prefill, encode, upload to a decode node");
  add_common(prefill, "127.0.0.1:50052");
  prefill->add_option("--decode", opts.decode_address, "The decode node's host:port")->required();
  prefill->add_option("--codec", opts.codec, "Default codec: a preset name or config text")->capture_default_str();
  prefill->callback([&opts] {
    opts.role = "prefill";
    if (opts.listen.empty()) opts.listen = "127.0.0.1:50052";
  });
  return serve;
}

namespace {

// The host part of a listen address, for printing "host:port" with the bound port.
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
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
  // grpc.health.v1.Health on every server built from now on (reports SERVING while up).
  grpc::EnableDefaultHealthCheckService(true);

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
  node.default_max_new_tokens = opts.max_new_tokens;
  auto server = opts.role == "prefill" ? kvwire::nodes::StartPrefillNode(node)
                                       : kvwire::nodes::StartDecodeNode(node);
  if (!server.ok()) {
    std::cerr << "kvwire serve " << opts.role << ": " << server.status().ToString() << "\n";
    return 1;
  }
  std::cout << "kvwire " << opts.role << " node listening on " << HostOf(opts.listen) << ":"
            << (*server)->port() << " model=" << (*server)->model().fingerprint << std::endl;

  int sig = 0;
  if (int err = sigwait(&stop_signals, &sig); err != 0) {
    std::cerr << "kvwire serve: sigwait failed (" << err << ")\n";
    sig = SIGTERM;
  }
  std::cerr << "kvwire " << opts.role << " node: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
            << ", shutting down\n";
  (*server)->Shutdown(std::chrono::milliseconds(static_cast<int64_t>(opts.grace_seconds * 1000)));
  server->reset();
  return 0;
}

}  // namespace kvwire::cli
