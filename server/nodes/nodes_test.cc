// End to end: a prefill node and a decode node as real gRPC servers on 127.0.0.1, serving a tiny
// random Qwen2-style checkpoint with a tiny byte-level tokenizer written by the test.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/kvwire.grpc.pb.h"
#include "server/engine/engine.h"
#include "server/engine/generate.h"
#include "server/modelio/random_checkpoint.h"
#include "server/nodes/testing/tiny_model.h"
#include "server/nodes/engine_consumer.h"
#include "server/nodes/model.h"
#include "server/nodes/prefill_service.h"
#include "server/nodes/servers.h"
#include "server/tokenizer/bpe_model.h"
#include "server/tokenizer/utf8.h"

namespace kvwire::nodes {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

using ::kvwire::nodes::testing::kEndOfText;
using ::kvwire::nodes::testing::kImEnd;
using ::kvwire::nodes::testing::kImStart;
using ::kvwire::nodes::testing::TinyConfig;

std::string WriteModel(const std::filesystem::path& dir, const modelio::ModelConfig& config) {
  EXPECT_TRUE(::kvwire::nodes::testing::WriteTinyModel(dir, config).ok());
  return dir.string();
}

const char* kContext =
    "The harbor town kept its lighthouse lit every night for two hundred years. In the winter "
    "of the great storm, the keeper's daughter rowed out to the reef and brought back nine "
    "sailors. The town named the new pier after her.";
const char* kQuestion = "Who rowed out to the reef?";

class NodesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nodes_test_XXXXXX").string();
    root_ = new std::filesystem::path(mkdtemp(tmpl.data()));
    const std::string model_a = WriteModel(*root_ / "a", TinyConfig(4));
    const std::string model_b = WriteModel(*root_ / "b", TinyConfig(3));  // another model
    auto start_decode = [](const std::string& dir) {
      auto s = StartDecodeNode({.model = {.model_dir = dir, .threads = 1}});
      EXPECT_TRUE(s.ok()) << s.status();
      return s.ok() ? std::move(*s).release() : nullptr;
    };
    auto start_prefill = [](const std::string& dir, const std::string& decode) {
      auto s = StartPrefillNode(
          {.model = {.model_dir = dir, .threads = 1}, .decode_address = decode, .workers = 4});
      EXPECT_TRUE(s.ok()) << s.status();
      return s.ok() ? std::move(*s).release() : nullptr;
    };
    decode_a_ = start_decode(model_a);
    decode_b_ = start_decode(model_b);
    ASSERT_TRUE(decode_a_ && decode_b_);
    prefill_ = start_prefill(model_a, "127.0.0.1:" + std::to_string(decode_a_->port()));
    prefill_wrong_model_ =
        start_prefill(model_a, "127.0.0.1:" + std::to_string(decode_b_->port()));
    // Nothing listens on port 1 of the loopback interface.
    prefill_no_decode_ = start_prefill(model_a, "127.0.0.1:1");
    auto local = engine::Engine::Load({.model_dir = model_a, .dtype = "float32", .threads = 1});
    ASSERT_TRUE(local.ok()) << local.status();
    local_engine_ = std::move(*local).release();
  }

  static void TearDownTestSuite() {
    for (RunningServer* s : {prefill_, prefill_wrong_model_, prefill_no_decode_, decode_a_, decode_b_}) {
      if (s) s->Shutdown(std::chrono::seconds(2));
      delete s;
    }
    delete local_engine_;
    std::filesystem::remove_all(*root_);
    delete root_;
  }

  static kvwire::v1::GenerateRequest Request(const std::string& preset, int max_new_tokens = 12) {
    kvwire::v1::GenerateRequest r;
    r.set_context(kContext);
    r.set_question(kQuestion);
    r.set_codec_preset(preset);
    r.mutable_options()->set_max_new_tokens(max_new_tokens);
    return r;
  }

  static grpc::Status Call(const RunningServer& node, const kvwire::v1::GenerateRequest& request,
                           kvwire::v1::GenerateReply* reply,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(node.port()),
                                       grpc::InsecureChannelCredentials());
    auto stub = kvwire::v1::PrefillNode::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    return stub->Generate(&context, request, reply);
  }

  static void Print(const std::string& what, const kvwire::v1::GenerateReply& reply) {
    const auto& s = reply.stats();
    std::cout << "[stats] " << what << ": prompt=" << s.prompt_tokens()
              << " generated=" << s.generated_tokens() << " raw=" << s.raw_bytes()
              << " wire=" << s.wire_bytes() << " bpe=" << s.bits_per_element()
              << " kept=" << s.kept_fraction() << " prefill_s=" << s.prefill_seconds()
              << " encode_s=" << s.encode_seconds() << " transfer_s=" << s.transfer_seconds()
              << " rebuild_s=" << s.rebuild_seconds() << " first_token_s=" << s.first_token_seconds()
              << " tok/s=" << s.tokens_per_second() << " finish=" << reply.finish_reason() << "\n";
  }

  static std::filesystem::path* root_;
  static RunningServer* decode_a_;
  static RunningServer* decode_b_;
  static RunningServer* prefill_;
  static RunningServer* prefill_wrong_model_;
  static RunningServer* prefill_no_decode_;
  static engine::Engine* local_engine_;
};

