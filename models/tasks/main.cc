// kvwire_tasks: writes long-context retrieval examples as JSONL, one example per line, with the
// fields the evaluation harness loads (id, task, context, question, answers) plus split, depth,
// length, needle_position and answer_spans.
//
//   kvwire_tasks --task passkey|multikey|vartrack|qa|mqar|all --length 1024[,4096] --count 10
//                --seed 1 --split train|heldout [--depths 0,0.25,0.5,0.75,1] --out FILE.jsonl
//
// With --depths, --count examples are written per task, length and depth (a RULER-style grid);
// without it every example draws its own depth. Output order is task, length, depth, index, and
// is byte-identical for identical arguments. Exit codes as in the kvwire CLI: 0 success, 1 the
// job failed, 2 bad command line.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "models/tasks/task_generator.h"

namespace {

using kvwire::tasks::TaskParams;
using kvwire::tasks::TaskType;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Generate long-context retrieval tasks (passkey, multikey, vartrack, qa, mqar) as JSONL"};
  std::string task_name = "all";
  std::vector<int> lengths = {1024};
  int count = 10;
  uint64_t seed = 0;
  std::string split_name = "train";
  std::vector<double> depths;
  std::string out_path = "-";
  TaskParams base;
  app.add_option("--task", task_name, "passkey|multikey|vartrack|qa|mqar|all")
      ->check(CLI::IsMember({"passkey", "multikey", "vartrack", "qa", "mqar", "all"}));
  app.add_option("--length", lengths, "target prompt length(s) in words, comma separated")
      ->delimiter(',');
  app.add_option("--count", count, "examples per task, length and depth")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", seed, "seed; identical arguments give identical output");
  app.add_option("--split", split_name, "train|heldout")
      ->check(CLI::IsMember({"train", "heldout"}));
  app.add_option("--depths", depths, "needle depths in [0,1], comma separated (default: random)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--num-keys", base.num_keys, "needles / chains / facts / pairs (0: task default)");
  app.add_option("--hops", base.num_hops, "vartrack hops (0: default 4)");
  app.add_option("--value-digits", base.value_digits, "digits per value (0: task default)");
  app.add_option("--key-words", base.key_words, "name words per key, 1 or 2 (0: task default)");
  app.add_option("--out", out_path, "output JSONL file, - for stdout");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help or the error
    return rc == 0 ? 0 : 2;
  }

  std::vector<TaskType> tasks;
  if (task_name == "all") {
    tasks.assign(std::begin(kvwire::tasks::kAllTasks), std::end(kvwire::tasks::kAllTasks));
  } else {
    tasks.push_back(*kvwire::tasks::ParseTaskType(task_name));  // checked by IsMember above
  }
  base.split = *kvwire::tasks::ParseSplit(split_name);
  base.seed = seed;
  std::vector<std::optional<double>> depth_list(depths.begin(), depths.end());
  if (depth_list.empty()) depth_list.push_back(std::nullopt);

  std::ofstream file;
  std::ostream* out = &std::cout;
  if (out_path != "-") {
    file.open(out_path, std::ios::binary | std::ios::trunc);
    if (!file) {
      std::cerr << "kvwire_tasks: cannot open " << out_path << " for writing\n";
      return 1;
    }
    out = &file;
  }
  long written = 0;
  for (TaskType task : tasks) {
    for (int length : lengths) {
      for (const std::optional<double>& depth : depth_list) {
        TaskParams params = base;
        params.task = task;
        params.length = length;
        params.depth = depth;
        for (int i = 0; i < count; ++i) {
          absl::StatusOr<kvwire::tasks::Example> ex =
              kvwire::tasks::GenerateExample(params, static_cast<uint64_t>(i));
          if (!ex.ok()) {
            std::cerr << "kvwire_tasks: " << kvwire::tasks::TaskName(task) << " length " << length
                      << ": " << ex.status().ToString() << "\n";
            // Bad parameter combinations are the caller's error, like a bad flag.
            return ex.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
          }
          *out << kvwire::tasks::ToJsonLine(*ex) << '\n';
          ++written;
        }
      }
    }
  }
  out->flush();
  if (!*out) {
    std::cerr << "kvwire_tasks: write failed\n";
    return 1;
  }
  std::cerr << "kvwire_tasks: wrote " << written << " examples\n";
  return 0;
}
