#include "models/train/trainer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <cstring>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "models/train/llama_model.h"
#include "models/train/word_tokenizer.h"
#include "server/engine/engine.h"
#include "server/modelio/safetensors.h"
#include "server/tokenizer/tokenizer.h"

namespace kvwire::train {
namespace {

namespace fs = std::filesystem;

fs::path TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("kvwire_train_test_" + name + "_" +
                                            std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::vector<nlohmann::json> ReadLog(const fs::path& dir) {
  std::ifstream f(dir / "train_log.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TrainOptions Tiny(const fs::path& dir) {
  TrainOptions o;
  o.out_dir = dir.string();
  o.layers = 2;
  o.hidden = 32;
  o.heads = 4;
  o.kv_heads = 2;
  o.intermediate = 64;
  o.tasks = {{.task = tasks::TaskType::kPasskey}, {.task = tasks::TaskType::kMqar}};
  o.schedule = {{{128}, std::numeric_limits<int>::max()}};
  o.batch = 8;
  o.lr = 3e-3;
  o.warmup = 5;
  o.log_every = 5;
  o.eval_every = 1000;
  o.eval_examples = 4;
  o.save_every = 10;
  o.threads = 1;
  return o;
}

TEST(WordTokenizerTest, EveryTaskWordIsOneTokenAndPromptsRoundTrip) {
  auto built = BuildWordTokenizer(tasks::Vocabulary());
  ASSERT_TRUE(built.ok()) << built.status();
  auto tok = tokenizer::Tokenizer::FromJson(built->json);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), built->vocab_size);
  EXPECT_TRUE((*tok)->IsSpecial(built->end_of_text_id));
  for (const std::string& w : tasks::Vocabulary()) {
    auto ids = (*tok)->Encode(w);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->size(), 1u) << w;
  }
  // The prompt as the prefill node builds it: context, "\n", question.
  tasks::TaskParams params{.task = tasks::TaskType::kMultiKey, .split = tasks::Split::kHeldOut,
                           .length = 200};
  auto ex = tasks::GenerateExample(params, 3);
  ASSERT_TRUE(ex.ok());
  const tasks::Prompt prompt = tasks::FormatPrompt(*ex);
  auto ids = (*tok)->Encode(prompt.context_text + "\n" + prompt.question_text, false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->size(), ex->context.size() + ex->question.size() + 2);
  auto answer = (*tok)->Encode(prompt.answer_text);
  ASSERT_TRUE(answer.ok());
  auto text = (*tok)->Decode(*answer);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, " " + prompt.answer_text);
  // Text outside the vocabulary still tokenizes, byte by byte if need be.
  auto other = (*tok)->Encode("Zürich 42!");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(*(*tok)->Decode(*other), " Zürich 42!");
}

TEST(WordTokenizerTest, RejectsBadWordLists) {
  EXPECT_FALSE(BuildWordTokenizer({}).ok());
  EXPECT_FALSE(BuildWordTokenizer({"a", "a"}).ok());
  EXPECT_FALSE(BuildWordTokenizer({"two words"}).ok());
}

TEST(TrainerTest, ParsesMixAndSchedule) {
  auto mix = ParseTaskMix("passkey:2,mqar");
  ASSERT_TRUE(mix.ok());
  EXPECT_EQ(mix->size(), 2u);
  EXPECT_EQ((*mix)[0].weight, 2.0);
  EXPECT_EQ((*mix)[1].key_words, 0);
  EXPECT_FALSE(ParseTaskMix("passkey:0").ok());
  EXPECT_FALSE(ParseTaskMix("nosuchtask").ok());
  // Task variants: options after the name; evaluation sees each task type once.
  auto variants = ParseTaskMix("mqar:1,mqar/k2/d5:3,multikey");
  ASSERT_TRUE(variants.ok()) << variants.status();
  ASSERT_EQ(variants->size(), 3u);
  EXPECT_EQ((*variants)[1].task, tasks::TaskType::kMqar);
  EXPECT_EQ((*variants)[1].key_words, 2);
  EXPECT_EQ((*variants)[1].value_digits, 5);
  EXPECT_EQ((*variants)[1].weight, 3.0);
  EXPECT_EQ(TaskTypes(*variants),
            (std::vector<tasks::TaskType>{tasks::TaskType::kMqar, tasks::TaskType::kMultiKey}));
  EXPECT_FALSE(ParseTaskMix("mqar/x2").ok());
  EXPECT_FALSE(ParseTaskMix("mqar/k0").ok());
  EXPECT_FALSE(ParseTaskMix("mqar/k").ok());
  auto sched = ParseSchedule("128:100,256:300,512");
  ASSERT_TRUE(sched.ok());
  EXPECT_EQ(sched->size(), 3u);
  EXPECT_EQ((*sched)[1], (ScheduleStage{{256}, 300}));
  EXPECT_EQ(LengthAt(*sched, 99), 128);
  EXPECT_EQ(LengthAt(*sched, 100), 256);
  EXPECT_EQ(LengthAt(*sched, 5000), 512);
  EXPECT_FALSE(ParseSchedule("128:300,256:100,512").ok());
  EXPECT_FALSE(ParseSchedule("128/:300,512").ok());
  EXPECT_FALSE(ParseSchedule("512/8").ok());
  EXPECT_FALSE(ParseSchedule("128,256").ok());
  EXPECT_FALSE(ParseSchedule("8").ok());
}