std::filesystem::path* NodesTest::root_ = nullptr;
RunningServer* NodesTest::decode_a_ = nullptr;
RunningServer* NodesTest::decode_b_ = nullptr;
RunningServer* NodesTest::prefill_ = nullptr;
RunningServer* NodesTest::prefill_wrong_model_ = nullptr;
RunningServer* NodesTest::prefill_no_decode_ = nullptr;
engine::Engine* NodesTest::local_engine_ = nullptr;

TEST(FingerprintTest, StableAndConfigSensitive) {
  const std::string a = ModelFingerprint(TinyConfig(4));
  EXPECT_EQ(a, ModelFingerprint(TinyConfig(4)));
  EXPECT_NE(a, ModelFingerprint(TinyConfig(3)));
  modelio::ModelConfig bf16 = TinyConfig(4);
  bf16.torch_dtype = "bfloat16";
  EXPECT_EQ(a, ModelFingerprint(bf16));
  EXPECT_THAT(a, ::testing::StartsWith("qwen2-"));
  EXPECT_EQ(a.size(), 6u + 32u);
}

TEST(GenerationOptionsTest, RejectsBadOptions) {
  kvwire::v1::GenerationOptions o;
  EXPECT_EQ(ToGenerateOptions(o, 7)->max_new_tokens, 7);
  EXPECT_EQ(ToGenerateOptions(o, 7)->sampling.top_p, 1.0f);
  o.set_temperature(-1);
  EXPECT_EQ(ToGenerateOptions(o, 7).status().code(), absl::StatusCode::kInvalidArgument);
  o.set_temperature(0.5f);
  o.set_top_p(1.5f);
  EXPECT_EQ(ToGenerateOptions(o, 7).status().code(), absl::StatusCode::kInvalidArgument);
  o.set_top_p(0.9f);
  o.set_top_k(-1);
  EXPECT_EQ(ToGenerateOptions(o, 7).status().code(), absl::StatusCode::kInvalidArgument);
  o.set_top_k(5);
  o.add_stop("");
  EXPECT_EQ(ToGenerateOptions(o, 7).status().code(), absl::StatusCode::kInvalidArgument);
}

