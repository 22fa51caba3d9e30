#include "client/eval/scoring.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/eval/text.h"

namespace kvwire::eval {
namespace {

constexpr std::string_view kSingleDoc = "Single-Doc QA";
constexpr std::string_view kMultiDoc = "Multi-Doc QA";
constexpr std::string_view kSumm = "Summarization";
constexpr std::string_view kFewShot = "Few-shot";
constexpr std::string_view kSynthetic = "Synthetic";
constexpr std::string_view kCode = "Code";

constexpr std::array<std::string_view, 6> kLongBenchCategories = {
    kSingleDoc, kMultiDoc, kSumm, kFewShot, kSynthetic, kCode};

constexpr TaskSpec LB(std::string_view name, std::string_view cat, Metric m, bool first = false) {
  return TaskSpec{name, "LongBench", cat, m, first, true, false};
}
constexpr TaskSpec Ruler(std::string_view name, Metric m) {
  return TaskSpec{name, "RULER", "RULER", m, false, false, true};
}

constexpr TaskSpec Kvwire(std::string_view name) {
  return TaskSpec{name, "kvwire", "kvwire", Metric::kPrefixMatch, false, true, false};
}

constexpr TaskSpec kAllTasks[] = {
    LB("narrativeqa", kSingleDoc, Metric::kQaF1),
    LB("qasper", kSingleDoc, Metric::kQaF1),
    LB("multifieldqa_en", kSingleDoc, Metric::kQaF1),
    LB("hotpotqa", kMultiDoc, Metric::kQaF1),
    LB("2wikimqa", kMultiDoc, Metric::kQaF1),
    LB("musique", kMultiDoc, Metric::kQaF1),
    LB("gov_report", kSumm, Metric::kRougeL),
    LB("qmsum", kSumm, Metric::kRougeL),
    LB("multi_news", kSumm, Metric::kRougeL),
    LB("trec", kFewShot, Metric::kClassification, true),
    LB("triviaqa", kFewShot, Metric::kQaF1, true),
    LB("samsum", kFewShot, Metric::kRougeL, true),
    LB("passage_count", kSynthetic, Metric::kCount),
    LB("passage_retrieval_en", kSynthetic, Metric::kRetrieval),
    LB("lcc", kCode, Metric::kCodeSim),
    LB("repobench-p", kCode, Metric::kCodeSim),
    // RULER: needle-in-a-haystack, variable tracking, common/frequent word extraction need every
    // reference; the QA tasks need any one of the acceptable answers.
    Ruler("niah_single_1", Metric::kStringMatchAll),
    Ruler("niah_single_2", Metric::kStringMatchAll),
    Ruler("niah_single_3", Metric::kStringMatchAll),
    Ruler("niah_multikey_1", Metric::kStringMatchAll),
    Ruler("niah_multikey_2", Metric::kStringMatchAll),
    Ruler("niah_multikey_3", Metric::kStringMatchAll),
    Ruler("niah_multivalue", Metric::kStringMatchAll),
    Ruler("niah_multiquery", Metric::kStringMatchAll),
    Ruler("vt", Metric::kStringMatchAll),
    Ruler("cwe", Metric::kStringMatchAll),
    Ruler("fwe", Metric::kStringMatchAll),
    Ruler("qa_1", Metric::kStringMatchPart),
    Ruler("qa_2", Metric::kStringMatchPart),
    TaskSpec{"squad", "SQuAD", "SQuAD", Metric::kSquadF1, false, true, false},
    Kvwire("passkey"),
    Kvwire("multikey"),
    Kvwire("vartrack"),
    Kvwire("qa"),
    Kvwire("mqar"),
};
constexpr size_t kNumLongBench = 16;
constexpr size_t kNumRuler = 13;
constexpr size_t kNumKvwire = 5;

constexpr std::string_view kLongBenchZh[] = {"multifieldqa_zh", "dureader", "vcsum", "lsht",
                                             "passage_retrieval_zh"};

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Whether retrieval_score can find its "Paragraph <n>" id in a ground truth.
bool HasParagraphId(std::string_view ground_truth) {
  const std::u32string gt = text::Decode(ground_truth);
  static constexpr std::u32string_view kPrefix = U"Paragraph ";
  for (size_t pos = gt.find(kPrefix); pos != std::u32string::npos; pos = gt.find(kPrefix, pos + 1)) {
    const size_t at = pos + kPrefix.size();
    if (at < gt.size() && text::IsDecimalDigit(gt[at])) return true;
  }
  return false;
}

double ApplyMetric(Metric metric, std::string_view pred, std::string_view gt,
                   absl::Span<const std::string> all_classes) {
  switch (metric) {
    case Metric::kQaF1:
      return QaF1(pred, gt);
    case Metric::kRougeL:
      return RougeL(pred, gt);
    case Metric::kClassification:
      return ClassificationScore(pred, gt, all_classes);
    case Metric::kRetrieval:
      return RetrievalScore(pred, gt);
    case Metric::kCount:
      return CountScore(pred, gt);
    case Metric::kCodeSim:
      return CodeSimScore(pred, gt);
    case Metric::kSquadF1:
      return SquadF1(pred, gt);
    case Metric::kPrefixMatch:
      return PrefixMatch(pred, gt);
    case Metric::kStringMatchAll:
    case Metric::kStringMatchPart:
      break;  // list metrics, handled by the caller
  }
  return 0.0;
}

}  // namespace

std::string_view MetricName(Metric metric) {
  switch (metric) {
    case Metric::kQaF1:
      return "qa_f1_score";
    case Metric::kRougeL:
      return "rouge_score";
    case Metric::kClassification:
      return "classification_score";
    case Metric::kRetrieval:
      return "retrieval_score";
    case Metric::kCount:
      return "count_score";
    case Metric::kCodeSim:
      return "code_sim_score";
    case Metric::kStringMatchAll:
      return "string_match_all";
    case Metric::kStringMatchPart:
      return "string_match_part";
    case Metric::kSquadF1:
      return "squad_f1";
    case Metric::kPrefixMatch:
      return "prefix_match";
  }
  return "unknown";
}

absl::Span<const TaskSpec> LongBenchTasks() { return absl::MakeConstSpan(kAllTasks, kNumLongBench); }

absl::Span<const std::string_view> LongBenchCategories() { return kLongBenchCategories; }

absl::Span<const TaskSpec> RulerTasks() {
  return absl::MakeConstSpan(kAllTasks + kNumLongBench, kNumRuler);
}

absl::Span<const TaskSpec> KvwireTasks() {
  return absl::MakeConstSpan(std::end(kAllTasks) - kNumKvwire, kNumKvwire);
}

absl::Span<const TaskSpec> AllTasks() { return kAllTasks; }

absl::StatusOr<TaskSpec> FindTask(std::string_view name) {
  for (const TaskSpec& t : kAllTasks) {
    if (t.name == name) return t;
  }
  for (std::string_view zh : kLongBenchZh) {
    if (zh == name) {
      return absl::UnimplementedError(absl::StrCat(
          "LongBench task \"", AV(name),
          "\" is scored with jieba segmentation, which kvwire_eval does not reproduce; "
          "QaF1ZhChars/RougeZhChars are approximations"));
    }
  }
  return absl::NotFoundError(absl::StrCat("unknown evaluation task \"", AV(name), "\""));
}

absl::StatusOr<double> ScoreExample(std::string_view task, std::string_view prediction,
                                    absl::Span<const std::string> answers,
                                    absl::Span<const std::string> all_classes) {
  absl::StatusOr<TaskSpec> spec = FindTask(task);
  if (!spec.ok()) return spec.status();
  if (answers.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("task ", AV(task), ": no reference answers"));
  }
  if (spec->metric == Metric::kClassification && all_classes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("task ", AV(task), ": classification needs all_classes"));
  }
  if (spec->metric == Metric::kRetrieval) {
    for (const std::string& a : answers) {
      if (!HasParagraphId(a)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "task ", AV(task), ": answer \"", a, "\" has no \"Paragraph <n>\" id"));
      }
    }
  }
  std::string pred(prediction);
  if (spec->first_line_only) pred = FirstLine(pred);
  if (spec->ruler_postprocess) pred = RulerPostprocess(pred);

  if (spec->metric == Metric::kStringMatchAll) return StringMatchAll(pred, answers);
  if (spec->metric == Metric::kStringMatchPart) return StringMatchPart(pred, answers);
  double best = 0.0;
  for (const std::string& gt : answers) {
    best = std::max(best, ApplyMetric(spec->metric, pred, gt, all_classes));
  }
  return best;
}

