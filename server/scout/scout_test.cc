// The scout and text paths end to end over loopback gRPC: a scout node (small model) in front of
// a PromptNode (big model), on the tiny random models of server/nodes/testing.
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "proto/kvwire.grpc.pb.h"
#include "server/engine/engine.h"
#include "server/nodes/model.h"
#include "server/nodes/prefill_service.h"
#include "server/nodes/testing/tiny_model.h"
#include "server/scout/index_coding.h"
#include "server/scout/prompt_service.h"
#include "server/scout/scout_server.h"
#include "server/scout/token_selection.h"
#include "server/metrics/testing/scrape.h"
#include "server/transport/decode_service.h"

namespace kvwire::scout {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

const char* kContext =
    "The harbor town kept its lighthouse lit every night for two hundred years. In the winter "
    "of the great storm, the keeper's daughter rowed out to the reef and brought back nine "
    "sailors. The town named the new pier after her, and every spring the children race "
    "small boats from the pier to the reef and back.";
const char* kQuestion = "Who rowed out to the reef?";

// A big node that never answers: it holds every call until the caller cancels it (or the
// call's deadline passes), counting the calls it got and the cancels it saw.
class HangingPromptNode final : public kvwire::v1::PromptNode::CallbackService {
 public:
  HangingPromptNode() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~HangingPromptNode() override { server_->Shutdown(std::chrono::system_clock::now()); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int arrived() {
    std::lock_guard<std::mutex> lock(mu_);
    return arrived_;
  }
  // Whether `n` calls arrived (were cancelled) within `wait`.
  bool WaitArrived(int n, std::chrono::milliseconds wait) { return WaitFor(&arrived_, n, wait); }
  bool WaitCancelled(int n, std::chrono::milliseconds wait) {
    return WaitFor(&cancelled_, n, wait);
  }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext*, const kvwire::v1::TokenUpload*,
                                     kvwire::v1::GenerateReply*) override {
    class Held final : public grpc::ServerUnaryReactor {
     public:
      explicit Held(HangingPromptNode* node) : node_(node) {}
      void OnCancel() override {
        node_->Count(&node_->cancelled_);
        Finish(grpc::Status::CANCELLED);
      }
      void OnDone() override { delete this; }

     private:
      HangingPromptNode* node_;
    };
    Count(&arrived_);
    return new Held(this);
  }

 private:
  void Count(int* counter) {
    std::lock_guard<std::mutex> lock(mu_);
    ++*counter;
    cv_.notify_all();
  }
  bool WaitFor(const int* counter, int n, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, wait, [&] { return *counter >= n; });
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int cancelled_ = 0;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;  // last: shut down while the counters still exist
};

// A unary call on a thread of its own, so a test can cancel it or wait for it to end.
class PendingCall {
 public:
  using Invoke = std::function<grpc::Status(grpc::ClientContext*)>;
  explicit PendingCall(Invoke invoke) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    thread_ = std::thread([this, invoke = std::move(invoke)] {
      grpc::Status status = invoke(&context_);
      std::lock_guard<std::mutex> lock(mu_);
      status_ = std::move(status);
      cv_.notify_all();
    });
  }
  ~PendingCall() {
    Cancel();
    thread_.join();
  }
  void Cancel() { context_.TryCancel(); }
  // The call's status once it has ended; nullopt while it still runs after `wait`.
  std::optional<grpc::Status> Wait(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [this] { return status_.has_value(); });
    return status_;
  }

 private:
  grpc::ClientContext context_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<grpc::Status> status_;
  std::thread thread_;
};

template <typename Service, typename Request>
PendingCall::Invoke CallOn(int port, Request request) {
  return [port, request = std::move(request)](grpc::ClientContext* context) {
    auto stub = Service::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                     grpc::InsecureChannelCredentials()));
    kvwire::v1::GenerateReply reply;
    return stub->Generate(context, request, &reply);
  };
}

