#include "client/generate_cmd.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "proto/kvwire.grpc.pb.h"
#include "proto/kvwire.pb.h"
#include "server/transport/decode_service.h"
#include "server/tokenizer/utf8.h"
#include "server/transport/security.h"

namespace kvwire::cli {

CLI::App* AddGenerateCommand(CLI::App& app, GenerateOptions& opts) {
  auto* cmd = app.add_subcommand("generate", "Send one request to a prefill node and print the answer and its statistics");
  cmd->footer("Exit codes: 0 answered; 1 the call failed (its gRPC code name and message on stderr, e.g. "
              "INVALID_ARGUMENT, UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAUTHENTICATED); "
              "2 bad command line.");
  auto* prefill = cmd->add_option("--prefill", opts.prefill_address, "The prefill node's host:port (the cache path)");
  auto* scout = cmd->add_option("--scout", opts.scout_address,
                                "A scout node's host:port instead (scout path with scout-* presets, text path with 'text')");
  prefill->excludes(scout);
  cmd->callback([prefill, scout] {
    if (prefill->count() + scout->count() == 0) throw CLI::RequiredError("--prefill or --scout");
  });
  auto* context = cmd->add_option("--context", opts.context, "Context text (the cache that is compressed and shipped)");
  auto* context_file = cmd->add_option("--context-file", opts.context_file, "Read the context from this file")->check(CLI::ExistingFile);
  context->excludes(context_file);
  auto* question = cmd->add_option("--question", opts.question, "Question about the context");
  auto* message = cmd->add_option("--message", opts.messages, "Chat turn role:text (repeatable; excludes --context/--question)");
  message->excludes(context)->excludes(context_file)->excludes(question);
  auto* preset = cmd->add_option("--preset", opts.preset, "Codec preset name (default: the node's)");
  auto* codec = cmd->add_option("--codec", opts.codec, "Codec config text, e.g. \"select=snapkv;keep=0.25;plan=*:int4;entropy=rans\"");
  preset->excludes(codec);
  auto* budget = cmd->add_option("--byte-budget", opts.byte_budget, "Rate control: the most bytes the cache may take on the wire; the prefill node picks the best rung of its quality ladder that fits (excludes --preset/--codec)")->check(CLI::PositiveNumber);
  auto* ttft = cmd->add_option("--ttft-target", opts.ttft_target_seconds, "Rate control: seconds to the first token; the frame gets what the link carries in the time left after the node's own work")->check(CLI::PositiveNumber);
  auto* link = cmd->add_option("--link-mbps", opts.link_mbps, "With --ttft-target: the link to the decode node in Mbit/s (default: the node's own figure)")->check(CLI::PositiveNumber);
  cmd->add_flag("--require-fit", opts.require_fit, "With rate control: fail (OUT_OF_RANGE) instead of sending the smallest rung when none fits");
  for (CLI::Option* rc : {budget, ttft}) rc->excludes(preset)->excludes(codec);
  link->needs(ttft);
  cmd->add_option("--max-new-tokens", opts.max_new_tokens, "Most tokens to generate; 0 = the node's default")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--temperature", opts.temperature, "Sampling temperature; 0 = greedy")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-p", opts.top_p, "Nucleus sampling; 0 or 1 disables it")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", opts.top_k, "Top-k sampling; 0 disables it")->capture_default_str()->check(CLI::Range(0, 1 << 22));
  cmd->add_option("--seed", opts.seed, "Sampler seed")->capture_default_str();
  cmd->add_option("--stop", opts.stop, "Stop string (repeatable)");
  cmd->add_option("--request-id", opts.request_id, "Request identifier (default: the node makes one)");
  cmd->add_option("--timeout", opts.timeout_seconds, "Deadline of the call in seconds")->capture_default_str()->check(CLI::Range(0.001, 86400.0));
  cmd->add_flag("--json", opts.json, "Machine-readable output");
  cmd->add_option("--tls-ca", opts.tls_ca, "Connect with TLS, verifying the node's certificate with this PEM CA bundle (default: plain text)")->check(CLI::ExistingFile);
  cmd->add_option("--tls-cert", opts.tls_cert, "PEM client certificate, for nodes that require one (with --tls-ca and --tls-key)")->check(CLI::ExistingFile);
  cmd->add_option("--tls-key", opts.tls_key, "PEM key of --tls-cert")->check(CLI::ExistingFile);
  cmd->add_option("--token-file", opts.token_file, "Send the bearer token in this file (nodes started with --auth-token-file require it)")->check(CLI::ExistingFile);
  return cmd;
}