absl::StatusOr<double> ScoreExample(const TaskExample& example, std::string_view prediction) {
  return ScoreExample(example.task, prediction, example.answers, example.all_classes);
}

absl::Status ScoreAggregator::Add(std::string_view task, double score) {
  absl::StatusOr<TaskSpec> spec = FindTask(task);
  if (!spec.ok()) return spec.status();
  if (!(score >= 0.0 && score <= 1.0)) {  // also rejects NaN
    return absl::InvalidArgumentError(
        absl::StrCat("task ", AV(task), ": score ", score, " outside [0, 1]"));
  }
  auto it = sums_.find(task);
  if (it == sums_.end()) it = sums_.emplace(std::string(task), std::make_pair(0.0, 0)).first;
  it->second.first += score;
  it->second.second += 1;
  return absl::OkStatus();
}

absl::Status ScoreAggregator::AddExample(const TaskExample& example, std::string_view prediction) {
  absl::StatusOr<double> score = ScoreExample(example, prediction);
  if (!score.ok()) return score.status();
  return Add(example.task, *score);
}

ScoreTable ScoreAggregator::Table() const {
  ScoreTable table;
  std::vector<std::pair<std::string_view, std::vector<double>>> by_category;
  for (const TaskSpec& spec : kAllTasks) {
    auto it = sums_.find(spec.name);
    if (it == sums_.end()) continue;
    const auto [sum, count] = it->second;
    TaskScore ts{std::string(spec.name), std::string(spec.category), count,
                 sum / static_cast<double>(count)};
    table.examples += count;
    auto cat = std::find_if(by_category.begin(), by_category.end(),
                            [&](const auto& c) { return c.first == spec.category; });
    if (cat == by_category.end()) {
      by_category.push_back({spec.category, {}});
      cat = std::prev(by_category.end());
    }
    cat->second.push_back(ts.mean);
    table.tasks.push_back(std::move(ts));
  }
  double task_sum = 0, cat_sum = 0;
  for (const TaskScore& t : table.tasks) task_sum += t.mean;
  for (const auto& [name, means] : by_category) {
    double s = 0;
    for (double m : means) s += m;
    CategoryScore cs{std::string(name), static_cast<int>(means.size()),
                     s / static_cast<double>(means.size())};
    cat_sum += cs.mean;
    table.categories.push_back(std::move(cs));
  }
  if (!table.tasks.empty()) task_sum /= static_cast<double>(table.tasks.size());
  if (!table.categories.empty()) cat_sum /= static_cast<double>(table.categories.size());
  table.task_average = task_sum;
  table.category_average = cat_sum;
  return table;
}

std::string FormatScoreTable(const ScoreTable& table) {
  std::string out = "| Task | Category | Metric | N | Score |\n|---|---|---|---|---|\n";
  for (const TaskScore& t : table.tasks) {
    absl::StatusOr<TaskSpec> spec = FindTask(t.task);
    const std::string_view metric = spec.ok() ? MetricName(spec->metric) : "?";
    absl::StrAppendFormat(&out, "| %s | %s | %s | %d | %.2f |\n", t.task, t.category, AV(metric),
                          t.examples, 100 * t.mean);
  }
  out += "\n| Category | Tasks | Score |\n|---|---|---|\n";
  for (const CategoryScore& c : table.categories) {
    absl::StrAppendFormat(&out, "| %s | %d | %.2f |\n", c.category, c.tasks, 100 * c.mean);
  }
  absl::StrAppendFormat(&out,
                        "\nAverage over tasks: %.2f\nAverage over categories: %.2f\n"
                        "Examples: %d\n",
                        100 * table.task_average, 100 * table.category_average, table.examples);
  return out;
}

}  // namespace kvwire::eval
