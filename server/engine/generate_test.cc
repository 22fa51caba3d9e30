// Sampling behaviour, and the product's core promise on a real engine: a cache that travels
// through kvcodec losslessly generates exactly what the original cache generates.
#include "server/engine/generate.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "kvcodec/kvcodec.h"
#include "server/modelio/random_checkpoint.h"

namespace kvwire::engine {
namespace {

TEST(SamplerTest, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s({});
  const std::vector<float> logits = {0.1f, 3.0f, -2.0f, 3.0f};
  EXPECT_EQ(*s.Sample(logits), 1);
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> logits = {0.5f, 0.4f, 2.0f, 0.3f};
  Sampler k1({.temperature = 1.0f, .top_k = 1, .seed = 3});
  Sampler p({.temperature = 1.0f, .top_p = 1e-6f, .seed = 3});
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(*k1.Sample(logits), 2);
    EXPECT_EQ(*p.Sample(logits), 2);
  }
}

TEST(SamplerTest, SameSeedSameDrawsAndFrequenciesFollowSoftmax) {
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), -1e9f};
  Sampler a({.temperature = 1.0f, .seed = 11}), b({.temperature = 1.0f, .seed = 11});
  std::map<int, int> counts;
  const int n = 30000;
  for (int i = 0; i < n; ++i) {
    const int32_t x = *a.Sample(logits);
    ASSERT_EQ(x, *b.Sample(logits));
    ++counts[x];
  }
  // p = 1/6, 2/6, 3/6, 0; 5 sigma of a binomial at n = 30000 is under 0.015.
  EXPECT_NEAR(counts[0] / double(n), 1.0 / 6, 0.015);
  EXPECT_NEAR(counts[1] / double(n), 2.0 / 6, 0.015);
  EXPECT_NEAR(counts[2] / double(n), 3.0 / 6, 0.015);
  EXPECT_EQ(counts[3], 0);
}

TEST(SamplerTest, TopPDropsTheTail) {
  const std::vector<float> logits = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  Sampler s({.temperature = 1.0f, .top_p = 0.85f, .seed = 5});
  for (int i = 0; i < 2000; ++i) EXPECT_NE(*s.Sample(logits), 2);
}

TEST(SamplerTest, RejectsBadInput) {
  EXPECT_FALSE(ValidateSampling({.temperature = -1}).ok());
  EXPECT_FALSE(ValidateSampling({.top_p = 0}).ok());
  EXPECT_FALSE(ValidateSampling({.top_k = -2}).ok());
  Sampler s({});
  EXPECT_FALSE(s.Sample({}).ok());
  const std::vector<float> nan = {1.0f, NAN};
  EXPECT_FALSE(s.Sample(nan).ok());
}

class EngineFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "generate_test_XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
    modelio::ModelConfig c;
    c.architecture = modelio::Architecture::kQwen2;
    c.vocab_size = 300;
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.max_position_embeddings = 128;
    c.rms_norm_eps = 1e-6;
    c.rope_theta = 1e6;
    c.attention_bias = true;
    c.tie_word_embeddings = true;
    c.eos_token_ids = {2};
    ASSERT_TRUE(modelio::WriteRandomCheckpoint(dir_, c, 7, modelio::Dtype::kF32).ok());
    auto engine = Engine::Load({.model_dir = dir_, .dtype = "float32", .threads = 1});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    for (int i = 0; i < 40; ++i) prompt_.push_back(3 + (i * 37) % 290);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Prefill, encode with `config`, decode the frame, and generate from the decoded cache.
  GenerateResult ThroughCodec(const std::string& config_text, const GenerateOptions& options,
                              const PrefillResult& prefill) {
    auto config = kvcodec::CodecConfig::Parse(config_text);
    EXPECT_TRUE(config.ok());
    auto frame = kvcodec::EncodeFrame(prefill.shape, *config, "m", prefill.positions, prefill.layer_views(),
                                      kvcodec::Selection::KeepAll(prefill.shape));
    EXPECT_TRUE(frame.ok()) << frame.status();
    kvcodec::FrameInfo info;
    auto layers = kvcodec::DecodeFrame(*frame, {}, "m", &info);
    EXPECT_TRUE(layers.ok()) << layers.status();
    auto session = DecodeSession::Create(*engine_, info.shape, *layers, prefill.shape.num_tokens);
    EXPECT_TRUE(session.ok()) << session.status();
    auto result = Generate(**session, prefill.last_logits, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return *result;
  }

  std::string dir_;
  std::unique_ptr<Engine> engine_;
  std::vector<int32_t> prompt_;
};