// Of `calls`, the first to end within `wait` and its status (null when none did).
std::pair<PendingCall*, std::optional<grpc::Status>> FirstToEnd(std::vector<PendingCall*> calls,
                                                                std::chrono::milliseconds wait) {
  const auto until = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < until) {
    for (PendingCall* call : calls) {
      if (auto status = call->Wait(std::chrono::milliseconds(5))) return {call, status};
    }
  }
  return {nullptr, std::nullopt};
}

class ScoutTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl = (fs::temp_directory_path() / "scout_test_XXXXXX").string();
    root_ = new fs::path(mkdtemp(tmpl.data()));
    ASSERT_TRUE(nodes::testing::WriteTinyModel(*root_ / "big", nodes::testing::TinyConfig(4)).ok());
    ASSERT_TRUE(nodes::testing::WriteTinyModel(*root_ / "small", nodes::testing::TinyConfig(2)).ok());
    auto big = nodes::NodeModel::Load({.model_dir = (*root_ / "big").string(), .threads = 1});
    ASSERT_TRUE(big.ok()) << big.status();
    big_ = std::move(*big).release();
    prompt_service_ = new PromptNodeService({.model = big_, .workers = 4});
    grpc::ServerBuilder builder;
    transport::ConfigureServerBuilder(builder);
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &prompt_port_);
    builder.RegisterService(prompt_service_);
    prompt_server_ = builder.BuildAndStart().release();
    ASSERT_NE(prompt_port_, 0);
    const std::string prompt_address = "127.0.0.1:" + std::to_string(prompt_port_);
    auto start = [&](const fs::path& dir, const std::string& address) {
      auto s = StartScoutNode({.model = {.model_dir = dir.string(), .threads = 1},
                               .prompt_address = address, .workers = 4});
      EXPECT_TRUE(s.ok()) << s.status();
      return s.ok() ? std::move(*s).release() : nullptr;
    };
    same_ = start(*root_ / "big", prompt_address);      // scout == big model
    small_ = start(*root_ / "small", prompt_address);   // a real, smaller scout
    orphan_ = start(*root_ / "small", "127.0.0.1:1");   // nothing listens there
    ASSERT_TRUE(same_ && small_ && orphan_);
  }

  static void TearDownTestSuite() {
    for (RunningScout* s : {same_, small_, orphan_}) delete s;
    prompt_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    delete prompt_server_;
    delete prompt_service_;
    delete big_;
    fs::remove_all(*root_);
    delete root_;
  }

  static kvwire::v1::GenerateRequest Request(const std::string& preset) {
    kvwire::v1::GenerateRequest r;
    r.set_context(kContext);
    r.set_question(kQuestion);
    r.set_codec_preset(preset);
    r.mutable_options()->set_max_new_tokens(10);
    return r;
  }

  static grpc::Status Call(int port, const kvwire::v1::GenerateRequest& request,
                           kvwire::v1::GenerateReply* reply,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto stub = kvwire::v1::ScoutNode::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    return stub->Generate(&context, request, reply);
  }

  static grpc::Status Upload(const kvwire::v1::TokenUpload& upload, kvwire::v1::GenerateReply* reply) {
    auto stub = kvwire::v1::PromptNode::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(prompt_port_), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub->Generate(&context, upload, reply);
  }

  // Greedy tokens of the big model from its own cache of the first T-1 prompt tokens, pruned
  // to `kept` (all when empty), then the last token fed: the reference for both paths.
  static std::vector<int32_t> LocalGenerate(const std::vector<int32_t>& ids,
                                            std::vector<int32_t> kept, int max_new) {
    const int cached = static_cast<int>(ids.size()) - 1;
    auto prefill = big_->engine->Prefill(std::span(ids.data(), cached));
    EXPECT_TRUE(prefill.ok());
    if (kept.empty()) {
      for (int t = 0; t < cached; ++t) kept.push_back(t);
    }
    const kvcodec::CacheShape& s = prefill->shape;
    const size_t row = s.head_dim * kvcodec::DTypeSize(s.dtype);
    std::vector<kvcodec::DecodedLayer> layers(s.num_layers);
    for (int l = 0; l < s.num_layers; ++l) {
      layers[l].layer = l;
      layers[l].kept.assign(s.num_kv_heads, kept);
      for (int h = 0; h < s.num_kv_heads; ++h) {
        kvcodec::ByteBuffer k(kept.size() * row), v(kept.size() * row);
        for (size_t i = 0; i < kept.size(); ++i) {
          const size_t src = (static_cast<size_t>(h) * s.num_tokens + kept[i]) * row;
          std::memcpy(k.data() + i * row, prefill->keys[l].data() + src, row);
          std::memcpy(v.data() + i * row, prefill->values[l].data() + src, row);
        }
        layers[l].keys.push_back(std::move(k));
        layers[l].values.push_back(std::move(v));
      }
    }
    auto session = engine::DecodeSession::Create(*big_->engine, s, layers, cached);
    EXPECT_TRUE(session.ok()) << session.status();
    auto logits = (*session)->Step(ids.back());
    EXPECT_TRUE(logits.ok());
    const int32_t first = static_cast<int32_t>(
        std::max_element(logits->begin(), logits->end()) - logits->begin());
    auto rest = engine::GenerateGreedy(**session, first, max_new - 1, big_->eos_ids);
    EXPECT_TRUE(rest.ok());
    std::vector<int32_t> out = {first};
    if (std::find(big_->eos_ids.begin(), big_->eos_ids.end(), first) == big_->eos_ids.end()) {
      out.insert(out.end(), rest->begin(), rest->end());
    }
    return out;
  }

  static std::vector<int32_t> PromptIds() {
    auto prompt = nodes::BuildPrompt(*big_, Request("text"));
    EXPECT_TRUE(prompt.ok());
    return prompt->token_ids;
  }

  static fs::path* root_;
  static nodes::NodeModel* big_;
  static PromptNodeService* prompt_service_;
  static grpc::Server* prompt_server_;
  static int prompt_port_;
  static RunningScout* same_;
  static RunningScout* small_;
  static RunningScout* orphan_;
};

