#include "client/eval/scoring.h"

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::eval {
namespace {

using ::testing::HasSubstr;

TEST(RegistryTest, LongBenchHas16TasksIn6Categories) {
  const auto tasks = LongBenchTasks();
  ASSERT_EQ(tasks.size(), 16u);
  std::map<std::string, int> per_category;
  for (const TaskSpec& t : tasks) {
    EXPECT_EQ(t.benchmark, "LongBench");
    ++per_category[std::string(t.category)];
  }
  const std::map<std::string, int> want = {{"Single-Doc QA", 3}, {"Multi-Doc QA", 3},
                                           {"Summarization", 3}, {"Few-shot", 3},
                                           {"Synthetic", 2},     {"Code", 2}};
  EXPECT_EQ(per_category, want);
  ASSERT_EQ(LongBenchCategories().size(), 6u);
  for (std::string_view c : LongBenchCategories()) EXPECT_TRUE(want.count(std::string(c))) << c;
}

TEST(RegistryTest, LongBenchMetricsAndPostprocessing) {
  const std::map<std::string, std::pair<Metric, bool>> want = {
      {"narrativeqa", {Metric::kQaF1, false}},
      {"qasper", {Metric::kQaF1, false}},
      {"multifieldqa_en", {Metric::kQaF1, false}},
      {"hotpotqa", {Metric::kQaF1, false}},
      {"2wikimqa", {Metric::kQaF1, false}},
      {"musique", {Metric::kQaF1, false}},
      {"gov_report", {Metric::kRougeL, false}},
      {"qmsum", {Metric::kRougeL, false}},
      {"multi_news", {Metric::kRougeL, false}},
      {"trec", {Metric::kClassification, true}},
      {"triviaqa", {Metric::kQaF1, true}},
      {"samsum", {Metric::kRougeL, true}},
      {"passage_count", {Metric::kCount, false}},
      {"passage_retrieval_en", {Metric::kRetrieval, false}},
      {"lcc", {Metric::kCodeSim, false}},
      {"repobench-p", {Metric::kCodeSim, false}},
  };
  for (const TaskSpec& t : LongBenchTasks()) {
    auto it = want.find(std::string(t.name));
    ASSERT_NE(it, want.end()) << t.name;
    EXPECT_EQ(t.metric, it->second.first) << t.name;
    EXPECT_EQ(t.first_line_only, it->second.second) << t.name;
    EXPECT_TRUE(t.max_over_answers);
  }
  EXPECT_EQ(MetricName(Metric::kCodeSim), "code_sim_score");
}

TEST(RegistryTest, RulerAndLookup) {
  EXPECT_EQ(RulerTasks().size(), 13u);
  for (const TaskSpec& t : RulerTasks()) {
    EXPECT_FALSE(t.max_over_answers);
    const bool qa = t.name.substr(0, 3) == "qa_";
    EXPECT_EQ(t.metric, qa ? Metric::kStringMatchPart : Metric::kStringMatchAll) << t.name;
  }
  EXPECT_EQ(AllTasks().size(), 16u + 13u + 1u + 5u);
  ASSERT_EQ(KvwireTasks().size(), 5u);
  for (const TaskSpec& t : KvwireTasks()) {
    EXPECT_EQ(t.benchmark, "kvwire");
    EXPECT_EQ(t.metric, Metric::kPrefixMatch) << t.name;
  }
  EXPECT_EQ(FindTask("mqar")->category, "kvwire");
  EXPECT_EQ(*ScoreExample("passkey", " 1 0 2 7 9 . remember", {"1 0 2 7 9"}), 1.0);
  EXPECT_EQ(*ScoreExample("passkey", "4 1 0 2 7 9", {"1 0 2 7 9"}), 0.0);
  EXPECT_EQ(FindTask("repobench-p")->category, "Code");
  EXPECT_EQ(FindTask("squad")->metric, Metric::kSquadF1);
  EXPECT_EQ(FindTask("dureader").status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(FindTask("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(ScoreExampleTest, FewShotTasksScoreFirstLineOnly) {
  const std::vector<std::string> classes = {"Location", "Date"};
  // The continuation "Date" would halve the trec score if it were not cut off.
  EXPECT_EQ(*ScoreExample("trec", "\nLocation\nDate", {"Location"}, classes), 1.0);
  EXPECT_EQ(ClassificationScore("\nLocation\nDate", "Location", classes), 0.5);
  // triviaqa: F1 on "Paris" only, not on the invented follow-up question.
  EXPECT_EQ(*ScoreExample("triviaqa", "Paris\nQuestion: capital of Spain?", {"Paris"}), 1.0);
  EXPECT_LT(*ScoreExample("hotpotqa", "Paris\nQuestion: capital of Spain?", {"Paris"}), 1.0);
  // samsum: ROUGE-L of the first line "a b" against "a b": 1.
  EXPECT_NEAR(*ScoreExample("samsum", "a b\nc d e f", {"a b"}), 1.0, 1e-7);
}

TEST(ScoreExampleTest, MaxOverAnswers) {
  EXPECT_NEAR(*ScoreExample("narrativeqa", "the cat sat", {"dog", "a cat sat down", "cat"}),
              0.8, 1e-12);
  EXPECT_EQ(*ScoreExample("passage_retrieval_en", "Paragraph 3 and 5", {"Paragraph 3"}), 0.5);
  EXPECT_EQ(*ScoreExample("passage_count", "4", {"4"}), 1.0);
  EXPECT_EQ(*ScoreExample("lcc", "abcd\n", {"abxd", "zzzz"}), 0.75);
  EXPECT_EQ(*ScoreExample("squad", "", {""}), 1.0);
}

TEST(ScoreExampleTest, RulerScoresReferenceListTogether) {
  EXPECT_NEAR(*ScoreExample("niah_multivalue", " 11, 22\x01 and 33 ", {"11", "22", "44"}),
              2.0 / 3.0, 1e-12);
  EXPECT_EQ(*ScoreExample("qa_1", "It was PARIS.", {"London", "paris"}), 1.0);
}

TEST(ScoreExampleTest, Errors) {
  EXPECT_EQ(ScoreExample("hotpotqa", "x", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScoreExample("trec", "x", {"Location"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad = ScoreExample("passage_retrieval_en", "3", {"3"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("Paragraph"));
  EXPECT_EQ(ScoreExample("vcsum", "x", {"y"}).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(ScoreExampleTest, FromTaskExample) {
  TaskExample ex;
  ex.task = "trec";
  ex.answers = {"Date"};
  ex.all_classes = {"Location", "Date"};
  EXPECT_EQ(*ScoreExample(ex, "Date"), 1.0);
}

TEST(ScoreAggregatorTest, MeansPerTaskCategoryAndOverall) {
  ScoreAggregator agg;
  ASSERT_TRUE(agg.Add("hotpotqa", 1.0).ok());
  ASSERT_TRUE(agg.Add("hotpotqa", 0.0).ok());
  ASSERT_TRUE(agg.Add("2wikimqa", 0.25).ok());
  ASSERT_TRUE(agg.Add("lcc", 0.75).ok());
  EXPECT_EQ(agg.Add("hotpotqa", 1.5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.Add("hotpotqa", std::nan("")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(agg.Add("unknown", 0.5).code(), absl::StatusCode::kNotFound);
  const ScoreTable t = agg.Table();
  ASSERT_EQ(t.tasks.size(), 3u);
  EXPECT_EQ(t.tasks[0].task, "hotpotqa");  // registry order
  EXPECT_EQ(t.tasks[0].examples, 2);
  EXPECT_DOUBLE_EQ(t.tasks[0].mean, 0.5);
  EXPECT_EQ(t.tasks[1].task, "2wikimqa");
  EXPECT_EQ(t.tasks[2].task, "lcc");
  ASSERT_EQ(t.categories.size(), 2u);
  EXPECT_EQ(t.categories[0].category, "Multi-Doc QA");
  EXPECT_DOUBLE_EQ(t.categories[0].mean, 0.375);
  EXPECT_EQ(t.categories[1].category, "Code");
  EXPECT_DOUBLE_EQ(t.categories[1].mean, 0.75);
  EXPECT_DOUBLE_EQ(t.task_average, 0.5);  // (0.5 + 0.25 + 0.75) / 3
  EXPECT_DOUBLE_EQ(t.category_average, 0.5625);
  EXPECT_EQ(t.examples, 4);
  const std::string md = FormatScoreTable(t);
  EXPECT_THAT(md, HasSubstr("| hotpotqa | Multi-Doc QA | qa_f1_score | 2 | 50.00 |"));
  EXPECT_THAT(md, HasSubstr("| Multi-Doc QA | 2 | 37.50 |"));
  EXPECT_THAT(md, HasSubstr("Average over tasks: 50.00"));
}

TEST(ScoreAggregatorTest, ReproducesSeedCategoryTable) {
  // FullKV, Llama-3-8B-Instruct row of the LongBench seed table, in registry order.
  const double per_task[16] = {25.56, 32.27, 39.71, 43.56, 35.29, 21.18, 28.74, 23.20,
                               26.73, 74.00, 90.48, 42.53, 4.80,  69.75, 59.27, 53.92};
  ScoreAggregator agg;
  for (size_t i = 0; i < 16; ++i) {
    ASSERT_TRUE(agg.Add(LongBenchTasks()[i].name, per_task[i] / 100).ok());
  }
  const ScoreTable t = agg.Table();
  ASSERT_EQ(t.categories.size(), 6u);
  const double want[6] = {32.51, 33.34, 26.22, 69.00, 37.28, 56.60};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(t.categories[i].category, LongBenchCategories()[i]);
    EXPECT_NEAR(100 * t.categories[i].mean, want[i], 0.0051) << t.categories[i].category;
  }
  EXPECT_NEAR(100 * t.task_average, 41.94, 0.005);  // the seed's Avg / Overall
}

TEST(ScoreAggregatorTest, AddExampleScoresThenAdds) {
  ScoreAggregator agg;
  TaskExample ex;
  ex.task = "qa_2";
  ex.answers = {"blue"};
  ASSERT_TRUE(agg.AddExample(ex, "Blue.").ok());
  ex.task = "dureader";
  EXPECT_EQ(agg.AddExample(ex, "x").code(), absl::StatusCode::kUnimplemented);
  const ScoreTable t = agg.Table();
  ASSERT_EQ(t.tasks.size(), 1u);
  EXPECT_EQ(t.tasks[0].category, "RULER");
  EXPECT_EQ(t.tasks[0].mean, 1.0);
}

}  // namespace
}  // namespace kvwire::eval
