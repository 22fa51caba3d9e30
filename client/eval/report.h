// Summaries of an evaluation run, per configuration, and the forms they are reported in: a
// terminal table, CSV, JSON, a markdown table in the seeds' layout, and the comparison that
// tells whether a configuration really beats the full cache.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/eval/fidelity_math.h"
#include "client/eval/records.h"

namespace kvwire::eval {

// What "quality" means on the plot, the Pareto front and the ladder.
enum class Quality {
  kTaskScore,  // mean task score (needs task examples)
  kAgreement,  // top-1 agreement with the full cache
  kKl,         // mean KL divergence from the full cache (lower is better)
};
std::string_view QualityName(Quality q);  // "task_score", "agreement", "kl"
absl::StatusOr<Quality> ParseQuality(std::string_view name);

// A configuration as the report knows it: label, canonical codec text, and the optional pivot
// labels of a named matrix (row: e.g. the method, column: e.g. the retention).
struct ConfigLabel {
  std::string name;
  std::string codec;
  std::string row;
  std::string column;
};

struct ConfigSummary {
  ConfigLabel label;
  int64_t examples = 0;
  // Task mode (NaN without scores).
  double score = 0;         // mean score in [0, 1]
  double score_stderr = 0;  // standard error of the mean
  double relative_score = 0;  // score / the reference configuration's score
  // Bytes and time, means per request.
  double bytes_per_request = 0;
  double bytes_per_token = 0;  // total frame bytes / total cached tokens
  double fixed_bytes = 0;      // header and trailer
  double bits_per_element = 0;
  double bandwidth_fraction = 0;  // bytes / the full cache at 16 bits
  double kept_fraction = 0;
  double encode_seconds = 0;
  double decode_seconds = 0;
  double generate_seconds = 0;
  double seconds_per_request = 0;  // encode + decode + generate
  // Fidelity to the full cache, summed over the run.
  FidelitySums fidelity;
  // Means over examples (NaN entries skipped); the scalar is the mean over layers.
  std::vector<double> key_error_by_layer;
  std::vector<double> value_error_by_layer;
  std::vector<double> attention_error_by_layer;
  double key_error = 0;
  double value_error = 0;
  double attention_error = 0;
  double selection_overlap = 0;  // mean over examples; NaN unless a scout selection
  bool pareto = false;  // on the Pareto front of quality against bytes_per_request
};

struct EvalSummary {
  std::string reference;  // label of the configuration relative scores divide by ("" if none)
  Quality quality = Quality::kAgreement;
  std::vector<ConfigSummary> configs;  // in `order`
};

// Quality value of a summary, oriented so that higher is better (kKl gives -mean KL).
double QualityValue(const ConfigSummary& s, Quality q);

// Groups records by configuration label (in `order`; records of labels not in it are ignored)
// and marks the Pareto front.
EvalSummary Summarize(const std::vector<EvalRecord>& records, const std::vector<ConfigLabel>& order,
                      const std::string& reference, Quality quality);

// Paired comparison of task scores on the examples both configurations ran.
struct PairedDelta {
  int64_t examples = 0;
  double mean = 0;    // mean of score(config) - score(reference)
  double stderr_ = 0;  // its standard error (0 with fewer than 2 examples)
};
PairedDelta PairedScoreDelta(const std::vector<EvalRecord>& records, std::string_view config,
                             std::string_view reference);
// True when `config` beats `reference` beyond noise: mean delta > z * stderr + margin.
bool BeatsBeyondNoise(const PairedDelta& d, double z = 3.0, double margin = 0.01);

// Fixed-width text table for a terminal.
std::string FormatTable(const EvalSummary& summary);
// One header line, one line per configuration; per-layer errors as ';'-separated lists.
std::string ToCsv(const EvalSummary& summary);
// {"reference":..., "quality":..., "configs":[...]} plus `extra` (a JSON object's text, may be
// empty) merged at the top level.
std::string ToJson(const EvalSummary& summary, std::string_view extra_json = {});
// Markdown in the seeds' layout: with pivot labels, rows x columns of quality (as % of the
// reference for task scores and agreement, raw for KL) plus a bandwidth table; otherwise one row
// per configuration with score, % of full, agreement, KL and bandwidth.
std::string SeedTable(const EvalSummary& summary, std::string_view title);

}  // namespace kvwire::eval
