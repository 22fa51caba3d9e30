// The in-process evaluation on the tiny random model (server/nodes/testing): fidelity measures
// need no trained weights, so the assertions below hold for any model.
#include "client/eval/runner.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "client/eval/report.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/tasks/task_generator.h"
#include "server/modelio/safetensors.h"
#include "server/modelio/safetensors_writer.h"
#include "server/nodes/testing/tiny_model.h"

namespace kvwire::eval {
namespace {

using ::testing::HasSubstr;

// The fixture's weights (std 0.02) give near-uniform next-token distributions (perplexity about
// the vocabulary size), where even INT2 rarely flips an argmax. Scaling every matrix (norms
// excepted) sharpens logits and attention like a trained model's, so agreement has room to fall.
absl::Status SharpenWeights(const std::filesystem::path& dir, float scale) {
  const std::string path = (dir / "model.safetensors").string();
  std::vector<std::string> names;
  std::vector<std::vector<float>> data;
  std::vector<std::vector<int64_t>> shapes;
  {
    auto file = modelio::SafetensorsFile::Open(path);
    if (!file.ok()) return file.status();
    for (const std::string& name : (*file)->Names()) {
      auto view = (*file)->Get(name);
      if (!view.ok()) return view.status();
      auto values = modelio::TensorToFloat(*view);
      if (!values.ok()) return values.status();
      if (name.find("norm") == std::string::npos) {
        for (float& x : *values) x *= scale;
      }
      names.push_back(name);
      shapes.push_back(view->shape);
      data.push_back(*std::move(values));
    }
  }
  std::vector<modelio::TensorToWrite> tensors;
  for (size_t i = 0; i < names.size(); ++i) {
    tensors.push_back({names[i], modelio::Dtype::kF32, shapes[i],
                       std::span(reinterpret_cast<const uint8_t*>(data[i].data()), data[i].size() * 4)});
  }
  return modelio::WriteSafetensors(path, tensors, {{"format", "pt"}});
}

class RunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("kvwire_runner_test_" + std::to_string(::getpid())));
    ASSERT_TRUE(nodes::testing::WriteTinyModel(*dir_, nodes::testing::TinyConfig(3)).ok());
    ASSERT_TRUE(SharpenWeights(*dir_, 12.0f).ok());
    nodes::ModelOptions o;
    o.model_dir = dir_->string();
    o.threads = 1;
    auto m = nodes::NodeModel::Load(o);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  static std::vector<EvalConfig> Configs(const std::vector<std::string>& specs) {
    std::vector<EvalConfig> out;
    for (const std::string& s : specs) {
      auto c = ParseConfigSpec(s);
      EXPECT_TRUE(c.ok()) << s << ": " << c.status();
      out.push_back(*c);
    }
    return out;
  }

  // English-like text: the tiny tokenizer is byte-level, one token per byte or merge.
  static std::vector<int32_t> TextTokens(int n) {
    std::string text;
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran",
                           "in", "to", "garden", "where", "birds", "sang"};
    uint32_t x = 12345;
    while (text.size() < static_cast<size_t>(n) * 2) {
      x = x * 1103515245u + 12345u;
      text += words[(x >> 16) % 16];
      text += (x >> 8) % 7 == 0 ? ". " : " ";
    }
    auto ids = model_->tokenizer->Encode(text, false);
    EXPECT_TRUE(ids.ok());
    ids->resize(n);
    return *ids;
  }

  static std::map<std::string, EvalRecord> RunText(const std::vector<EvalConfig>& configs, int samples,
                                                   RunnerOptions options = {}) {
    auto cut = CutText(TextTokens(samples * 200), 160, 40, samples, std::nullopt, "t");
    EXPECT_TRUE(cut.ok()) << cut.status();
    Evaluator ev(*model_, options);
    std::vector<EvalRecord> records;
    for (const TextSample& s : *cut) {
      absl::Status st = ev.RunText(s, configs, {}, [&](EvalRecord r) {
        records.push_back(std::move(r));
        return absl::OkStatus();
      });
      EXPECT_TRUE(st.ok()) << st;
    }
    std::vector<ConfigLabel> order;
    for (const EvalConfig& c : configs) order.push_back(c.label);
    summary_ = Summarize(records, order, "full", Quality::kAgreement);
    std::map<std::string, EvalRecord> first;
    for (EvalRecord& r : records) first.emplace(r.config, r);
    return first;
  }

  static const ConfigSummary& Of(const std::string& name) {
    for (const ConfigSummary& s : summary_.configs) {
      if (s.label.name == name) return s;
    }
    ADD_FAILURE() << "no summary for " << name;
    return summary_.configs.front();
  }

  static std::filesystem::path* dir_;
  static nodes::NodeModel* model_;
  static EvalSummary summary_;
};

