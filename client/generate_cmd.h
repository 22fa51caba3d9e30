// `kvwire generate` (one PrefillNode.Generate call) and `kvwire health` (grpc.health.v1 check).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "grpcpp/grpcpp.h"
#include "proto/kvwire.pb.h"

namespace kvwire::cli {

struct GenerateOptions {
  std::string prefill_address;
  std::string scout_address;  // set instead of prefill_address: ScoutNode.Generate
  std::string context;
  std::string context_file;
  std::string question;
  std::vector<std::string> messages;  // "role:text"
  std::string preset;
  std::string codec;
  int max_new_tokens = 0;
  float temperature = 0;
  float top_p = 0;
  int top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  // Rate control instead of a codec (the prefill node needs --ladder): 0 = unset.
  uint64_t byte_budget = 0;
  double ttft_target_seconds = 0;
  double link_mbps = 0;
  bool require_fit = false;
  std::string request_id;
  double timeout_seconds = 600;
  bool json = false;
  // Optional security (server/transport/security.h): TLS with this CA (and a client certificate
  // for nodes that require one), and a bearer token read from a file.
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string token_file;
};

struct HealthOptions {
  std::string target;
  std::string service;
  double timeout_seconds = 5;
  std::string tls_ca;  // TLS with this CA (health checks need no token)
  std::string tls_cert;
  std::string tls_key;
};

CLI::App* AddGenerateCommand(CLI::App& app, GenerateOptions& opts);
CLI::App* AddHealthCommand(CLI::App& app, HealthOptions& opts);

// One Generate call to the prefill node, or to the scout node when scout_address is set, with
// opts.timeout_seconds as the deadline.
grpc::Status CallGenerate(const GenerateOptions& opts, const kvwire::v1::GenerateRequest& request,
                          kvwire::v1::GenerateReply* reply);

// 0 ok, 1 the RPC failed (gRPC code name and message on stderr), 2 bad command line.
int RunGenerate(const GenerateOptions& opts);
// 0 when the server answers SERVING, 1 otherwise.
int RunHealth(const HealthOptions& opts);

}  // namespace kvwire::cli
