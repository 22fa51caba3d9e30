// Shadow passes end to end on the tiny model: a prefill and a decode node in process (real gRPC
// on loopback), the prefill node sampling requests, the decode node answering them and then
// measuring the compressed cache against the full one.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "kvcodec/kvcodec.h"
#include "proto/kvwire.grpc.pb.h"
#include "server/engine/engine.h"
#include "server/metrics/metrics_server.h"
#include "server/metrics/testing/scrape.h"
#include "server/nodes/prefill_service.h"
#include "server/nodes/servers.h"
#include "server/nodes/testing/tiny_model.h"
#include "server/shadow/shadow_pass.h"
#include "server/shadow/testing/binomial.h"
#include "server/shadow/shadow_runner.h"
#include "server/transport/decode_service.h"

namespace kvwire::shadow {
namespace {

using Clock = std::chrono::steady_clock;
using nodes::NodeOptions;
using nodes::RunningServer;

const char* kContext =
    "The harbor town kept its lighthouse lit every night for two hundred years. In the winter "
    "of the great storm, the keeper's daughter rowed out to the reef and brought back nine "
    "sailors. The town named the new pier after her.";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "shadow_test_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Reports of finished passes, collected from the worker thread.
class Reports {
 public:
  void Add(const ShadowReport& r) {
    std::lock_guard<std::mutex> lock(mu_);
    reports_.push_back(r);
  }
  std::vector<ShadowReport> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return reports_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<ShadowReport> reports_;
};

// A decode and a prefill node on the tiny model; the prefill node samples every request.
class ShadowNodesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(nodes::testing::WriteTinyModel(dir_.path() / "m", nodes::testing::TinyConfig(2)).ok());
  }