std::filesystem::path* RunnerTest::dir_ = nullptr;
nodes::NodeModel* RunnerTest::model_ = nullptr;
EvalSummary RunnerTest::summary_;

TEST_F(RunnerTest, LosslessPresetsAgreeExactly) {
  RunText(Configs({"full", "full-zstd", "full-rans"}), 2);
  for (const char* name : {"full", "full-zstd", "full-rans"}) {
    const ConfigSummary& s = Of(name);
    EXPECT_EQ(s.examples, 2) << name;
    EXPECT_EQ(s.fidelity.steps, 2 * 16) << name;
    EXPECT_EQ(s.fidelity.agreement(), 1.0) << name;
    EXPECT_EQ(s.fidelity.kl_sum, 0.0) << name;  // exactly: the same logits bit for bit
    EXPECT_EQ(s.fidelity.nll_tokens, 2 * 40) << name;
    EXPECT_EQ(s.fidelity.nll_candidate, s.fidelity.nll_reference) << name;
    EXPECT_EQ(s.key_error, 0.0) << name;
    EXPECT_EQ(s.value_error, 0.0) << name;
    EXPECT_EQ(s.attention_error, 0.0) << name;
    EXPECT_EQ(s.kept_fraction, 1.0) << name;
  }
  // float32 raw is 32 bits per element; the reference for bandwidth is 16.
  EXPECT_NEAR(Of("full").bandwidth_fraction, 2.0, 0.05);
  EXPECT_LT(Of("full-zstd").bytes_per_request, Of("full").bytes_per_request * 1.01);
}

TEST_F(RunnerTest, FidelityFallsAsBitsDrop) {
  RunText(Configs({"full", "int8=plan=*:int8", "int4=plan=*:int4", "int2=plan=*:int2"}), 3);
  const ConfigSummary &i8 = Of("int8"), &i4 = Of("int4"), &i2 = Of("int2");
  std::printf("agreement int8 %.4f int4 %.4f int2 %.4f | KL int8 %.3g int4 %.3g int2 %.3g | "
              "ppl full %.4f int8 %.4f int4 %.4f int2 %.4f | attn err %.3g %.3g %.3g\n",
              i8.fidelity.agreement(), i4.fidelity.agreement(), i2.fidelity.agreement(),
              i8.fidelity.mean_kl(), i4.fidelity.mean_kl(), i2.fidelity.mean_kl(),
              i8.fidelity.perplexity_reference(), i8.fidelity.perplexity_candidate(),
              i4.fidelity.perplexity_candidate(), i2.fidelity.perplexity_candidate(),
              i8.attention_error, i4.attention_error, i2.attention_error);
  EXPECT_GE(i8.fidelity.agreement(), i4.fidelity.agreement());
  EXPECT_GE(i4.fidelity.agreement(), i2.fidelity.agreement());
  EXPECT_LT(i8.fidelity.mean_kl(), i4.fidelity.mean_kl());
  EXPECT_LT(i4.fidelity.mean_kl(), i2.fidelity.mean_kl());
  EXPECT_GT(i8.fidelity.mean_kl(), 0.0);
  EXPECT_LT(i8.key_error, i4.key_error);
  EXPECT_LT(i4.key_error, i2.key_error);
  EXPECT_LT(i8.attention_error, i4.attention_error);
  EXPECT_LT(i4.attention_error, i2.attention_error);
  EXPECT_LT(i4.bytes_per_request, i8.bytes_per_request);
  EXPECT_LT(i2.bytes_per_request, i4.bytes_per_request);
  EXPECT_EQ(Of("full").fidelity.agreement(), 1.0);
}