// A stage of several lengths takes them in turn, and evaluation uses the stage's longest.
TEST(TrainerTest, AlternatingScheduleStageTakesItsLengthsInTurn) {
  auto sched = ParseSchedule("256:10,512/1024");
  ASSERT_TRUE(sched.ok()) << sched.status();
  EXPECT_EQ(LengthAt(*sched, 9), 256);
  EXPECT_EQ(LengthAt(*sched, 10), 512);
  EXPECT_EQ(LengthAt(*sched, 11), 1024);
  EXPECT_EQ(LengthAt(*sched, 12), 512);
  EXPECT_EQ(EvalLengthAt(*sched, 9), 256);
  EXPECT_EQ(EvalLengthAt(*sched, 10), 1024);
}

// The checkpoint the trainer writes is the model the engine runs: same logits.
TEST(TrainerTest, ExportedCheckpointMatchesTheEngine) {
  const fs::path dir = TempDir("export");
  modelio::ModelConfig cfg;
  cfg.vocab_size = 300;
  cfg.hidden_size = 64;
  cfg.intermediate_size = 96;
  cfg.num_hidden_layers = 2;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 16;
  cfg.rms_norm_eps = 1e-5;
  cfg.max_position_embeddings = 256;
  LlamaModel model(cfg, 7);
  ASSERT_TRUE(model.SaveHf(dir.string()).ok());
  engine::EngineOptions eo;
  eo.model_dir = dir.string();
  eo.threads = 1;
  auto eng = engine::Engine::Load(eo);
  ASSERT_TRUE(eng.ok()) << eng.status();
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 37 + 11) % 300);
  auto prefill = (*eng)->Prefill(ids);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  torch::NoGradGuard ng;
  torch::Tensor tokens = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  torch::Tensor logits = model.Forward(tokens)[0][-1];
  ASSERT_EQ(logits.size(0), 300);
  for (int v = 0; v < 300; ++v) {
    EXPECT_NEAR(logits[v].item<float>(), prefill->last_logits[v], 1e-4) << v;
  }
  LlamaModel reloaded(cfg, 99);
  ASSERT_TRUE(reloaded.LoadHf(dir.string()).ok());
  EXPECT_TRUE(torch::equal(reloaded.Forward(tokens), model.Forward(tokens)));
  fs::remove_all(dir);
}

TEST(TrainerTest, FewStepsLowerTheLossAndResumeIsExact) {
  const fs::path straight = TempDir("straight"), resumed = TempDir("resumed");
  std::ostringstream log;
  TrainOptions o = Tiny(straight);
  o.steps = 40;
  absl::Status trained = Train(o, log);
  ASSERT_TRUE(trained.ok()) << trained << "\n" << log.str();
  std::vector<nlohmann::json> entries = ReadLog(straight);
  ASSERT_GE(entries.size(), 8u);
  const double first = entries.front()["loss"], last = entries[entries.size() - 2]["loss"];
  EXPECT_LT(last, first * 0.8) << log.str();
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "generation_config.json"}) {
    EXPECT_TRUE(fs::exists(straight / f)) << f;
  }

  // 20 steps, then a resumed run to 40, gives the same weights as 40 steps at once.
  TrainOptions a = Tiny(resumed);
  a.steps = 20;
  ASSERT_TRUE(Train(a, log).ok());
  a.steps = 40;
  a.resume = true;
  ASSERT_TRUE(Train(a, log).ok());
  auto r1 = modelio::CheckpointReader::Open(straight.string());
  auto r2 = modelio::CheckpointReader::Open(resumed.string());
  ASSERT_TRUE(r1.ok() && r2.ok());
  for (const std::string& name : (*r1)->Names()) {
    auto t1 = (*r1)->Get(name);
    auto t2 = (*r2)->Get(name);
    ASSERT_TRUE(t1.ok() && t2.ok());
    ASSERT_EQ(t1->nbytes, t2->nbytes);
    EXPECT_EQ(0, std::memcmp(t1->data, t2->data, t1->nbytes)) << name;
  }
  fs::remove_all(straight);
  fs::remove_all(resumed);
}

}  // namespace
}  // namespace kvwire::train