  void Start(ShadowOptions shadow, double rate = 1.0) {
    shadow.on_pass_done = [this](const ShadowReport& r) { reports_.Add(r); };
    NodeOptions d{.model = {.model_dir = (dir_.path() / "m").string(), .threads = 1}};
    d.metrics_port = 0;
    d.shadow = std::move(shadow);
    auto decode = nodes::StartDecodeNode(d);
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);
    ASSERT_NE(decode_->shadow(), nullptr);
    NodeOptions p{.model = {.model_dir = (dir_.path() / "m").string(), .threads = 1},
                  .decode_address = "127.0.0.1:" + std::to_string(decode_->port())};
    p.shadow_rate = rate;
    p.shadow_seed = 11;
    auto prefill = nodes::StartPrefillNode(p);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    prefill_ = *std::move(prefill);
    stub_ = kvwire::v1::PrefillNode::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(prefill_->port()), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Generate(const std::string& id, const std::string& preset, int max_new_tokens,
                        kvwire::v1::GenerateReply* reply) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    kvwire::v1::GenerateRequest req;
    req.set_request_id(id);
    req.set_context(kContext);
    req.set_question("Who rowed out to the reef?");
    req.set_codec_preset(preset);
    req.mutable_options()->set_max_new_tokens(max_new_tokens);
    return stub_->Generate(&ctx, req, reply);
  }

  std::map<std::string, double> Scrape() {
    auto text = metrics::testing::HttpGet("127.0.0.1", decode_->metrics_port(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? metrics::testing::ParseSamples(*text) : std::map<std::string, double>{};
  }

  TempDir dir_;
  Reports reports_;
  std::unique_ptr<RunningServer> decode_;
  std::unique_ptr<RunningServer> prefill_;
  std::unique_ptr<kvwire::v1::PrefillNode::Stub> stub_;
};

double At(const std::map<std::string, double>& s, const std::string& key) {
  auto it = s.find(key);
  return it == s.end() ? std::nan("") : it->second;
}

TEST_F(ShadowNodesTest, LosslessPresetsGiveAgreementOneAndKlExactlyZero) {
  Start({.tokens = 6});
  const std::vector<std::string> lossless = {"full", "full-zstd", "full-rans", "text"};
  std::map<std::string, int> generated;
  for (const std::string& preset : lossless) {
    kvwire::v1::GenerateReply reply;
    grpc::Status st = Generate("lossless-" + preset, preset, 8, &reply);
    ASSERT_TRUE(st.ok()) << preset << ": " << st.error_message();
    generated[reply.request_id()] = reply.token_ids_size();
  }
  kvwire::v1::GenerateReply lossy;
  // (The int2 preset's 32-channel groups do not fit the tiny model's 16-channel heads.)
  grpc::Status st = Generate("lossy-int3", "int3", 8, &lossy);
  ASSERT_TRUE(st.ok()) << st.error_message();
  decode_->shadow()->WaitIdle();

  const std::vector<ShadowReport> reports = reports_.Get();
  ASSERT_EQ(reports.size(), lossless.size() + 1);
  for (const ShadowReport& r : reports) {
    ASSERT_TRUE(r.status.ok()) << r.request_id << ": " << r.status;
    if (r.request_id == "lossy-int3") continue;
    SCOPED_TRACE(r.request_id);
    EXPECT_EQ(r.preset, r.request_id.substr(9));
    EXPECT_EQ(r.measures.fidelity.steps, std::min(6, generated[r.request_id]));
    EXPECT_GT(r.measures.fidelity.steps, 0);
    EXPECT_EQ(r.measures.fidelity.agreement(), 1.0);
    EXPECT_EQ(r.measures.fidelity.kl_sum, 0.0);  // exactly: same bits, same distributions
    EXPECT_EQ(r.measures.keys.diff2, 0.0);
    EXPECT_EQ(r.measures.values.diff2, 0.0);
    EXPECT_GT(r.measures.keys.ref2, 0.0);
  }
  // INT3 moves the cache: a reconstruction error and a KL above zero (the tiny model's
  // near-uniform outputs keep its top-1 choices, so agreement says little here).
  const ShadowReport& int3 = *std::find_if(reports.begin(), reports.end(),
                                           [](const ShadowReport& r) { return r.request_id == "lossy-int3"; });
  EXPECT_EQ(int3.preset, "int3");
  EXPECT_GT(int3.measures.keys.relative(), 0.05);
  EXPECT_GT(int3.measures.values.relative(), 0.05);
  EXPECT_GT(int3.measures.fidelity.mean_kl(), 0.0);

  // The same figures on /metrics, by preset.
  const auto s = Scrape();
  EXPECT_EQ(At(s, R"(kvwire_shadow_passes_total{outcome="done",preset="full",role="decode"})"), 1);
  EXPECT_EQ(At(s, R"(kvwire_shadow_agreement_sum{preset="full",role="decode"})"), 1);
  EXPECT_EQ(At(s, R"(kvwire_shadow_kl_divergence_sum{preset="full",role="decode"})"), 0);
  EXPECT_EQ(At(s, R"(kvwire_shadow_reconstruction_error_sum{preset="full",role="decode",tensor="key"})"), 0);
  EXPECT_GT(At(s, R"(kvwire_shadow_kl_divergence_sum{preset="int3",role="decode"})"), 0);
  EXPECT_EQ(At(s, R"(kvwire_shadow_duration_seconds_count{role="decode"})"), 5);
  EXPECT_EQ(At(s, R"(kvwire_shadow_queue_length{role="decode"})"), 0);
  EXPECT_EQ(At(s, R"(kvwire_caches_held_bytes{role="decode"})"), 0);
}

// The reply comes back while the shadow pass is held on the worker: the user's latency cannot
// contain shadow work. Ordering, not timing: the pass is released only after the reply arrived,
// and it started only after the request was fully generated (it is submitted after Generate).
TEST_F(ShadowNodesTest, ReplyArrivesWhileTheShadowPassIsHeld) {
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  Start({.tokens = 4, .on_pass_start = [&](const std::string&) {
           started.set_value();
           released.wait();
         }});
  kvwire::v1::GenerateReply reply;
  grpc::Status st = Generate("held", "int4-rans", 4, &reply);
  const Clock::time_point reply_at = Clock::now();
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_GT(reply.token_ids_size(), 0);
  ASSERT_EQ(started.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_TRUE(reports_.Get().empty());  // held: nothing measured yet, the reply already here
  EXPECT_EQ(At(Scrape(), R"(kvwire_shadow_queue_length{role="decode"})"), 1);
  const Clock::time_point release_at = Clock::now();
  release.set_value();
  decode_->shadow()->WaitIdle();
  const auto reports = reports_.Get();
  ASSERT_EQ(reports.size(), 1u);
  const ShadowReport& r = reports[0];
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_LE(reply_at, release_at);
  EXPECT_LE(release_at, r.finished);
  EXPECT_LE(r.submitted, r.started);
  EXPECT_EQ(r.measures.fidelity.steps, std::min(4, reply.token_ids_size()));
}

TEST_F(ShadowNodesTest, FullQueueDropsPassesAndNeverDelaysReplies) {
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> first{true};
  Start({.tokens = 2, .queue_capacity = 2, .on_pass_start = [&](const std::string&) {
           if (first.exchange(false)) {
             started.set_value();
             released.wait();
           }
         }});
  // The first pass holds the worker; two more wait; the other three are dropped. Every reply
  // still comes back (sequential calls: a reply waiting on a pass would never arrive).
  for (int i = 0; i < 6; ++i) {
    kvwire::v1::GenerateReply reply;
    grpc::Status st = Generate("load-" + std::to_string(i), "int4", 2, &reply);
    ASSERT_TRUE(st.ok()) << st.error_message();
    if (i == 0) {
      ASSERT_EQ(started.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
    }
  }
  auto s = Scrape();
  EXPECT_EQ(At(s, R"(kvwire_shadow_passes_total{outcome="dropped",preset="int4",role="decode"})"), 3);
  EXPECT_EQ(At(s, R"(kvwire_shadow_passes_total{outcome="done",preset="int4",role="decode"})"), 0);
  EXPECT_EQ(At(s, R"(kvwire_shadow_queue_length{role="decode"})"), 3);
  EXPECT_EQ(At(s, R"(kvwire_caches_held{role="decode"})"), 3);  // bounded: 1 running + 2 waiting
  release.set_value();
  decode_->shadow()->WaitIdle();
  s = Scrape();
  EXPECT_EQ(At(s, R"(kvwire_shadow_passes_total{outcome="done",preset="int4",role="decode"})"), 3);
  EXPECT_EQ(At(s, R"(kvwire_caches_held{role="decode"})"), 0);
  std::vector<std::string> measured;
  for (const ShadowReport& r : reports_.Get()) measured.push_back(r.request_id);
  EXPECT_EQ(measured, (std::vector<std::string>{"load-0", "load-1", "load-2"}));
}

TEST_F(ShadowNodesTest, RateZeroSamplesNothing) {
  Start({.tokens = 2}, /*rate=*/0.0);
  for (int i = 0; i < 3; ++i) {
    kvwire::v1::GenerateReply reply;
    ASSERT_TRUE(Generate("r0-" + std::to_string(i), "int4", 2, &reply).ok());
  }
  decode_->shadow()->WaitIdle();
  EXPECT_TRUE(reports_.Get().empty());
  EXPECT_TRUE(std::isnan(At(Scrape(), R"(kvwire_shadow_passes_total{outcome="done",preset="int4",role="decode"})")));
}

// A bad shadow request (ids that do not match the cache) fails the pass, not the reply.
TEST_F(ShadowNodesTest, BadShadowRequestFailsThePassNotTheReply) {
  Start({.tokens = 2}, /*rate=*/0.0);
  const nodes::NodeModel& model = decode_->model();
  std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const int cached = static_cast<int>(ids.size()) - 1;
  auto prefill = model.engine->Prefill(std::span(ids).first(cached));
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  auto codec = kvcodec::CodecConfig::Parse("plan=*:int8");
  ASSERT_TRUE(codec.ok());
  auto frame = kvcodec::EncodeFrame(prefill->shape, *codec, model.fingerprint, prefill->positions,
                                    prefill->layer_views(), kvcodec::Selection::KeepAll(prefill->shape));
  ASSERT_TRUE(frame.ok()) << frame.status();
  auto stub = kvwire::v1::DecodeNode::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(decode_->port()), grpc::InsecureChannelCredentials()));
  kvwire::v1::UploadHeader header;
  header.set_request_id("bad-shadow");
  header.set_prompt_tokens(cached);
  header.add_suffix_token_ids(ids.back());
  header.mutable_options()->set_max_new_tokens(2);
  header.mutable_shadow()->add_prompt_token_ids(1);  // one id for a cache of 8 tokens
  header.mutable_shadow()->set_preset("nosuch-preset");
  kvwire::v1::GenerateReply reply;
  absl::Status sent = transport::SendFrame(*stub, header, *frame, 1 << 20,
                                           std::chrono::system_clock::now() + std::chrono::seconds(60),
                                           &reply);
  ASSERT_TRUE(sent.ok()) << sent;
  EXPECT_GE(reply.token_ids_size(), 1);
  decode_->shadow()->WaitIdle();
  const auto reports = reports_.Get();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].status.code(), absl::StatusCode::kInvalidArgument) << reports[0].status;
  EXPECT_EQ(reports[0].preset, "custom");  // unknown names do not become label values
  EXPECT_EQ(At(Scrape(), R"(kvwire_shadow_passes_total{outcome="failed",preset="custom",role="decode"})"), 1);
}

