// Task-file loaders of the evaluation harness: read benchmark examples from the file layouts the
// public benchmarks ship (and kvwire's own), into one record type.
#pragma once

#include <cstdint>
#include <istream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::eval {

// One evaluation example, whatever file layout it came from.
struct TaskExample {
  std::string id;
  std::string task;      // registry name, e.g. "hotpotqa", "niah_single_1", "squad"
  std::string context;   // the long document the KV cache is built from
  std::string question;  // the query asked after the context ("" where the layout has none)
  std::vector<std::string> answers;      // acceptable references
  std::vector<std::string> all_classes;  // label set for classification tasks (LongBench trec)
  std::string language;                  // "en", "zh", or ""
  int64_t length = 0;                    // the layout's length field (LongBench: words), or 0
  // Top-level fields the layout does not map: strings verbatim, other values as compact JSON.
  std::map<std::string, std::string> extra;
};

// Supported layouts.
//  kKvwire:    JSONL, one object per line: "context", "question", "answers" (required);
//              "id", "task", "all_classes", "language", "length" (optional).
//  kLongBench: JSONL as LongBench ships it: "input" (the question), "context", "answers",
//              "length", "dataset" (-> task), "language", "all_classes" (may be null),
//              "_id" (-> id).
//  kSquad:     one SQuAD v1.1/v2.0 JSON document: data[].paragraphs[].{context, qas[]} with
//              qas[].{id, question, answers[].text, is_impossible}. As in the official v2 script,
//              gold answers whose NormalizeAnswer() is empty are dropped and an example left with
//              none (e.g. is_impossible) gets answers {""}. task = "squad", language = "en",
//              extra["title"] = the article title.
//  kRuler:     JSONL as RULER's prepare step writes it: "index" (-> id), "input" (the whole
//              prompt: it goes to `context`, `question` stays ""), "outputs" (-> answers),
//              "length". RULER names the task by file, so pass LoadOptions::default_task.
enum class TaskFormat { kKvwire, kLongBench, kSquad, kRuler };

// "kvwire", "longbench", "squad", "ruler" -> TaskFormat; InvalidArgument otherwise.
absl::StatusOr<TaskFormat> ParseTaskFormat(std::string_view name);

struct LoadOptions {
  // Used for examples whose record names no task (always the case for RULER).
  std::string default_task;
  // Prefix of error messages, normally the file name.
  std::string source_name = "<input>";
};

// Reads all examples. JSONL layouts: blank lines are skipped, a trailing '\r' and a leading UTF-8
// BOM are ignored; any other line that is not a JSON object of the layout is an InvalidArgument
// error "<source>:<line>: ...", as is invalid UTF-8 anywhere (checked before JSON parsing so the
// message names the line and byte column). kSquad reports the line of a JSON syntax error.
// Answers may be strings or integers (integers are converted to decimal text).
absl::StatusOr<std::vector<TaskExample>> LoadJsonl(std::istream& in, TaskFormat format,
                                                   const LoadOptions& options = {});

// As above, from a file (NotFound if it cannot be opened; source_name defaults to the path).
absl::StatusOr<std::vector<TaskExample>> LoadJsonlFile(const std::string& path, TaskFormat format,
                                                       LoadOptions options = {});

}  // namespace kvwire::eval