TEST_F(EngineFixture, LosslessCodecRoundTripGeneratesIdentically) {
  auto prefill = engine_->Prefill(prompt_);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  const GenerateOptions options{.max_new_tokens = 12, .sampling = {.temperature = 0.8f, .seed = 9}};
  auto direct_session = DecodeSession::FromPrefill(*engine_, *prefill);
  ASSERT_TRUE(direct_session.ok());
  auto direct = Generate(**direct_session, prefill->last_logits, options);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(direct->tokens.size(), 12u);
  for (const char* lossless : {"plan=*:raw", "plan=*:raw;entropy=rans", "plan=*:raw;entropy=zstd;chunk=2"}) {
    EXPECT_EQ(ThroughCodec(lossless, options, *prefill).tokens, direct->tokens) << lossless;
  }
}

TEST_F(EngineFixture, StopsOnEosStopStringAndLength) {
  auto prefill = engine_->Prefill(prompt_);
  ASSERT_TRUE(prefill.ok());
  auto session = DecodeSession::FromPrefill(*engine_, *prefill);
  ASSERT_TRUE(session.ok());
  // Each token's text is one letter; the stop string is whatever the 4th and 5th tokens spell.
  auto letter = [](int32_t id) { return std::string(1, static_cast<char>('a' + id % 26)); };
  auto greedy = Generate(**session, prefill->last_logits, {.max_new_tokens = 8, .detokenize = letter});
  ASSERT_TRUE(greedy.ok());
  EXPECT_EQ(greedy->finish_reason, "length");
  ASSERT_EQ(greedy->text.size(), 8u);
  const std::string stop = greedy->text.substr(3, 2);
  const size_t first = greedy->text.find(stop);
  auto session2 = DecodeSession::FromPrefill(*engine_, *prefill);
  auto stopped = Generate(**session2, prefill->last_logits,
                          {.max_new_tokens = 8, .stop_strings = {stop}, .detokenize = letter});
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->finish_reason, "stop");
  EXPECT_EQ(stopped->text, greedy->text.substr(0, first));
  auto session3 = DecodeSession::FromPrefill(*engine_, *prefill);
  auto eos = Generate(**session3, prefill->last_logits, {.max_new_tokens = 8, .eos_ids = {greedy->tokens[2]}});
  ASSERT_TRUE(eos.ok());
  EXPECT_EQ(eos->finish_reason, "eos");
  EXPECT_LE(eos->tokens.size(), 3u);
  EXPECT_EQ(eos->tokens.back(), greedy->tokens[2]);
  EXPECT_FALSE(Generate(**session3, prefill->last_logits, {.stop_strings = {"x"}}).ok());  // no detokenizer
}

TEST_F(EngineFixture, InterruptEndsGenerationWithItsStatusAndNoMoreSteps) {
  auto prefill = engine_->Prefill(prompt_);
  ASSERT_TRUE(prefill.ok());
  auto session = DecodeSession::FromPrefill(*engine_, *prefill);
  ASSERT_TRUE(session.ok());
  const int64_t start = (*session)->position();
  int asked = 0;
  GenerateOptions options{.max_new_tokens = 50};
  options.interrupt = [&asked]() -> absl::Status {
    return ++asked > 3 ? absl::CancelledError("client went away") : absl::OkStatus();
  };
  auto result = Generate(**session, prefill->last_logits, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(result.status().message(), "client went away");
  EXPECT_EQ(asked, 4);
  EXPECT_EQ((*session)->position() - start, 3);  // three forward passes, none after the interrupt

  // An interrupt that never fires changes nothing.
  auto plain_session = DecodeSession::FromPrefill(*engine_, *prefill);
  auto asked_session = DecodeSession::FromPrefill(*engine_, *prefill);
  auto plain = Generate(**plain_session, prefill->last_logits, {.max_new_tokens = 6});
  GenerateOptions never{.max_new_tokens = 6};
  never.interrupt = [] { return absl::OkStatus(); };
  auto with_check = Generate(**asked_session, prefill->last_logits, never);
  ASSERT_TRUE(plain.ok() && with_check.ok());
  EXPECT_EQ(plain->tokens, with_check->tokens);
}

}  // namespace
}  // namespace kvwire::engine
