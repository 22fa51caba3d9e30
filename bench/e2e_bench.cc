#include "bench/e2e_bench.h"

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "proto/kvwire.grpc.pb.h"
#include "server/nodes/prefill_service.h"
#include "server/nodes/servers.h"
#include "server/nodes/testing/tiny_model.h"
#include "server/scout/prompt_service.h"
#include "server/scout/scout_server.h"

namespace kvwire {
namespace {

using Clock = std::chrono::steady_clock;

// Removes the random model's directory when the bench ends.
struct TempDir {
  std::filesystem::path path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

const char* kFiller =
    "The harbor town kept its lighthouse lit every night for two hundred years, and the keeper "
    "wrote the weather, the ships and the tides into a ledger that still hangs by the door. ";

// A context whose prompt (context + question) is exactly `tokens` tokens, when the tokenizer
// allows it (the closest length below otherwise).
absl::StatusOr<kvwire::v1::GenerateRequest> MakeRequest(const nodes::NodeModel& model, int tokens) {
  kvwire::v1::GenerateRequest request;
  request.set_question("What did the keeper write into the ledger?");
  request.mutable_options()->set_max_new_tokens(1);
  auto count = [&](size_t chars, const std::string& text) -> absl::StatusOr<int> {
    request.set_context(text.substr(0, chars));
    auto prompt = nodes::BuildPrompt(model, request);
    if (!prompt.ok()) return prompt.status();
    return static_cast<int>(prompt->token_ids.size());
  };
  std::string text;
  for (;;) {
    text += kFiller;
    auto n = count(text.size(), text);
    if (!n.ok()) return n.status();
    if (*n >= tokens) break;
    if (text.size() > static_cast<size_t>(tokens) * 64) {
      return absl::InvalidArgumentError("cannot build a prompt of that many tokens");
    }
  }
  size_t lo = 1, hi = text.size();  // largest prefix with <= tokens tokens
  while (lo < hi) {
    const size_t mid = (lo + hi + 1) / 2;
    auto n = count(mid, text);
    if (!n.ok()) return n.status();
    if (*n <= tokens) lo = mid; else hi = mid - 1;
  }
  request.set_context(text.substr(0, lo));
  return request;
}

std::string Address(int port) { return absl::StrCat("127.0.0.1:", port); }

}  // namespace

absl::StatusOr<E2eReport> MeasureE2e(const E2eBenchOptions& o) {
  E2eReport report;
  report.tokens = o.tokens;
  report.reps = o.reps;
  TempDir random_dir;
  std::string model_dir = o.model_dir;
  if (!std::filesystem::exists(std::filesystem::path(model_dir) / "config.json")) {
    modelio::ModelConfig c = nodes::testing::TinyConfig(o.layers);
    c.hidden_size = o.hidden;
    c.intermediate_size = o.intermediate;
    c.num_attention_heads = o.heads;
    c.num_key_value_heads = o.kv_heads;
    if (o.heads <= 0 || o.hidden % o.heads != 0 || o.kv_heads <= 0 || o.heads % o.kv_heads != 0) {
      return absl::InvalidArgumentError("random model: hidden % heads and heads % kv_heads must be 0");
    }
    c.head_dim = o.hidden / o.heads;
    c.max_position_embeddings = std::max(4096, o.tokens + 16);
    std::string tmpl = (std::filesystem::temp_directory_path() / "kvwire_e2e_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return absl::InternalError("mkdtemp failed");
    random_dir.path = tmpl;
    if (absl::Status s = nodes::testing::WriteTinyModel(random_dir.path, c); !s.ok()) return s;
    model_dir = random_dir.path.string();
    report.model = absl::StrFormat(
        "random (%s absent): hidden %d, %d layers, %d heads, %d KV heads, byte-level tokenizer",
        o.model_dir, o.hidden, o.layers, o.heads, o.kv_heads);
  } else {
    report.model = model_dir;
  }

  const nodes::ModelOptions model{.model_dir = model_dir, .threads = o.threads};
  nodes::NodeOptions decode_opts{.model = model, .default_max_new_tokens = 1};
  decode_opts.extra_decode_service = [](const nodes::NodeModel& m) {
    return std::make_unique<scout::PromptNodeService>(
        scout::PromptServiceOptions{.model = &m, .workers = 1, .default_max_new_tokens = 1});
  };
  auto decode = nodes::StartDecodeNode(decode_opts);
  if (!decode.ok()) return decode.status();
  report.fingerprint = (*decode)->model().fingerprint;
  auto request = MakeRequest((*decode)->model(), o.tokens);
  if (!request.ok()) return request.status();

  for (double mbps : o.link_mbps) {
    auto prefill = nodes::StartPrefillNode({.model = model,
                                            .decode_address = Address((*decode)->port()),
                                            .workers = 1,
                                            .link_mbps = mbps});
    if (!prefill.ok()) return prefill.status();
    auto text = scout::StartScoutNode({.model = model,
                                       .prompt_address = Address((*decode)->port()),
                                       .default_codec = "text",
                                       .workers = 1,
                                       .link_mbps = mbps});
    if (!text.ok()) return text.status();
    auto prefill_stub = kvwire::v1::PrefillNode::NewStub(
        grpc::CreateChannel(Address((*prefill)->port()), grpc::InsecureChannelCredentials()));
    auto scout_stub = kvwire::v1::ScoutNode::NewStub(
        grpc::CreateChannel(Address((*text)->port()), grpc::InsecureChannelCredentials()));
    for (const std::string& preset : o.presets) {
      kvwire::v1::GenerateRequest r = *request;
      r.set_codec_preset(preset);
      E2eRow row{.preset = preset, .link_mbps = mbps};
      row.ttft_seconds = std::numeric_limits<double>::infinity();
      for (int rep = 0; rep <= o.reps; ++rep) {  // rep 0 warms up
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
        kvwire::v1::GenerateReply reply;
        const Clock::time_point start = Clock::now();
        const grpc::Status status = preset == "text" ? scout_stub->Generate(&context, r, &reply)
                                                     : prefill_stub->Generate(&context, r, &reply);
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        if (!status.ok()) {
          return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                              absl::StrCat(preset, ": ", status.error_message()));
        }
        if (rep == 0 || seconds >= row.ttft_seconds) continue;
        const kvwire::v1::RequestStats& st = reply.stats();
        row.ttft_seconds = seconds;
        row.server_ttft_seconds = st.first_token_seconds();
        row.wire_bytes = st.wire_bytes();
        row.raw_bytes = st.raw_bytes();
        row.prefill_seconds = st.prefill_seconds();
        row.overlap_seconds = st.overlap_seconds();
        row.prompt_tokens = st.prompt_tokens();
      }
      row.link_seconds = mbps > 0 ? 8.0 * row.wire_bytes / (mbps * 1e6) : 0;
      row.floor_seconds = row.link_seconds + row.prefill_seconds;
      report.rows.push_back(row);
    }
    (*text)->Shutdown(std::chrono::seconds(5));
    (*prefill)->Shutdown(std::chrono::seconds(5));
  }
  (*decode)->Shutdown(std::chrono::seconds(5));
  return report;
}

int RunE2eBench(const E2eBenchOptions& options) {
  auto report = MeasureE2e(options);
  if (!report.ok()) {
    std::cerr << "kvwire bench e2e: " << report.status().ToString() << "\n";
    return 1;
  }
  if (options.json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const E2eRow& r : report->rows) {
      rows.push_back({{"path", r.preset == "text" ? "text" : "prefill"},
                      {"preset", r.preset},
                      {"link_mbps", r.link_mbps},
                      {"prompt_tokens", r.prompt_tokens},
                      {"raw_bytes", r.raw_bytes},
                      {"wire_bytes", r.wire_bytes},
                      {"prefill_seconds", r.prefill_seconds},
                      {"link_seconds", r.link_seconds},
                      {"floor_seconds", r.floor_seconds},
                      {"ttft_seconds", r.ttft_seconds},
                      {"server_ttft_seconds", r.server_ttft_seconds},
                      {"ttft_over_floor", r.floor_seconds > 0 ? r.ttft_seconds / r.floor_seconds : 0},
                      {"overlap_seconds", r.overlap_seconds}});
    }
    std::cout << nlohmann::json{{"model", report->model},
                                {"fingerprint", report->fingerprint},
                                {"tokens", report->tokens},
                                {"reps", report->reps},
                                {"rows", rows}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::printf("model: %s (%s)\nprompt: %d tokens; time to first token, best of %d after a warm-up; "
              "floor = wire bytes / link + prefill\n\n",
              report->model.c_str(), report->fingerprint.c_str(), report->tokens, report->reps);
  std::printf("%-14s %9s %12s %10s %10s %10s %10s %9s %10s\n", "preset", "link", "wire bytes",
              "prefill s", "link s", "floor s", "TTFT s", "TTFT/floor", "overlap s");
  for (const E2eRow& r : report->rows) {
    std::printf("%-14s %6.0f Mb %12llu %10.4f %10.4f %10.4f %10.4f %9.2fx %10.4f\n",
                r.preset.c_str(), r.link_mbps, static_cast<unsigned long long>(r.wire_bytes),
                r.prefill_seconds, r.link_seconds, r.floor_seconds, r.ttft_seconds,
                r.floor_seconds > 0 ? r.ttft_seconds / r.floor_seconds : 0, r.overlap_seconds);
  }
  return 0;
}

}  // namespace kvwire