TEST_F(RunnerTest, SelectionMethodsRunOnTextIncludingQ2C) {
  auto first = RunText(Configs({"full", "snapkv25=select=snapkv;keep=0.25", "q2c25=select=q2c;keep=0.25",
                                "h2o25=select=h2o;keep=0.25;recent=8", "streaming25=select=streaming;keep=0.25",
                                "random25=select=random;keep=0.25;seed=3"}),
                       1);
  for (const char* name : {"snapkv25", "q2c25", "h2o25", "streaming25", "random25"}) {
    const ConfigSummary& s = Of(name);
    EXPECT_EQ(s.examples, 1) << name;
    EXPECT_NEAR(s.kept_fraction, 0.25, 0.03) << name;
    // Raw coding: the kept rows are exact; dropping rows moves the attention output.
    EXPECT_EQ(s.key_error, 0.0) << name;
    EXPECT_GT(s.attention_error, 0.0) << name;
    EXPECT_LE(s.fidelity.agreement(), 1.0) << name;
    EXPECT_EQ(first[name].key_error.size(), 3u);
    EXPECT_EQ(first[name].attention_error.size(), 3u);
  }
}

TEST_F(RunnerTest, TaskExamplesAreScoredAndNothingBeatsFull) {
  std::vector<TaskExample> examples;
  for (int i = 0; i < 3; ++i) {
    tasks::TaskParams p;
    p.task = tasks::TaskType::kPasskey;
    p.length = 48;
    p.seed = 5;
    auto ex = tasks::GenerateExample(p, i);
    ASSERT_TRUE(ex.ok());
    const tasks::Prompt prompt = tasks::FormatPrompt(*ex);
    examples.push_back({ex->id, "passkey", prompt.context_text, prompt.question_text, {prompt.answer_text}});
  }
  const std::vector<EvalConfig> configs =
      Configs({"full", "int8=plan=*:int8", "int2=plan=*:int2", "q2c50=select=q2c;keep=0.5;plan=*:int4"});
  RunnerOptions options;
  options.max_new_tokens = 6;
  options.fidelity_tokens = 8;
  Evaluator ev(*model_, options);
  std::vector<EvalRecord> records;
  std::map<std::string, int> skipped;
  auto skip = [&](const EvalConfig& c, const std::string& id) {
    const bool s = c.label.name == "int8" && id == examples[0].id;
    if (s) ++skipped[c.label.name];
    return s;
  };
  for (const TaskExample& ex : examples) {
    absl::Status st = ev.RunExample(ex, configs, skip, [&](EvalRecord r) {
      records.push_back(std::move(r));
      return absl::OkStatus();
    });
    ASSERT_TRUE(st.ok()) << st;
  }
  EXPECT_EQ(records.size(), 3u * 4 - 1);
  EXPECT_EQ(skipped["int8"], 1);
  std::string full_prediction;
  for (const EvalRecord& r : records) {
    ASSERT_TRUE(r.score.has_value());
    EXPECT_GE(*r.score, 0.0);
    EXPECT_LE(*r.score, 1.0);
    EXPECT_EQ(r.fidelity.steps, 8) << r.config;
    EXPECT_GT(r.frame_bytes, 0u);
    EXPECT_GT(r.prompt_tokens, 40);
    if (r.config == "full") {
      EXPECT_EQ(r.fidelity.agreements, 8);
      EXPECT_EQ(r.fidelity.kl_sum, 0.0);
    }
  }
  // A random model scores about the same with any cache; no configuration may beat full.
  for (const char* name : {"int8", "int2", "q2c50"}) {
    EXPECT_FALSE(BeatsBeyondNoise(PairedScoreDelta(records, name, "full"))) << name;
  }
}