// A DecodeNode that records upload headers and answers at once: the cheap path for counting
// what the prefill node samples (no generation).
class RecordingDecodeNode final : public kvwire::v1::DecodeNode::Service {
 public:
  grpc::Status Generate(grpc::ServerContext*, grpc::ServerReader<kvwire::v1::CacheUpload>* reader,
                        kvwire::v1::GenerateReply*) override {
    kvwire::v1::CacheUpload message;
    while (reader->Read(&message)) {
      if (message.has_header()) {
        std::lock_guard<std::mutex> lock(mu_);
        headers_.push_back(message.header());
      }
    }
    return grpc::Status::OK;
  }
  std::vector<kvwire::v1::UploadHeader> headers() {
    std::lock_guard<std::mutex> lock(mu_);
    return headers_;
  }

 private:
  std::mutex mu_;
  std::vector<kvwire::v1::UploadHeader> headers_;
};

using ::kvwire::shadow::testing::BinomialBounds;

TEST(ShadowSamplingTest, PrefillNodeSamplesAtItsRateAndSendsThePromptIds) {
  TempDir dir;
  ASSERT_TRUE(nodes::testing::WriteTinyModel(dir.path() / "m", nodes::testing::TinyConfig(1)).ok());
  auto model = nodes::NodeModel::Load({.model_dir = (dir.path() / "m").string(), .threads = 1});
  ASSERT_TRUE(model.ok()) << model.status();
  RecordingDecodeNode recorder;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&recorder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server != nullptr && port > 0);
  metrics::NodeMetrics node_metrics("prefill");
  nodes::PrefillNodeService service(
      {.model = model->get(),
       .decode_channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                             grpc::InsecureChannelCredentials()),
       .metrics = &node_metrics,
       .shadow_rate = 0.25,
       .shadow_seed = 2026});
  constexpr int kRequests = 200;
  kvwire::v1::GenerateRequest request;
  request.set_context("A short note.");
  request.set_question("What?");
  request.set_codec_preset("int4");
  auto prompt = nodes::BuildPrompt(**model, request);
  ASSERT_TRUE(prompt.ok());
  for (int i = 0; i < kRequests; ++i) {
    request.set_request_id("s-" + std::to_string(i));
    auto reply = service.Handle(request, Clock::now(),
                                std::chrono::system_clock::now() + std::chrono::seconds(60), nullptr);
    ASSERT_TRUE(reply.ok()) << reply.status();
  }
  server->Shutdown();
  const auto headers = recorder.headers();
  ASSERT_EQ(headers.size(), static_cast<size_t>(kRequests));
  int sampled = 0;
  const std::vector<int32_t> cached(prompt->token_ids.begin(), prompt->token_ids.end() - 1);
  for (const auto& h : headers) {
    if (!h.has_shadow()) continue;
    ++sampled;
    EXPECT_EQ(std::vector<int32_t>(h.shadow().prompt_token_ids().begin(), h.shadow().prompt_token_ids().end()),
              cached);
    EXPECT_EQ(h.shadow().prompt_token_ids_size(), h.prompt_tokens());
    EXPECT_EQ(h.shadow().preset(), "int4");
  }
  const auto [lo, hi] = BinomialBounds(kRequests, 0.25, 1e-6);
  EXPECT_GE(sampled, lo);
  EXPECT_LE(sampled, hi);
  EXPECT_GT(sampled, 0);
  EXPECT_LT(sampled, kRequests);
  // kvwire_shadow_sampled_total counts the same requests.
  auto exposer = metrics::MetricsServer::Start("127.0.0.1", 0, node_metrics.registry());
  ASSERT_TRUE(exposer.ok());
  auto text = metrics::testing::HttpGet("127.0.0.1", (*exposer)->port(), "/metrics");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(At(metrics::testing::ParseSamples(*text),
               R"(kvwire_shadow_sampled_total{preset="int4",role="prefill"})"),
            sampled);
}

