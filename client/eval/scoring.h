// Task registry, per-example dispatch and score aggregation of the evaluation harness.
//
// Scores are kept in [0, 1] everywhere; FormatScoreTable multiplies by 100, the scale benchmark
// papers (and the LongBench/RULER scripts) report.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/eval/metrics.h"
#include "client/eval/tasks.h"

namespace kvwire::eval {

enum class Metric {
  kQaF1,             // QaF1
  kRougeL,           // RougeL
  kClassification,   // ClassificationScore
  kRetrieval,        // RetrievalScore
  kCount,            // CountScore
  kCodeSim,          // CodeSimScore (difflib backend)
  kStringMatchAll,   // StringMatchAll (RULER niah_*, vt, cwe, fwe)
  kStringMatchPart,  // StringMatchPart (RULER qa_*)
  kSquadF1,          // SquadF1
  kPrefixMatch,      // PrefixMatch (kvwire's synthetic tasks)
};

// The reference scripts' names: "qa_f1_score", "rouge_score", "classification_score",
// "retrieval_score", "count_score", "code_sim_score", "string_match_all", "string_match_part",
// "squad_f1"; and kvwire's own "prefix_match".
std::string_view MetricName(Metric metric);

struct TaskSpec {
  std::string_view name;       // as in the data files ("2wikimqa", "repobench-p", "niah_single_1")
  std::string_view benchmark;  // "LongBench", "RULER", "SQuAD"
  std::string_view category;   // LongBench: one of LongBenchCategories(); else the benchmark
  Metric metric;
  // LongBench scores only the first line of few-shot predictions (trec, triviaqa, samsum), since
  // models tend to continue with further invented examples.
  bool first_line_only = false;
  // LongBench and SQuAD credit the best-matching answer; RULER scores the reference list as a
  // whole (all of it for string_match_all), so it must not take a max over single answers.
  bool max_over_answers = true;
  // RULER strips predictions and turns control characters into newlines before matching.
  bool ruler_postprocess = false;
};

// The 16 English LongBench tasks, in LongBench's order.
absl::Span<const TaskSpec> LongBenchTasks();
// "Single-Doc QA", "Multi-Doc QA", "Summarization", "Few-shot", "Synthetic", "Code".
absl::Span<const std::string_view> LongBenchCategories();
// RULER's 13 synthetic tasks (category "RULER").
absl::Span<const TaskSpec> RulerTasks();
// kvwire's synthetic tasks (models/tasks: passkey, multikey, vartrack, qa, mqar), benchmark and
// category "kvwire", scored with PrefixMatch: the prompt ends with "answer :", so the model's
// next words must be the answer.
absl::Span<const TaskSpec> KvwireTasks();
// LongBench, then RULER, then "squad" (category "SQuAD", SquadF1), then kvwire's tasks.
absl::Span<const TaskSpec> AllTasks();

// The spec for `name`. LongBench's Chinese tasks (multifieldqa_zh, dureader, vcsum, lsht,
// passage_retrieval_zh) give Unimplemented: their official metrics need jieba segmentation,
// which metrics.h only approximates. Any other unknown name gives NotFound.
absl::StatusOr<TaskSpec> FindTask(std::string_view name);

// One example's score in [0, 1], as the benchmark's own scorer computes it: post-processing per
// the spec, then the metric, maximised over `answers` (or over the whole list for RULER).
// Errors: unknown task (see FindTask); empty `answers`; trec without `all_classes`;
// passage_retrieval_en with an answer lacking "Paragraph <n>" (the reference script crashes).
absl::StatusOr<double> ScoreExample(std::string_view task, std::string_view prediction,
                                    absl::Span<const std::string> answers,
                                    absl::Span<const std::string> all_classes = {});
absl::StatusOr<double> ScoreExample(const TaskExample& example, std::string_view prediction);

struct TaskScore {
  std::string task;
  std::string category;
  int64_t examples = 0;
  double mean = 0;  // mean example score, [0, 1]
};

struct CategoryScore {
  std::string category;
  int tasks = 0;
  double mean = 0;  // unweighted mean of its tasks' means
};

struct ScoreTable {
  std::vector<TaskScore> tasks;           // registry order; only tasks that received scores
  std::vector<CategoryScore> categories;  // registry order; only categories with tasks
  // Unweighted mean of the task means: what LongBench papers report as "Avg"/"Overall" (the
  // seed tables' Overall equals the 16-task mean, not the mean of the 6 category means).
  double task_average = 0;
  double category_average = 0;  // unweighted mean of the category means, for reference
  int64_t examples = 0;
};

// Collects example scores and summarises them per task, per category and overall.
class ScoreAggregator {
 public:
  // NotFound/Unimplemented for tasks FindTask rejects; InvalidArgument for a score that is NaN or
  // outside [0, 1].
  absl::Status Add(std::string_view task, double score);
  // ScoreExample + Add.
  absl::Status AddExample(const TaskExample& example, std::string_view prediction);

  ScoreTable Table() const;

 private:
  std::map<std::string, std::pair<double, int64_t>, std::less<>> sums_;  // task -> (sum, count)
};

// Markdown: a task table (task, category, metric, n, score) and a category table, scores x100
// with two decimals, and the overall averages.
std::string FormatScoreTable(const ScoreTable& table);

}  // namespace kvwire::eval