fs::path* ScoutTest::root_ = nullptr;
nodes::NodeModel* ScoutTest::big_ = nullptr;
PromptNodeService* ScoutTest::prompt_service_ = nullptr;
grpc::Server* ScoutTest::prompt_server_ = nullptr;
int ScoutTest::prompt_port_ = 0;
RunningScout* ScoutTest::same_ = nullptr;
RunningScout* ScoutTest::small_ = nullptr;
RunningScout* ScoutTest::orphan_ = nullptr;

TEST_F(ScoutTest, TextPathSendsOnlyTokensAndMatchesTheFullCache) {
  kvwire::v1::GenerateReply reply;
  grpc::Status status = Call(small_->port(), Request("text"), &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const std::vector<int32_t> ids = PromptIds();
  EXPECT_EQ(std::vector<int32_t>(reply.token_ids().begin(), reply.token_ids().end()),
            LocalGenerate(ids, {}, 10));
  const auto& s = reply.stats();
  EXPECT_EQ(s.kept_fraction(), 1.0);
  EXPECT_EQ(s.prompt_tokens(), static_cast<int>(ids.size()));
  EXPECT_LT(s.wire_bytes(), ids.size() * 4 + 64);  // a few bytes per token, no cache
  EXPECT_LT(s.wire_bytes() * 20, s.raw_bytes());
  EXPECT_EQ(reply.codec_config(), "text");
}

TEST_F(ScoutTest, ScoutWithTheBigModelSelectsWhatTheBigModelWould) {
  kvwire::v1::GenerateReply reply;
  grpc::Status status = Call(same_->port(), Request("scout-q2c25"), &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto& s = reply.stats();
  EXPECT_EQ(s.selection_overlap(), 1.0);
  EXPECT_GT(s.kept_fraction(), 0.2);
  EXPECT_LT(s.kept_fraction(), 0.4);
  EXPECT_GT(s.scout_seconds(), 0.0);
  EXPECT_LT(s.wire_bytes() * 20, s.raw_bytes());

  // The reply is what the big model generates from its cache pruned to the same positions.
  const std::vector<int32_t> ids = PromptIds();
  auto prompt = nodes::BuildPrompt(*big_, Request("text"));
  auto codec = kvcodec::Preset("scout-q2c25");
  const int cached = static_cast<int>(ids.size()) - 1;
  auto prefill = big_->engine->Prefill(
      std::span(ids.data(), cached),
      ScoringPrefillOptions(codec->selection, cached, prompt->question_begin, prompt->question_end));
  ASSERT_TRUE(prefill.ok());
  auto kept = SelectPositions(codec->selection, *prefill, prompt->question_begin,
                              prompt->question_end, std::span(ids.data(), cached));
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(std::vector<int32_t>(reply.token_ids().begin(), reply.token_ids().end()),
            LocalGenerate(ids, *kept, 10));
}

TEST_F(ScoutTest, SmallerScoutReportsItsOverlap) {
  for (const char* preset : {"scout-q2c25", "scout-snapkv25"}) {
    kvwire::v1::GenerateReply reply;
    grpc::Status status = Call(small_->port(), Request(preset), &reply);
    ASSERT_TRUE(status.ok()) << preset << ": " << status.error_message();
    EXPECT_GE(reply.stats().selection_overlap(), 0.0);
    EXPECT_LE(reply.stats().selection_overlap(), 1.0);
    EXPECT_GT(reply.token_ids_size(), 0);
    std::cout << "[scout] " << preset << " overlap " << reply.stats().selection_overlap()
              << " wire " << reply.stats().wire_bytes() << " B of raw "
              << reply.stats().raw_bytes() << " B\n";
  }
}

TEST_F(ScoutTest, ClientErrorsHaveClearCodes) {
  kvwire::v1::GenerateReply reply;
  EXPECT_EQ(Call(small_->port(), Request("no-such-preset"), &reply).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  kvwire::v1::GenerateRequest empty = Request("scout-q2c25");
  empty.clear_context();
  empty.clear_question();
  EXPECT_EQ(Call(small_->port(), empty, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  kvwire::v1::GenerateRequest no_question = Request("scout-q2c25");
  no_question.clear_question();
  grpc::Status s = Call(small_->port(), no_question, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("question"));
  // Regression: a question without context was all protected, and Q2C kept every token.
  kvwire::v1::GenerateRequest no_context = Request("scout-q2c25");
  no_context.clear_context();
  s = Call(small_->port(), no_context, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("context before the question"));
  // Invalid UTF-8 in a proto3 string never reaches the node: protobuf refuses to parse it.
  kvwire::v1::GenerateRequest bad_utf8 = Request("text");
  bad_utf8.set_context("caf\xC3");
  grpc::Status utf8 = Call(small_->port(), bad_utf8, &reply);
  EXPECT_FALSE(utf8.ok());
  std::cout << "[scout] invalid UTF-8: code " << utf8.error_code() << " " << utf8.error_message() << "\n";
  EXPECT_EQ(Call(orphan_->port(), Request("text"), &reply).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Call(small_->port(), Request("text"), &reply, std::chrono::milliseconds(1)).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(ScoutTest, PromptNodeRejectsBadUploads) {
  const std::vector<int32_t> ids = PromptIds();
  kvwire::v1::TokenUpload good;
  good.set_token_ids(*EncodeTokenIds(ids));
  good.mutable_options()->set_max_new_tokens(2);
  kvwire::v1::GenerateReply reply;
  ASSERT_TRUE(Upload(good, &reply).ok());

  auto expect_invalid = [&](const kvwire::v1::TokenUpload& upload, const char* what) {
    grpc::Status s = Upload(upload, &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what << ": " << s.error_message();
  };
  kvwire::v1::TokenUpload bad = good;
  bad.set_token_ids("garbage");
  expect_invalid(bad, "corrupt ids");
  bad = good;
  bad.set_token_ids(good.token_ids().substr(0, good.token_ids().size() - 2));
  expect_invalid(bad, "truncated ids");
  bad = good;
  bad.set_token_ids(*EncodeTokenIds(std::vector<int32_t>{5}));
  expect_invalid(bad, "one token");
  bad = good;
  std::vector<int32_t> outside = ids;
  outside[3] = 100000;
  bad.set_token_ids(*EncodeTokenIds(outside));
  expect_invalid(bad, "id outside the vocabulary");
  bad = good;
  bad.set_kept_positions(*EncodePositions(std::vector<int32_t>{0, 1, static_cast<int32_t>(ids.size())},
                                          static_cast<int>(ids.size()) + 1));
  expect_invalid(bad, "position past the cache");
  bad = good;
  bad.set_kept_positions("\x09zz");
  expect_invalid(bad, "bad position tag");
  bad = good;
  bad.set_selection_config("select=nonsense");
  expect_invalid(bad, "bad selection config");
}

// The scout node serves /metrics like the other roles (role="scout"): calls by code, stages,
// time to first token; an emulated link delays its token upload by size / rate.
TEST_F(ScoutTest, ScoutNodeServesMetricsAndPacesItsUpload) {
  constexpr double kMbps = 0.01;  // 10 kbit/s: a few hundred bytes take a fraction of a second
  auto scout = StartScoutNode({.model = {.model_dir = (*root_ / "small").string(), .threads = 1},
                               .prompt_address = "127.0.0.1:" + std::to_string(prompt_port_),
                               .workers = 1,
                               .link_mbps = kMbps,
                               .metrics_port = 0});
  ASSERT_TRUE(scout.ok()) << scout.status();
  kvwire::v1::GenerateReply reply;
  ASSERT_TRUE(Call((*scout)->port(), Request("scout-q2c25"), &reply).ok());
  EXPECT_GE(reply.stats().upload_seconds(), 0.9 * 8.0 * reply.stats().wire_bytes() / (kMbps * 1e6));
  EXPECT_GE(reply.stats().first_token_seconds(), reply.stats().upload_seconds());
  EXPECT_EQ(Call((*scout)->port(), Request("no-such-preset"), &reply).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  const std::string address = (*scout)->metrics_address();
  ASSERT_FALSE(address.empty());
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  auto text = metrics::testing::HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_TRUE(metrics::testing::PromtoolCheckMetrics(*text).ok())
      << metrics::testing::PromtoolCheckMetrics(*text);
  auto samples = metrics::testing::ParseSamples(*text);
  auto sample = [&](const std::string& key) {
    auto it = samples.find(key);
    return it == samples.end() ? -1.0 : it->second;
  };
  EXPECT_EQ(sample(R"(kvwire_requests_total{code="OK",role="scout"})"), 1);
  EXPECT_EQ(sample(R"(kvwire_requests_total{code="INVALID_ARGUMENT",role="scout"})"), 1);
  EXPECT_EQ(sample(R"(kvwire_requests_in_flight{role="scout"})"), 0);
  for (const char* stage : {"prefill", "selection", "transfer"}) {
    EXPECT_EQ(sample(std::string(R"(kvwire_stage_duration_seconds_count{role="scout",stage=")") +
                     stage + "\"}"),
              1)
        << stage;
  }
  EXPECT_EQ(sample(R"(kvwire_time_to_first_token_seconds_count{role="scout"})"), 1);
  (*scout)->Shutdown(std::chrono::seconds(2));
}

// The PromptNode shares the node's cache budget: a prefill that would exceed it fails with
// RESOURCE_EXHAUSTED before the model runs, and a finished request gives its share back.
TEST_F(ScoutTest, PromptNodeHonoursTheCacheBudget) {
  kvwire::v1::TokenUpload upload;
  upload.set_token_ids(*EncodeTokenIds(PromptIds()));
  upload.mutable_options()->set_max_new_tokens(2);
  const transport::Interrupt never = [] { return absl::OkStatus(); };
  auto tight = std::make_shared<transport::CacheBudget>(1000);
  PromptNodeService small_budget({.model = big_, .workers = 1, .cache_budget = tight});
  auto refused = small_budget.Handle(upload, never);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("memory limit"));
  auto roomy = std::make_shared<transport::CacheBudget>(64 << 20);
  ASSERT_TRUE(roomy->Reserve(1).ok());  // another request holds a byte
  PromptNodeService enough({.model = big_, .workers = 1, .cache_budget = roomy});
  auto served = enough.Handle(upload, never);
  EXPECT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(roomy->reserved(), 1u);
}

// Wherever a client goes away (before the reservation, in the prefill, before generating or
// mid-generation) the request stops at the first ask that says so, with its status, and the
// request's share of the cache budget comes back.
TEST_F(ScoutTest, PromptNodeStopsWhereverInterrupted) {
  kvwire::v1::TokenUpload upload;
  upload.set_token_ids(*EncodeTokenIds(PromptIds()));
  upload.mutable_options()->set_max_new_tokens(40);
  auto budget = std::make_shared<transport::CacheBudget>(64 << 20);
  PromptNodeService service({.model = big_, .workers = 1, .cache_budget = budget});
  int total = 0;
  auto served = service.Handle(upload, [&total] {
    ++total;
    return absl::OkStatus();
  });
  ASSERT_TRUE(served.ok()) << served.status();
  ASSERT_GT(served->stats().generated_tokens(), 1);
  for (int stop_at = 1; stop_at <= total; ++stop_at) {
    int asked = 0;
    auto stopped = service.Handle(upload, [&asked, stop_at]() -> absl::Status {
      return ++asked >= stop_at ? absl::CancelledError("client went away") : absl::OkStatus();
    });
    EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled)
        << stop_at << ": " << stopped.status();
    EXPECT_EQ(asked, stop_at);  // not asked again once it said stop
    EXPECT_EQ(budget->reserved(), 0u) << stop_at;
  }
}

// Regression: the prefill never asked the interrupt, so a cancelled or expired request held a
// worker and its cache reservation for the whole prompt. It asks before every layer of every
// prompt chunk, while the reservation is held.
TEST_F(ScoutTest, PromptNodePrefillIsInterruptibleAtEveryLayer) {
  constexpr int kChunk = 16;
  auto chunked = nodes::NodeModel::Load(
      {.model_dir = (*root_ / "big").string(), .threads = 1, .prefill_chunk = kChunk});
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  const std::vector<int32_t> ids = PromptIds();
  kvwire::v1::TokenUpload upload;
  upload.set_token_ids(*EncodeTokenIds(ids));
  upload.mutable_options()->set_max_new_tokens(1);
  auto budget = std::make_shared<transport::CacheBudget>(64 << 20);
  PromptNodeService service({.model = chunked->get(), .workers = 1, .cache_budget = budget});
  int while_reserved = 0;
  auto served = service.Handle(upload, [&] {
    if (budget->reserved() > 0) ++while_reserved;
    return absl::OkStatus();
  });
  ASSERT_TRUE(served.ok()) << served.status();
  const int cached = static_cast<int>(ids.size()) - 1;
  const int layers = static_cast<int>((*chunked)->engine->config().num_hidden_layers);
  EXPECT_GE(while_reserved, layers * ((cached + kChunk - 1) / kChunk));
}

// Regression: bad generation options and a selection rule the node cannot apply were found
// only after the reservation and the whole prefill. They are refused before any work: with a
// budget nothing fits, they still get INVALID_ARGUMENT, and the interrupt (first asked just
// before the reservation) is never asked.
TEST_F(ScoutTest, PromptNodeRejectsBadRequestsBeforeAnyWork) {
  const std::vector<int32_t> ids = PromptIds();
  kvwire::v1::TokenUpload good;
  good.set_token_ids(*EncodeTokenIds(ids));
  good.mutable_options()->set_max_new_tokens(2);
  auto full = std::make_shared<transport::CacheBudget>(1);
  PromptNodeService service({.model = big_, .workers = 1, .cache_budget = full});
  int asked = 0;
  const transport::Interrupt count = [&asked] {
    ++asked;
    return absl::OkStatus();
  };
  EXPECT_EQ(service.Handle(good, count).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GT(asked, 0);

  auto expect_rejected = [&](const kvwire::v1::TokenUpload& upload, const char* message) {
    asked = 0;
    auto result = service.Handle(upload, count);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    EXPECT_THAT(result.status().message(), HasSubstr(message));
    EXPECT_EQ(asked, 0) << message;
  };
  kvwire::v1::TokenUpload bad = good;
  bad.mutable_options()->set_max_new_tokens(-1);
  expect_rejected(bad, "max_new_tokens");
  bad = good;
  bad.mutable_options()->set_temperature(-1);
  expect_rejected(bad, "temperature");
  bad = good;
  bad.mutable_options()->set_temperature(std::numeric_limits<float>::quiet_NaN());
  expect_rejected(bad, "temperature");
  bad = good;
  bad.mutable_options()->set_top_p(1.5);
  expect_rejected(bad, "top_p");
  bad = good;
  bad.mutable_options()->set_top_k(-1);
  expect_rejected(bad, "top_k");
  bad = good;
  bad.mutable_options()->add_stop("");
  expect_rejected(bad, "stop");
  bad = good;
  bad.set_selection_config("select=q2c;keep=0.25");  // no question span
  expect_rejected(bad, "needs a question");
  bad.set_question_begin(0);
  bad.set_question_end(5);
  expect_rejected(bad, "context before the question");
}

// Regression: the scout's call to the big node copied only the client's deadline, so a client
// that cancelled left the big node working (and the scout's worker waiting) until then.
TEST_F(ScoutTest, ScoutPassesItsClientsCancelToTheBigNode) {
  HangingPromptNode big;
  auto scout = StartScoutNode({.model = {.model_dir = (*root_ / "small").string(), .threads = 1},
                               .prompt_address = big.address(),
                               .workers = 1});
  ASSERT_TRUE(scout.ok()) << scout.status();
  const int port = (*scout)->port();
  PendingCall first(CallOn<kvwire::v1::ScoutNode>(port, Request("text")));
  ASSERT_TRUE(big.WaitArrived(1, std::chrono::seconds(20)));
  first.Cancel();
  auto status = first.Wait(std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->error_code(), grpc::StatusCode::CANCELLED);
  // The big node's call ends with the client's, not at its deadline 30 s away ...
  EXPECT_TRUE(big.WaitCancelled(1, std::chrono::seconds(5)));
  // ... and the scout's only worker takes the next request.
  PendingCall second(CallOn<kvwire::v1::ScoutNode>(port, Request("text")));
  EXPECT_TRUE(big.WaitArrived(2, std::chrono::seconds(5)));
}

// The scout's own work stops at once when its interrupt says so: before a job starts (a
// deadline that passed in the queue) and at any layer of its prefill; the big node never hears
// of the request.
TEST_F(ScoutTest, ScoutStopsBeforeAndDuringItsPrefill) {
  HangingPromptNode big;
  ScoutNodeService scout(
      {.model = big_,
       .prompt_channel = grpc::CreateChannel(big.address(), grpc::InsecureChannelCredentials()),
       .workers = 1});
  const int layers = static_cast<int>(big_->engine->config().num_hidden_layers);
  for (int stop_at = 1; stop_at <= layers + 1; ++stop_at) {
    int asked = 0;
    auto result = scout.Handle(Request("scout-snapkv25"),
                               std::chrono::system_clock::now() + std::chrono::seconds(30),
                               [&asked, stop_at]() -> absl::Status {
                                 return ++asked >= stop_at
                                            ? absl::DeadlineExceededError("the deadline passed")
                                            : absl::OkStatus();
                               });
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded)
        << stop_at << ": " << result.status();
    EXPECT_EQ(asked, stop_at);
  }
  EXPECT_EQ(big.arrived(), 0);
}

// Beyond max_queued waiting requests, a scout node answers RESOURCE_EXHAUSTED at once.
TEST_F(ScoutTest, ScoutNodeRefusesBeyondMaxQueued) {
  HangingPromptNode big;
  auto scout = StartScoutNode({.model = {.model_dir = (*root_ / "small").string(), .threads = 1},
                               .prompt_address = big.address(),
                               .workers = 1,
                               .max_queued = 1});
  ASSERT_TRUE(scout.ok()) << scout.status();
  const int port = (*scout)->port();
  PendingCall busy(CallOn<kvwire::v1::ScoutNode>(port, Request("text")));
  ASSERT_TRUE(big.WaitArrived(1, std::chrono::seconds(20)));  // the only worker is taken
  PendingCall a(CallOn<kvwire::v1::ScoutNode>(port, Request("text")));
  PendingCall b(CallOn<kvwire::v1::ScoutNode>(port, Request("text")));
  // One of them waits for the worker; the other finds the queue full.
  auto [refused, status] = FirstToEnd({&a, &b}, std::chrono::seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status->error_message();
  EXPECT_THAT(status->error_message(), HasSubstr("scout node busy"));
  PendingCall* waiting = refused == &a ? &b : &a;
  EXPECT_FALSE(waiting->Wait(std::chrono::milliseconds(200)).has_value());
}

// Beyond max_queued waiting uploads, a PromptNode answers RESOURCE_EXHAUSTED at once.
TEST_F(ScoutTest, PromptNodeRefusesBeyondMaxQueued) {
  // A long prompt on a model with room for it keeps the only worker busy for seconds (until
  // its client cancels it, which now stops the prefill within a layer).
  modelio::ModelConfig config = nodes::testing::TinyConfig(2);
  config.max_position_embeddings = 8192;
  ASSERT_TRUE(nodes::testing::WriteTinyModel(*root_ / "long", config).ok());
  auto model = nodes::NodeModel::Load({.model_dir = (*root_ / "long").string(), .threads = 1});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<int32_t> ids(8000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(3 + i % 250);
  kvwire::v1::TokenUpload upload;
  upload.set_token_ids(*EncodeTokenIds(ids));
  upload.mutable_options()->set_max_new_tokens(1);
  PromptNodeService service({.model = model->get(), .workers = 1, .max_queued = 1});
  int port = 0;
  grpc::ServerBuilder builder;
  transport::ConfigureServerBuilder(builder);
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  {
    // One runs, one waits for the worker, and the last to arrive finds the queue full.
    PendingCall a(CallOn<kvwire::v1::PromptNode>(port, upload));
    PendingCall b(CallOn<kvwire::v1::PromptNode>(port, upload));
    PendingCall c(CallOn<kvwire::v1::PromptNode>(port, upload));
    auto [refused, status] = FirstToEnd({&a, &b, &c}, std::chrono::seconds(10));
    ASSERT_TRUE(status.has_value());
    EXPECT_EQ(status->error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << status->error_message();
    EXPECT_THAT(status->error_message(), HasSubstr("prompt node busy"));
  }  // the calls are cancelled
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace
}  // namespace kvwire::scout