CLI::App* AddHealthCommand(CLI::App& app, HealthOptions& opts) {
  auto* cmd = app.add_subcommand("health", "Ask a node's grpc.health.v1.Health/Check; exit 0 when SERVING");
  cmd->footer("Exit codes: 0 SERVING; 1 anything else (not serving, unreachable, deadline); 2 bad command line.");
  cmd->add_option("--target", opts.target, "The node's host:port")->required();
  cmd->add_option("--service", opts.service, "Service name to check (default: the whole server)");
  cmd->add_option("--timeout", opts.timeout_seconds, "Deadline in seconds")->capture_default_str()->check(CLI::Range(0.001, 3600.0));
  cmd->add_option("--tls-ca", opts.tls_ca, "Connect with TLS, verifying the node's certificate with this PEM CA bundle (default: plain text)")->check(CLI::ExistingFile);
  cmd->add_option("--tls-cert", opts.tls_cert, "PEM client certificate, for nodes that require one")->check(CLI::ExistingFile);
  cmd->add_option("--tls-key", opts.tls_key, "PEM key of --tls-cert")->check(CLI::ExistingFile);
  return cmd;
}

namespace {

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "CODE_" + std::to_string(static_cast<int>(code));
  }
}

const char* FinishName(kvwire::v1::FinishReason r) {
  switch (r) {
    case kvwire::v1::FINISH_REASON_EOS: return "eos";
    case kvwire::v1::FINISH_REASON_LENGTH: return "length";
    case kvwire::v1::FINISH_REASON_STOP: return "stop";
    default: return "unspecified";
  }
}

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace

grpc::Status CallGenerate(const GenerateOptions& opts, const kvwire::v1::GenerateRequest& request,
                          kvwire::v1::GenerateReply* reply) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  const bool scout = !opts.scout_address.empty();
  auto credentials = kvwire::transport::MakeUpstreamCredentials(
      {.tls_cert_file = opts.tls_cert, .tls_key_file = opts.tls_key, .upstream_ca_file = opts.tls_ca});
  if (!credentials.ok()) return kvwire::transport::ToGrpcStatus(credentials.status());
  auto channel = grpc::CreateCustomChannel(scout ? opts.scout_address : opts.prefill_address,
                                           *credentials, args);
  grpc::ClientContext context;
  if (!opts.token_file.empty()) {
    auto token = kvwire::transport::ReadTokenFile(opts.token_file);
    if (!token.ok()) return kvwire::transport::ToGrpcStatus(token.status());
    context.AddMetadata(kvwire::transport::kAuthorizationMetadata,
                        kvwire::transport::BearerValue(*token));
  }
  context.set_deadline(DeadlineIn(opts.timeout_seconds));
  if (scout) return kvwire::v1::ScoutNode::NewStub(channel)->Generate(&context, request, reply);
  return kvwire::v1::PrefillNode::NewStub(channel)->Generate(&context, request, reply);
}

namespace {

// proto3 strings must be UTF-8; sent anyway, the server's parser drops the call with no message
// at all. Names the first field that is not, and where, so the user can fix the input.
std::string FirstInvalidUtf8Field(const kvwire::v1::GenerateRequest& request) {
  std::vector<std::pair<std::string, const std::string*>> fields = {
      {"--context", &request.context()}, {"--question", &request.question()},
      {"--codec", &request.codec_config()}, {"--preset", &request.codec_preset()},
      {"--request-id", &request.request_id()}};
  for (const auto& m : request.messages()) {
    fields.push_back({"--message role", &m.role()});
    fields.push_back({"--message text", &m.content()});
  }
  for (const std::string& s : request.options().stop()) fields.push_back({"--stop", &s});
  for (const auto& [name, text] : fields) {
    const size_t at = kvwire::tokenizer::utf8::FindInvalid(*text);
    if (at != std::string::npos) {
      return absl::StrCat(name, " is not valid UTF-8 (first bad byte at offset ", at, ")");
    }
  }
  return "";
}

}  // namespace