TEST_F(RunnerTest, GenerationMatchesTheFullCacheWhenLossless) {
  // Score the example against the full cache's own prediction: lossless configurations must
  // reproduce it exactly (score 1), which checks the generation loop against the reference.
  TaskExample ex{"x", "passkey", "the pass key is 1 2 3 4 5 . remember it .", "what is the pass key ? answer :", {"?"}};
  RunnerOptions options;
  options.max_new_tokens = 5;
  Evaluator ev(*model_, options);
  std::vector<EvalRecord> records;
  auto sink = [&](EvalRecord r) {
    records.push_back(std::move(r));
    return absl::OkStatus();
  };
  ASSERT_TRUE(ev.RunExample(ex, Configs({"full"}), {}, sink).ok());
  ASSERT_EQ(records.size(), 1u);
  ASSERT_FALSE(records[0].prediction.empty());
  ex.answers = {records[0].prediction};
  records.clear();
  ASSERT_TRUE(ev.RunExample(ex, Configs({"full", "full-rans"}), {}, sink).ok());
  ASSERT_EQ(records.size(), 2u);
  for (const EvalRecord& r : records) {
    EXPECT_EQ(r.prediction, ex.answers[0]) << r.config;
    EXPECT_EQ(*r.score, 1.0) << r.config << " [" << r.prediction << "]";
  }
}

TEST_F(RunnerTest, BadInputsAreErrors) {
  Evaluator ev(*model_, {});
  auto sink = [](EvalRecord) { return absl::OkStatus(); };
  TaskExample unknown{"u", "nosuchtask", "context text", "question ?", {"a"}};
  absl::Status st = ev.RunExample(unknown, Configs({"full"}), {}, sink);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("nosuchtask"));
  // Q2C needs a question.
  TaskExample no_question{"q", "passkey", "some context words here", "", {"a"}};
  st = ev.RunExample(no_question, Configs({"select=q2c;keep=0.5"}), {}, sink);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("Q2C"));
  // Too long for the model's 512 positions.
  TaskExample too_long{"l", "passkey", std::string(600, 'x'), "q", {"a"}};
  EXPECT_EQ(ev.RunExample(too_long, Configs({"full"}), {}, sink).code(), absl::StatusCode::kInvalidArgument);
  // A sink error stops the run.
  TaskExample ok{"o", "passkey", "the pass key is 1 2 3 .", "what is it ?", {"1 2 3"}};
  EXPECT_EQ(ev.RunExample(ok, Configs({"full"}), {}, [](EvalRecord) { return absl::DataLossError("disk"); }).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(RunnerTest, ScoutTransferOverlapAndSelfScoutMatchesGlobal) {
  auto matrix = NamedMatrix("scout", ModelShape{3, 16});
  ASSERT_TRUE(matrix.ok());
  // The model as its own scout: the same positions as its global choice, overlap exactly 1.
  RunnerOptions self;
  self.scout = model_;
  auto self_run = [&]() {
    auto cut = CutText(TextTokens(200), 160, 40, 1, std::nullopt, "t");
    std::vector<EvalRecord> records;
    Evaluator ev(*model_, self);
    absl::Status st = ev.RunText((*cut)[0], *matrix, {}, [&](EvalRecord r) {
      records.push_back(std::move(r));
      return absl::OkStatus();
    });
    EXPECT_TRUE(st.ok()) << st;
    return records;
  }();
  std::map<std::string, EvalRecord> by;
  for (EvalRecord& r : self_run) by.emplace(r.config, std::move(r));
  for (const char* base : {"q2c25", "q2c50", "snapkv75"}) {
    const EvalRecord& scout = by.at(std::string(base) + "-scout");
    const EvalRecord& global = by.at(std::string(base) + "-global");
    EXPECT_EQ(scout.selection_overlap, 1.0) << base;
    EXPECT_TRUE(std::isnan(global.selection_overlap)) << base;
    EXPECT_EQ(scout.frame_bytes, global.frame_bytes) << base;
    EXPECT_EQ(scout.fidelity.kl_sum, global.fidelity.kl_sum) << base;
    // Own per-layer selection keeps the same number of rows.
    EXPECT_EQ(by.at(base).kept_elements, global.kept_elements) << base;
  }

  // A different scout (the unsharpened 2-layer tiny model) overlaps partly.
  const auto scout_dir = *dir_ / "scout";
  ASSERT_TRUE(nodes::testing::WriteTinyModel(scout_dir, nodes::testing::TinyConfig(2)).ok());
  nodes::ModelOptions o;
  o.model_dir = scout_dir.string();
  o.threads = 1;
  auto scout = nodes::NodeModel::Load(o);
  ASSERT_TRUE(scout.ok()) << scout.status();
  RunnerOptions other;
  other.scout = scout->get();
  auto cut = CutText(TextTokens(200), 160, 40, 1, std::nullopt, "t");
  Evaluator ev(*model_, other);
  std::vector<EvalRecord> records;
  ASSERT_TRUE(ev.RunText((*cut)[0], *matrix, {}, [&](EvalRecord r) {
                  records.push_back(std::move(r));
                  return absl::OkStatus();
                }).ok());
  int scouts = 0;
  for (const EvalRecord& r : records) {
    if (r.config.ends_with("-scout")) {
      ++scouts;
      EXPECT_GE(r.selection_overlap, 0.0) << r.config;
      EXPECT_LE(r.selection_overlap, 1.0) << r.config;
    }
  }
  EXPECT_EQ(scouts, 6);

  // Without a scout the scout configurations are refused.
  Evaluator none(*model_, {});
  absl::Status st = none.RunText((*cut)[0], *matrix, {}, [](EvalRecord) { return absl::OkStatus(); });
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("scout"));
}

