// Issue 6's accuracy assertions on the bundled target model (models/target), which can do the
// needle tasks the random test model cannot:
//   - INT8 stays within 1 point of the full cache;
//   - random selection at 25% loses to SnapKV at 25% and to Q2C at 25% on needle tasks;
//   - no configuration beats the full cache beyond noise;
//   - and, on a model that retrieves, agreement still falls as bits drop (INT8 >= INT4 >= INT2).
// client/eval/CMakeLists.txt registers this test with ctest only once the model's measured card
// (models/target/eval.json, written by `kvwire_train card`) shows passkey >= 90% at 512 words;
// before that the binary is built but not run.
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "client/eval/matrix.h"
#include "client/eval/report.h"
#include "client/eval/runner.h"
#include "gtest/gtest.h"
#include "models/tasks/task_generator.h"
#include "server/nodes/model.h"

namespace kvwire::eval {
namespace {

namespace fs = std::filesystem;

fs::path TargetDir() {
  const char* root = std::getenv("KVWIRE_SOURCE_DIR");
  return fs::path(root ? root : ".") / "models" / "target";
}

// Held-out needle examples at ten depths: passkey at 512 words (the model's training length),
// 100 of them, so one flipped answer moves a score by 1 point.
std::vector<TaskExample> NeedleExamples() {
  std::vector<TaskExample> out;
  for (tasks::TaskType type : {tasks::TaskType::kPasskey}) {
    for (int i = 0; i < 100; ++i) {
      tasks::TaskParams p;
      p.task = type;
      p.split = tasks::Split::kHeldOut;
      p.seed = 606;
      p.length = 512;
      p.depth = (i % 10) / 9.0;
      auto ex = tasks::GenerateExample(p, i);
      EXPECT_TRUE(ex.ok()) << ex.status();
      if (!ex.ok()) continue;
      const tasks::Prompt prompt = tasks::FormatPrompt(*ex);
      out.push_back({ex->id, std::string(tasks::TaskName(type)), prompt.context_text, prompt.question_text,
                     {prompt.answer_text}});
    }
  }
  return out;
}

class ModelAccuracyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const fs::path dir = TargetDir();
    ASSERT_TRUE(fs::exists(dir / "config.json")) << dir << " has no model";
    nodes::ModelOptions o;
    o.model_dir = dir.string();
    auto model = nodes::NodeModel::Load(o);
    ASSERT_TRUE(model.ok()) << model.status();
    std::vector<EvalConfig> configs;
    for (const char* spec : {"full", "int8=plan=*:int8", "int4=plan=*:int4", "int2=plan=*:int2",
                             "snapkv25=select=snapkv;keep=0.25", "q2c25=select=q2c;keep=0.25",
                             "random25=select=random;keep=0.25;seed=1"}) {
      auto c = ParseConfigSpec(spec);
      ASSERT_TRUE(c.ok()) << c.status();
      configs.push_back(*c);
    }
    RunnerOptions ro;
    ro.max_new_tokens = 8;  // answers are at most 5 value words
    ro.fidelity_tokens = 8;
    ro.attention_error = false;
    Evaluator ev(**model, ro);
    records_ = new std::vector<EvalRecord>();
    for (const TaskExample& ex : NeedleExamples()) {
      absl::Status s = ev.RunExample(ex, configs, {}, [](EvalRecord r) {
        records_->push_back(std::move(r));
        return absl::OkStatus();
      });
      ASSERT_TRUE(s.ok()) << s;
    }
    std::vector<ConfigLabel> order;
    for (const EvalConfig& c : configs) order.push_back(c.label);
    summary_ = new EvalSummary(Summarize(*records_, order, "full", Quality::kTaskScore));
    for (const ConfigSummary& c : summary_->configs) {
      std::printf("%-10s score %.3f agreement %.4f KL %.4g bits/el %.3f\n", c.label.name.c_str(), c.score,
                  c.fidelity.agreement(), c.fidelity.mean_kl(), c.bits_per_element);
    }
  }
  static void TearDownTestSuite() {
    delete records_;
    delete summary_;
  }
  static const ConfigSummary& Of(const std::string& name) {
    for (const ConfigSummary& c : summary_->configs) {
      if (c.label.name == name) return c;
    }
    ADD_FAILURE() << name;
    return summary_->configs.front();
  }
  static std::vector<EvalRecord>* records_;
  static EvalSummary* summary_;
};

std::vector<EvalRecord>* ModelAccuracyTest::records_ = nullptr;
EvalSummary* ModelAccuracyTest::summary_ = nullptr;

// One test (ctest runs each test in its own process, and the matrix is the expensive part).
TEST_F(ModelAccuracyTest, NeedleMatrixOnTheBundledTarget) {
  // The comparisons below only mean something on a model that solves the needle task.
  ASSERT_GE(Of("full").score, 0.5) << "the bundled target solves too few needle tasks; see its model card";

  EXPECT_NEAR(Of("int8").score, Of("full").score, 0.01 + 1e-9) << "INT8 is not within 1 point of full";

  const PairedDelta random = PairedScoreDelta(*records_, "snapkv25", "random25");
  EXPECT_GT(random.mean, 2 * random.stderr_)
      << "random 25% does not lose to SnapKV 25%: " << Of("snapkv25").score << " vs "
      << Of("random25").score;

  // Regression: unpooled Q2C kept the pass key's first digit only and scored 0 on this model.
  const PairedDelta q2c = PairedScoreDelta(*records_, "q2c25", "random25");
  EXPECT_GT(q2c.mean, 2 * q2c.stderr_)
      << "random 25% does not lose to Q2C 25%: " << Of("q2c25").score << " vs " << Of("random25").score;

  for (const ConfigSummary& c : summary_->configs) {
    const PairedDelta d = PairedScoreDelta(*records_, c.label.name, "full");
    EXPECT_FALSE(BeatsBeyondNoise(d)) << c.label.name << " beats full by " << d.mean << " +- " << d.stderr_;
  }

  // Agreement falls and KL rises as bits drop.
  EXPECT_EQ(Of("full").fidelity.agreement(), 1.0);
  EXPECT_EQ(Of("full").fidelity.kl_sum, 0.0);
  EXPECT_GE(Of("int8").fidelity.agreement(), Of("int4").fidelity.agreement());
  EXPECT_GE(Of("int4").fidelity.agreement(), Of("int2").fidelity.agreement());
  EXPECT_LT(Of("int8").fidelity.mean_kl(), Of("int4").fidelity.mean_kl());
  EXPECT_LT(Of("int4").fidelity.mean_kl(), Of("int2").fidelity.mean_kl());
}

}  // namespace
}  // namespace kvwire::eval