// A one-layer tiny model and the shadow input of a 5-token prompt whose cache went through
// `codec`: the ids, suffix and generated tokens agree with the cache.
class TinyShadowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(nodes::testing::WriteTinyModel(dir_.path() / "m", nodes::testing::TinyConfig(1)).ok());
    auto engine = engine::Engine::Load({.model_dir = (dir_.path() / "m").string(), .threads = 1});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  ShadowInput Input(std::string_view codec_text) {
    const std::vector<int32_t> ids = {5, 6, 7, 8, 9};
    auto prefill = engine_->Prefill(ids);
    EXPECT_TRUE(prefill.ok());
    auto codec = kvcodec::CodecConfig::Parse(codec_text);
    EXPECT_TRUE(codec.ok());
    auto frame = kvcodec::EncodeFrame(prefill->shape, *codec, "", prefill->positions,
                                      prefill->layer_views(), kvcodec::Selection::KeepAll(prefill->shape));
    EXPECT_TRUE(frame.ok());
    kvcodec::FrameInfo info;
    auto layers = kvcodec::DecodeFrame(*frame, {}, "", &info);
    EXPECT_TRUE(layers.ok());
    return ShadowInput{.request_id = "r", .preset = "p", .shape = info.shape,
                       .positions = info.positions, .layers = *layers, .prompt_tokens = 5,
                       .prompt_token_ids = ids, .suffix_token_ids = {10}, .generated = {11, 12}};
  }

  TempDir dir_;
  std::unique_ptr<engine::Engine> engine_;
};