// (a) The lossless path generates exactly what the engine generates locally.
TEST_F(NodesTest, FullPresetMatchesLocalEngine) {
  kvwire::v1::GenerateReply reply;
  grpc::Status status = Call(*prefill_, Request("full", 16), &reply);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  Print("full", reply);

  const auto& tok = *decode_a_->model().tokenizer;
  auto ids = tok.Encode(std::string(kContext) + "\n" + kQuestion, /*parse_special=*/false);
  ASSERT_TRUE(ids.ok());
  const std::vector<int32_t> eos = decode_a_->model().eos_ids;
  const engine::GenerateOptions options{.max_new_tokens = 16, .eos_ids = eos};

  // Same contract as the nodes: cache of all but the last token, then one step.
  auto head = local_engine_->Prefill(std::span<const int32_t>(ids->data(), ids->size() - 1));
  ASSERT_TRUE(head.ok()) << head.status();
  auto session = engine::DecodeSession::FromPrefill(*local_engine_, *head);
  ASSERT_TRUE(session.ok());
  auto logits = (*session)->Step(ids->back());
  ASSERT_TRUE(logits.ok());
  auto local = engine::Generate(**session, *logits, options);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(std::vector<int32_t>(reply.token_ids().begin(), reply.token_ids().end()), local->tokens);

  // And what a single prefill over the whole prompt generates.
  auto whole = local_engine_->Prefill(*ids);
  ASSERT_TRUE(whole.ok());
  auto session2 = engine::DecodeSession::FromPrefill(*local_engine_, *whole);
  ASSERT_TRUE(session2.ok());
  auto direct = engine::Generate(**session2, whole->last_logits, options);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(std::vector<int32_t>(reply.token_ids().begin(), reply.token_ids().end()), direct->tokens);

  auto text = tok.Decode(direct->tokens, /*skip_special=*/true);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(reply.text(), *text);
  EXPECT_EQ(reply.model_fingerprint(), decode_a_->model().fingerprint);
  EXPECT_EQ(reply.codec_config(), kvcodec::Preset("full")->ToString());
  const auto& s = reply.stats();
  EXPECT_EQ(s.prompt_tokens(), static_cast<int>(ids->size()));
  EXPECT_EQ(s.num_tokens(), static_cast<int>(ids->size()) - 1);
  EXPECT_EQ(s.generated_tokens(), reply.token_ids_size());
  EXPECT_DOUBLE_EQ(s.kept_fraction(), 1.0);
  EXPECT_GT(s.wire_bytes(), s.raw_bytes());  // float32 raw vs the 16-bit reference
  EXPECT_GT(s.prefill_seconds(), 0);
  EXPECT_GT(s.encode_seconds(), 0);
  EXPECT_GT(s.transfer_seconds(), 0);
  EXPECT_GT(s.first_token_seconds(), 0);
  EXPECT_GT(s.tokens_per_second(), 0);
  EXPECT_NE(reply.finish_reason(), kvwire::v1::FINISH_REASON_UNSPECIFIED);
}

// (b) Lossy presets shrink the wire bytes; SnapKV keeps about a quarter.
TEST_F(NodesTest, LossyPresetsShrinkTheFrame) {
  for (const char* preset : {"int4-rans", "snapkv25-int4"}) {
    kvwire::v1::GenerateReply reply;
    grpc::Status status = Call(*prefill_, Request(preset), &reply);
    ASSERT_TRUE(status.ok()) << preset << ": " << status.error_message();
    Print(preset, reply);
    const auto& s = reply.stats();
    EXPECT_EQ(reply.token_ids_size(), s.generated_tokens());
    EXPECT_GT(reply.token_ids_size(), 0);
    EXPECT_LT(s.wire_bytes(), s.raw_bytes() * 0.4) << preset;
    if (std::string(preset) == "snapkv25-int4") {
      EXPECT_NEAR(s.kept_fraction(), 0.25, 0.03);
      EXPECT_LT(s.wire_bytes(), s.raw_bytes() * 0.15);
    } else {
      EXPECT_DOUBLE_EQ(s.kept_fraction(), 1.0);
    }
  }
  // Score-based selections the prefill node wires up itself.
  for (const char* config : {"select=q2c;keep=0.5;plan=*:int8", "select=h2o;keep=0.5;recent=8;plan=*:int8"}) {
    kvwire::v1::GenerateRequest request = Request("");
    request.set_codec_config(config);
    kvwire::v1::GenerateReply reply;
    grpc::Status status = Call(*prefill_, request, &reply);
    ASSERT_TRUE(status.ok()) << config << ": " << status.error_message();
    Print(config, reply);
    EXPECT_NEAR(reply.stats().kept_fraction(), 0.5, 0.03) << config;
  }
}