TEST(CutTextTest, ConsecutiveSamplesWithBos) {
  std::vector<int32_t> tokens(25);
  for (int i = 0; i < 25; ++i) tokens[i] = 100 + i;
  auto s = CutText(tokens, 6, 3, 0, 1, "doc");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 3u);  // 8 tokens each (5 context + 3 continuation), one left over
  EXPECT_EQ((*s)[0].id, "doc#0");
  EXPECT_EQ((*s)[0].context, (std::vector<int32_t>{1, 100, 101, 102, 103, 104}));
  EXPECT_EQ((*s)[0].continuation, (std::vector<int32_t>{105, 106, 107}));
  EXPECT_EQ((*s)[2].continuation, (std::vector<int32_t>{121, 122, 123}));
  EXPECT_EQ(CutText(tokens, 6, 3, 2, 1, "doc")->size(), 2u);
  // Too short for one full sample: one shorter one.
  auto short_text = CutText(std::span(tokens).first(6), 10, 3, 0, std::nullopt, "s");
  ASSERT_TRUE(short_text.ok());
  ASSERT_EQ(short_text->size(), 1u);
  EXPECT_EQ((*short_text)[0].context.size(), 3u);
  EXPECT_EQ(CutText(std::span(tokens).first(4), 10, 3, 0, std::nullopt, "s").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(CutText(tokens, 1, 3, 0, std::nullopt, "s").ok());
}

TEST(TaskMaxNewTokensTest, BenchmarkLimits) {
  EXPECT_EQ(TaskMaxNewTokens("gov_report"), 512);
  EXPECT_EQ(TaskMaxNewTokens("hotpotqa"), 32);
  EXPECT_EQ(TaskMaxNewTokens("vt"), 30);
  EXPECT_EQ(TaskMaxNewTokens("passkey"), 32);
}

}  // namespace
}  // namespace kvwire::eval