// Regression: shadow passes held rebuilt caches (and recomputed full ones) outside the node's
// cache budget. A pass now reserves both when submitted, is dropped when they do not fit, and
// gives the bytes back when it ends.
TEST_F(TinyShadowTest, PassesReserveFromTheCacheBudget) {
  const ShadowInput input = Input("plan=*:int8");
  uint64_t rebuilt = 0;
  for (const kvcodec::DecodedLayer& l : input.layers) {
    for (const auto& b : l.keys) rebuilt += b.size();
    for (const auto& b : l.values) rebuilt += b.size();
  }
  const uint64_t need = rebuilt + input.shape.num_elements() * kvcodec::DTypeSize(engine_->cache_dtype());

  auto tight = std::make_shared<transport::CacheBudget>(need - 1);
  {
    ShadowRunner runner(*engine_, {.tokens = 2, .cache_budget = tight, .low_priority = false});
    EXPECT_FALSE(runner.Submit(input));
    EXPECT_EQ(tight->reserved(), 0u);
  }
  auto budget = std::make_shared<transport::CacheBudget>(need);
  std::atomic<uint64_t> during{0};
  Reports reports;
  {
    ShadowRunner runner(*engine_, {.tokens = 2,
                                   .cache_budget = budget,
                                   .low_priority = false,
                                   .on_pass_start = [&](const std::string&) { during = budget->reserved(); },
                                   .on_pass_done = [&](const ShadowReport& r) { reports.Add(r); }});
    EXPECT_TRUE(runner.Submit(input));
    runner.WaitIdle();
  }
  EXPECT_EQ(during.load(), need);
  EXPECT_EQ(budget->reserved(), 0u);
  ASSERT_EQ(reports.Get().size(), 1u);
  EXPECT_TRUE(reports.Get()[0].status.ok()) << reports.Get()[0].status;
}

TEST_F(TinyShadowTest, MeasureShadowRefusesInconsistentInputs) {
  const ShadowInput good = Input("plan=*:raw");
  auto ok = MeasureShadow(*engine_, good, 4);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->fidelity.steps, 2);  // min(N, generated)
  EXPECT_EQ(ok->fidelity.kl_sum, 0.0);

  auto expect_invalid = [&](ShadowInput in, int steps) {
    EXPECT_EQ(MeasureShadow(*engine_, in, steps).status().code(), absl::StatusCode::kInvalidArgument);
  };
  expect_invalid(good, 0);
  ShadowInput bad = good;
  bad.prompt_token_ids.pop_back();
  expect_invalid(bad, 4);
  bad = good;
  bad.suffix_token_ids.clear();
  expect_invalid(bad, 4);
  bad = good;
  bad.generated.clear();
  expect_invalid(bad, 4);
  bad = good;
  bad.layers.pop_back();
  expect_invalid(bad, 4);
  bad = good;
  bad.layers[0].keys[0].erase(bad.layers[0].keys[0].begin() + 3, bad.layers[0].keys[0].end());
  expect_invalid(bad, 4);
  bad = good;
  bad.prompt_tokens = 4;
  bad.prompt_token_ids.pop_back();  // the cache keeps position 4, outside a 4-token prompt
  expect_invalid(bad, 4);
  bad = good;
  bad.prompt_token_ids[0] = 100000;  // outside the vocabulary: the engine says so
  expect_invalid(bad, 4);
}

}  // namespace
}  // namespace kvwire::shadow
