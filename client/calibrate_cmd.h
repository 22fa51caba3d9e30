// `kvwire calibrate`: writes a model's quality ladder (eval/ladder.h), the codec configurations
// on its Pareto front of quality against bytes per token, either from finished `kvwire eval`
// summaries (--from) or by running the calibration itself: a layer-sensitivity sweep whose
// proposed bit plan joins a matrix of pipelines.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/eval/ladder.h"
#include "client/eval/report.h"
#include "client/eval_cmd.h"

namespace kvwire::cli {

struct CalibrateOptions {
  EvalOptions eval;                // the run (when --from is not given)
  std::vector<std::string> from;   // eval JSON summaries to build the ladder from instead
  std::string ladder_path;         // --ladder: where the ladder JSON goes
  bool sensitivity = true;         // run the layer sweep first (run mode)
  double min_relative = 0;         // drop rungs below this fraction of the full cache's quality
};

CLI::App* AddCalibrateCommand(CLI::App& app, CalibrateOptions& opts);

// Ladder candidates from an eval summary: every configuration with results and a finite quality;
// score = QualityValue (task_score or agreement), bytes split into per-token and fixed parts.
// InvalidArgument for kl (not a score a ladder can rank by with a relative value).
absl::StatusOr<std::vector<eval::LadderRung>> LadderCandidates(const eval::EvalSummary& summary,
                                                               double* reference_score);
// The same from an eval JSON summary's text (the file `kvwire eval --out` writes).
absl::StatusOr<std::vector<eval::LadderRung>> LadderCandidatesFromJson(const std::string& json_text,
                                                                       std::string* fingerprint,
                                                                       std::string* quality,
                                                                       double* reference_score);

// 0 ok, 1 the job failed, 2 bad command line.
int RunCalibrate(const CalibrateOptions& opts);

}  // namespace kvwire::cli