int RunGenerate(const GenerateOptions& opts) {
  kvwire::v1::GenerateRequest request;
  request.set_request_id(opts.request_id);
  if (!opts.context_file.empty()) {
    std::ifstream in(opts.context_file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in) {
      std::cerr << "kvwire generate: cannot read " << opts.context_file << "\n";
      return 2;
    }
    request.set_context(text.str());
  } else {
    request.set_context(opts.context);
  }
  request.set_question(opts.question);
  for (const std::string& m : opts.messages) {
    const size_t colon = m.find(':');
    if (colon == std::string::npos || colon == 0) {
      std::cerr << "kvwire generate: --message must be role:text, got \"" << m << "\"\n";
      return 2;
    }
    auto* msg = request.add_messages();
    msg->set_role(m.substr(0, colon));
    msg->set_content(m.substr(colon + 1));
  }
  if (request.messages_size() == 0 && request.context().empty() && request.question().empty()) {
    std::cerr << "kvwire generate: give --context, --context-file, --question or --message\n";
    return 2;
  }
  if (!opts.codec.empty()) request.set_codec_config(opts.codec);
  if (!opts.preset.empty()) request.set_codec_preset(opts.preset);
  for (const std::string& s : opts.stop) request.mutable_options()->add_stop(s);
  if (opts.require_fit && opts.byte_budget == 0 && opts.ttft_target_seconds == 0) {
    std::cerr << "kvwire generate: --require-fit needs --byte-budget or --ttft-target\n";
    return 2;
  }
  if (opts.byte_budget > 0 || opts.ttft_target_seconds > 0) {
    kvwire::v1::RateControl* rc = request.mutable_rate_control();
    rc->set_byte_budget(opts.byte_budget);
    rc->set_ttft_target_seconds(opts.ttft_target_seconds);
    rc->set_link_mbps(opts.link_mbps);
    rc->set_require_fit(opts.require_fit);
  }
  if (std::string bad = FirstInvalidUtf8Field(request); !bad.empty()) {
    std::cerr << "kvwire generate: " << bad << "\n";
    return 2;
  }
  auto* o = request.mutable_options();
  o->set_max_new_tokens(opts.max_new_tokens);
  o->set_temperature(opts.temperature);
  o->set_top_p(opts.top_p);
  o->set_top_k(opts.top_k);
  o->set_seed(opts.seed);

  kvwire::v1::GenerateReply reply;
  const grpc::Status status = CallGenerate(opts, request, &reply);
  if (!status.ok()) {
    std::cerr << "kvwire generate: " << CodeName(status.error_code()) << ": " << status.error_message() << "\n";
    return 1;
  }

  const auto& s = reply.stats();
  if (opts.json) {
    nlohmann::json j = {
        {"request_id", reply.request_id()},
        {"text", reply.text()},
        {"token_ids", std::vector<int32_t>(reply.token_ids().begin(), reply.token_ids().end())},
        {"finish_reason", FinishName(reply.finish_reason())},
        {"codec_config", reply.codec_config()},
        {"model_fingerprint", reply.model_fingerprint()},
        {"stats",
         {{"raw_bytes", s.raw_bytes()},
          {"wire_bytes", s.wire_bytes()},
          {"bits_per_element", s.bits_per_element()},
          {"kept_fraction", s.kept_fraction()},
          {"prefill_seconds", s.prefill_seconds()},
          {"encode_seconds", s.encode_seconds()},
          {"transfer_seconds", s.transfer_seconds()},
          {"upload_seconds", s.upload_seconds()},
          {"overlap_seconds", s.overlap_seconds()},
          {"rebuild_seconds", s.rebuild_seconds()},
          {"first_token_seconds", s.first_token_seconds()},
          {"tokens_per_second", s.tokens_per_second()},
          {"num_layers", s.num_layers()},
          {"num_tokens", s.num_tokens()},
          {"prompt_tokens", s.prompt_tokens()},
          {"generated_tokens", s.generated_tokens()},
          {"scout_seconds", s.scout_seconds()},
          {"selection_overlap", s.selection_overlap()}}}};
    if (reply.has_rate_decision()) {
      const auto& d = reply.rate_decision();
      j["rate_decision"] = {{"rung", d.rung()},
                            {"codec_config", d.codec_config()},
                            {"budget_bytes", d.budget_bytes()},
                            {"predicted_bytes", d.predicted_bytes()},
                            {"fits", d.fits()},
                            {"relative_score", d.relative_score()}};
    }
    // Replacement characters rather than an exception if the model produced invalid UTF-8.
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    return 0;
  }
  std::cout << reply.text() << "\n\n";
  std::printf("request      %s  model=%s\n", reply.request_id().c_str(), reply.model_fingerprint().c_str());
  std::printf("codec        %s\n", reply.codec_config().c_str());
  if (reply.has_rate_decision()) {
    const auto& d = reply.rate_decision();
    std::printf("rate         rung=%s predicted=%.0f budget=%.0f bytes%s  relative_score=%.3f\n",
                d.rung().c_str(), d.predicted_bytes(), d.budget_bytes(),
                d.fits() ? "" : " (nothing fits: the smallest rung)", d.relative_score());
  }
  std::printf("finish       %s  prompt_tokens=%d generated_tokens=%d cache=%d layers x %d tokens\n",
              FinishName(reply.finish_reason()), s.prompt_tokens(), s.generated_tokens(), s.num_layers(),
              s.num_tokens());
  const double ratio = s.wire_bytes() > 0 ? static_cast<double>(s.raw_bytes()) / static_cast<double>(s.wire_bytes()) : 0.0;
  std::printf("bytes        raw=%llu wire=%llu (%.2fx)  bits/element=%.3f  kept=%.3f\n",
              static_cast<unsigned long long>(s.raw_bytes()), static_cast<unsigned long long>(s.wire_bytes()),
              ratio, s.bits_per_element(), s.kept_fraction());
  std::printf("seconds      prefill=%.4f encode=%.4f transfer=%.4f rebuild=%.4f first_token=%.4f\n",
              s.prefill_seconds(), s.encode_seconds(), s.transfer_seconds(), s.rebuild_seconds(),
              s.first_token_seconds());
  if (s.upload_seconds() > 0 || s.overlap_seconds() > 0) {
    // Layers are shipped as they are computed: the stages overlap.
    std::printf("pipeline     upload=%.4f overlap=%.4f (saved over prefill+encode+upload run in turn)\n",
                s.upload_seconds(), s.overlap_seconds());
  }
  std::printf("decode       %.2f tokens/s\n", s.tokens_per_second());
  std::fflush(stdout);
  return 0;
}