// (c) Errors reach the client with the right code.
TEST_F(NodesTest, ErrorsPropagateWithTheirCodes) {
  kvwire::v1::GenerateReply reply;
  grpc::Status s = Call(*prefill_, Request("no-such-preset"), &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("no-such-preset"));

  kvwire::v1::GenerateRequest empty = Request("full");
  empty.clear_context();
  empty.clear_question();
  s = Call(*prefill_, empty, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  kvwire::v1::GenerateRequest bad_config = Request("");
  bad_config.set_codec_config("select=bogus");
  EXPECT_EQ(Call(*prefill_, bad_config, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  kvwire::v1::GenerateRequest too_long = Request("full");
  too_long.set_context(std::string(600, 'x'));
  EXPECT_EQ(Call(*prefill_, too_long, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  kvwire::v1::GenerateRequest bad_options = Request("full");
  bad_options.mutable_options()->set_temperature(-2);
  EXPECT_EQ(Call(*prefill_, bad_options, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  s = Call(*prefill_wrong_model_, Request("int4-rans"), &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  s = Call(*prefill_no_decode_, Request("int4-rans"), &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();

  s = Call(*prefill_, Request("int4-rans"), &reply, std::chrono::milliseconds(1));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();

  // Invalid UTF-8 cannot even be sent in a proto3 string; the prompt builder rejects it.
  kvwire::v1::GenerateRequest bad_utf8 = Request("full");
  bad_utf8.set_context("abc\xff\xfe");
  EXPECT_EQ(BuildPrompt(prefill_->model(), bad_utf8).status().code(),
            absl::StatusCode::kInvalidArgument);

  // The servers still work afterwards.
  EXPECT_TRUE(Call(*prefill_, Request("int4-rans", 2), &reply).ok());
}

TEST_F(NodesTest, ChatMessagesUseTheChatTemplate) {
  const NodeModel& model = prefill_->model();
  ASSERT_EQ(model.chat_template->format(), tokenizer::ChatTemplate::Format::kChatML);
  kvwire::v1::GenerateRequest request;
  auto* m = request.add_messages();
  m->set_role("user");
  m->set_content(kQuestion);
  request.set_codec_preset("int8");
  auto prompt = BuildPrompt(model, request);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(prompt->token_ids.front(), kImStart);
  EXPECT_EQ(std::count(prompt->token_ids.begin(), prompt->token_ids.end(), kImEnd), 1);
  kvwire::v1::GenerateReply reply;
  grpc::Status s = Call(*prefill_, request, &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reply.stats().prompt_tokens(), static_cast<int>(prompt->token_ids.size()));

  // Regression: Q2C on one message protected the whole prompt as the question and silently
  // kept every token. With the context in an earlier message it selects.
  request.set_codec_config("select=q2c;keep=0.5;plan=*:int8");
  s = Call(*prefill_, request, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("context before the question"));
  m->set_content(std::string(kContext));
  auto* q = request.add_messages();
  q->set_role("user");
  q->set_content(kQuestion);
  s = Call(*prefill_, request, &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_LT(reply.stats().kept_fraction(), 0.75);
  request.clear_codec_config();

  request.set_context("also context");
  EXPECT_EQ(Call(*prefill_, request, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Regression: a chat template kvwire cannot render (Llama-3.1's, say) was dropped silently, and
// chat requests went to the model as bare concatenated text. Now they are refused; raw prompts
// still work, and a model without any template keeps raw concatenation.
TEST(NodeModelTest, ChatRequestsNeedARenderableTemplate) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "chat_template_XXXXXX").string();
  const std::filesystem::path dir(mkdtemp(tmpl.data()));
  WriteModel(dir, TinyConfig(1));
  kvwire::v1::GenerateRequest chat;
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content(kQuestion);
  kvwire::v1::GenerateRequest raw;
  raw.set_context(kContext);
  raw.set_question(kQuestion);

  std::ofstream(dir / "tokenizer_config.json")
      << json{{"chat_template", "{{ bos_token }}{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"},
              {"eos_token", "<|im_end|>"}}
             .dump();
  auto unknown = NodeModel::Load({.model_dir = dir.string(), .threads = 1});
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_THAT((*unknown)->chat_template_error, HasSubstr("unknown chat template"));
  auto refused = BuildPrompt(**unknown, chat);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("send the prompt as context/question"));
  EXPECT_TRUE(BuildPrompt(**unknown, raw).ok());

  std::ofstream(dir / "tokenizer_config.json") << json{{"eos_token", "<|im_end|>"}}.dump();
  auto base = NodeModel::Load({.model_dir = dir.string(), .threads = 1});
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ((*base)->chat_template_error, "");
  EXPECT_EQ((*base)->chat_template->format(), tokenizer::ChatTemplate::Format::kRaw);
  auto concatenated = BuildPrompt(**base, chat);
  ASSERT_TRUE(concatenated.ok()) << concatenated.status();
  EXPECT_EQ(concatenated->token_ids, BuildPrompt(**base, [&] {
                                       kvwire::v1::GenerateRequest r;
                                       r.set_question(kQuestion);
                                       return r;
                                     }())->token_ids);
  std::filesystem::remove_all(dir);
}

// The decode node refuses what its model cannot decode from the frame header alone, before the
// transfer (the decode service calls CheckUpload there).
TEST_F(NodesTest, EngineConsumerChecksUploadsAtTheHeader) {
  EngineConsumer consumer(decode_a_->model());
  const modelio::ModelConfig& config = decode_a_->model().engine->config();
  kvcodec::FrameInfo info;
  info.shape = {.num_layers = static_cast<int>(config.num_hidden_layers),
                .num_kv_heads = static_cast<int>(config.num_key_value_heads),
                .head_dim = static_cast<int>(config.head_dim),
                .num_tokens = 10,
                .dtype = kvcodec::DType::kFloat32};
  kvwire::v1::UploadHeader header;
  header.set_prompt_tokens(10);
  header.add_suffix_token_ids(1);
  EXPECT_TRUE(consumer.CheckUpload(info, header).ok());
  kvcodec::FrameInfo wrong = info;
  wrong.shape.num_layers += 1;
  absl::Status s = consumer.CheckUpload(wrong, header);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("does not match the model"));
  wrong = info;
  wrong.shape.num_tokens = static_cast<int>(config.max_position_embeddings) + 1;
  EXPECT_EQ(consumer.CheckUpload(wrong, header).code(), absl::StatusCode::kInvalidArgument);
  kvwire::v1::UploadHeader no_suffix = header;
  no_suffix.clear_suffix_token_ids();
  EXPECT_THAT(consumer.CheckUpload(info, no_suffix).message(), HasSubstr("suffix_token_ids is empty"));
  kvwire::v1::UploadHeader bad_options = header;
  bad_options.mutable_options()->set_temperature(-1);
  EXPECT_EQ(consumer.CheckUpload(info, bad_options).code(), absl::StatusCode::kInvalidArgument);
}

// (d) Concurrent clients get what a serial client gets.
TEST_F(NodesTest, ConcurrentClientsMatchSerial) {
  kvwire::v1::GenerateRequest request = Request("int4-rans", 10);
  request.mutable_options()->set_temperature(0.8f);
  request.mutable_options()->set_seed(42);
  kvwire::v1::GenerateReply serial;
  ASSERT_TRUE(Call(*prefill_, request, &serial).ok());
  constexpr int kClients = 4;
  std::vector<kvwire::v1::GenerateReply> replies(kClients);
  std::vector<grpc::Status> statuses(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] { statuses[i] = Call(*prefill_, request, &replies[i]); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_EQ(std::vector<int32_t>(replies[i].token_ids().begin(), replies[i].token_ids().end()),
              std::vector<int32_t>(serial.token_ids().begin(), serial.token_ids().end()));
    EXPECT_EQ(replies[i].text(), serial.text());
  }
}

// Layers go out as they are computed: over a slow emulated link the upload runs alongside the
// prefill (overlap > 0), takes at least bytes / rate, and the answer is the unpaced one.
TEST_F(NodesTest, LayersStreamWhilePrefillRunsOverAPacedLink) {
  constexpr double kMbps = 1.0;
  auto paced = StartPrefillNode({.model = {.model_dir = (*root_ / "a").string(), .threads = 1},
                                 .decode_address = "127.0.0.1:" + std::to_string(decode_a_->port()),
                                 .workers = 1,
                                 .link_mbps = kMbps});
  ASSERT_TRUE(paced.ok()) << paced.status();
  kvwire::v1::GenerateReply fast, slow;
  ASSERT_TRUE(Call(*prefill_, Request("int8", 6), &fast).ok());
  grpc::Status s = Call(**paced, Request("int8", 6), &slow);
  ASSERT_TRUE(s.ok()) << s.error_message();
  Print("int8 over 1 Mbit/s", slow);
  const auto& st = slow.stats();
  const double link_seconds = 8.0 * st.wire_bytes() / (kMbps * 1e6);
  EXPECT_GE(st.upload_seconds(), 0.9 * link_seconds);
  EXPECT_GE(st.first_token_seconds(), link_seconds);
  EXPECT_GT(st.overlap_seconds(), 0.0);
  EXPECT_LE(st.overlap_seconds(), st.prefill_seconds() + st.encode_seconds());
  EXPECT_EQ(slow.text(), fast.text());
  EXPECT_EQ(st.wire_bytes(), fast.stats().wire_bytes());

  // A deadline shorter than the paced upload ends the call; the nodes keep serving.
  s = Call(**paced, Request("full", 6), &slow, std::chrono::milliseconds(300));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  EXPECT_TRUE(Call(*prefill_, Request("int4-rans", 2), &fast).ok());
  (*paced)->Shutdown(std::chrono::seconds(2));
}

// Regression: the prefill queue was unbounded (each waiting request holds up to 8 MiB of prompt).
// Past max_queued waiting requests a node answers RESOURCE_EXHAUSTED at once.
TEST_F(NodesTest, FullQueueIsResourceExhausted) {
  auto paced = StartPrefillNode({.model = {.model_dir = (*root_ / "a").string(), .threads = 1},
                                 .decode_address = "127.0.0.1:" + std::to_string(decode_a_->port()),
                                 .workers = 1,
                                 .max_queued = 1,
                                 .link_mbps = 1.0});
  ASSERT_TRUE(paced.ok()) << paced.status();
  constexpr int kClients = 4;
  std::vector<grpc::Status> statuses(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      kvwire::v1::GenerateReply reply;
      statuses[i] = Call(**paced, Request("full", 2), &reply);
    });
  }
  for (std::thread& t : threads) t.join();
  int ok = 0, busy = 0;
  for (const grpc::Status& st : statuses) {
    if (st.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
      EXPECT_THAT(st.error_message(), HasSubstr("prefill node busy"));
      ++busy;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(busy, 1);
  EXPECT_EQ(ok + busy, kClients);
  (*paced)->Shutdown(std::chrono::seconds(2));
}

// TLS and a bearer token wired through both nodes: the decode node serves TLS (the test
// certificate of server/transport/testdata) and requires the token; the prefill node verifies it
// with the CA and sends the token. Without the token the prefill node's clients are refused.
TEST_F(NodesTest, TlsAndTokenBetweenTheNodes) {
  const std::filesystem::path testdata =
      std::filesystem::path(__FILE__).parent_path().parent_path() / "transport" / "testdata";
  const std::string cert = (testdata / "test_cert.pem").string();
  const std::string key = (testdata / "test_key.pem").string();
  const std::string model = (*root_ / "a").string();
  auto decode = StartDecodeNode({.model = {.model_dir = model, .threads = 1},
                                 .security = {.tls_cert_file = cert,
                                              .tls_key_file = key,
                                              .auth_token = "tok"}});
  ASSERT_TRUE(decode.ok()) << decode.status();
  auto prefill = StartPrefillNode({.model = {.model_dir = model, .threads = 1},
                                   .decode_address = "127.0.0.1:" + std::to_string((*decode)->port()),
                                   .security = {.upstream_ca_file = cert, .auth_token = "tok"}});
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  kvwire::v1::GenerateReply reply;
  grpc::Status s = Call(**prefill, Request("int4-rans", 3), &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  auto stub = kvwire::v1::PrefillNode::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*prefill)->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer tok");
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  s = stub->Generate(&context, Request("int4-rans", 3), &reply);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(reply.stats().wire_bytes(), 0u);
  // A prefill node that does not trust the decode node's certificate cannot upload.
  auto untrusting = StartPrefillNode({.model = {.model_dir = model, .threads = 1},
                                      .decode_address = "127.0.0.1:" + std::to_string((*decode)->port())});
  ASSERT_TRUE(untrusting.ok());
  EXPECT_EQ(Call(**untrusting, Request("int4-rans", 3), &reply).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace kvwire::nodes
