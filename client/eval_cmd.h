// `kvwire eval`: runs a task file or plain text through a matrix of codec configurations on a
// model, in process (or, for task files, against a running prefill node), and reports task score, bytes, time and fidelity to the full cache per
// configuration (terminal table; CSV, JSON, SVG plot and markdown tables on disk). Runs resume
// from their record log. docs/EVAL.md has the experiments, one command each.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "client/eval/report.h"

namespace kvwire::cli {

struct EvalOptions {
  // Model (in process). With prefill_address instead, requests go to a running prefill node;
  // a --model given as well only supplies the layer count and head size the matrices need.
  std::string model_dir;
  std::string prefill_address;
  double timeout_seconds = 600;
  std::string tokenizer_path;
  std::string dtype = "float32";
  int threads = 0;
  std::string device = "cpu";
  // Scout model of the "scout" matrix (same tokenizer as --model).
  std::string scout_dir;
  // Input: a task file, or plain text (a file or "-" for stdin).
  std::string tasks_path;
  std::string format = "kvwire";
  std::string default_task;
  int limit = 0;
  std::string text_path;
  int context_tokens = 1024;
  int continuation_tokens = 64;
  int samples = 8;
  // Configurations.
  std::vector<std::string> configs;
  std::string configs_file;
  std::vector<std::string> matrices;
  // Measures.
  int max_new_tokens = 0;
  int fidelity_tokens = 16;
  bool no_attention_error = false;
  int observation_window = 32;
  std::string quality;  // default: task_score with tasks, agreement with text
  // Output.
  std::string out_prefix;
  bool overwrite = false;
  bool json = false;
  bool no_progress = false;
  std::string title;
};

CLI::App* AddEvalCommand(CLI::App& app, EvalOptions& opts);
// The eval options on `cmd` (shared with `kvwire calibrate`); returns --model's option.
CLI::Option* AddEvalOptions(CLI::App* cmd, EvalOptions& opts);

// What a finished run produced (also what `kvwire calibrate` builds its ladder from).
struct EvalRun {
  eval::EvalSummary summary;
  std::string model_fingerprint;
  std::string source;
  // Top-level JSON members added to the summary JSON (model, source, settings, layer
  // sensitivity), as one object's text.
  std::string extra_json;
};

// The whole job without printing the table: loads the model, runs, writes the output files
// (when out_prefix is set). InvalidArgument for bad options; errors of the model, input or run.
absl::StatusOr<EvalRun> RunEvalJob(const EvalOptions& opts);

// The checks of the command line alone (InvalidArgument): input, model or node, quality, format.
absl::Status ValidateEvalOptions(const EvalOptions& opts);

// 0 ok, 1 the run failed, 2 bad command line.
int RunEval(const EvalOptions& opts);

}  // namespace kvwire::cli