// grpc.health.v1.Health/Check through a generic stub: Debian's grpc++ serves the health service
// but ships no generated client for it, and the two messages are one field each:
//   HealthCheckRequest  { string service = 1; }
//   HealthCheckResponse { ServingStatus status = 1; }  // 1 = SERVING
int RunHealth(const HealthOptions& opts) {
  auto credentials = kvwire::transport::MakeUpstreamCredentials(
      {.tls_cert_file = opts.tls_cert, .tls_key_file = opts.tls_key, .upstream_ca_file = opts.tls_ca});
  if (!credentials.ok()) {
    std::cerr << "kvwire health: " << credentials.status().ToString() << "\n";
    return 1;
  }
  auto channel = grpc::CreateChannel(opts.target, *credentials);
  grpc::GenericStub stub(channel);
  std::string request_bytes;
  if (!opts.service.empty()) {
    if (opts.service.size() > 127) {
      std::cerr << "kvwire health: service name too long\n";
      return 2;
    }
    request_bytes.push_back('\x0a');
    request_bytes.push_back(static_cast<char>(opts.service.size()));
    request_bytes += opts.service;
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(opts.timeout_seconds));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok) {
    std::cerr << "kvwire health: " << opts.target << ": the call did not complete\n";
    return 1;
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) {
    std::cerr << "kvwire health: " << opts.target << ": " << CodeName(status.error_code()) << ": "
              << status.error_message() << "\n";
    return 1;
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  // Field 1, varint (tag byte 0x08); an absent field is 0 = UNKNOWN.
  int serving_status = 0;
  if (bytes.size() >= 2 && bytes[0] == '\x08') serving_status = static_cast<unsigned char>(bytes[1]);
  static const char* kNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  const char* name = serving_status >= 0 && serving_status < 4 ? kNames[serving_status] : "INVALID";
  if (serving_status == 1) {
    std::cout << opts.target << ": SERVING" << std::endl;
    return 0;
  }
  std::cerr << "kvwire health: " << opts.target << ": " << name << "\n";
  return 1;
}

}  // namespace kvwire::cli
