// Quality ladder: the codec configurations on a model's Pareto front of quality against bytes,
// as `kvwire calibrate` measures them, and the rate-control choice a prefill node makes from it
// per request (the best rung that fits a byte budget, or a link rate and a time-to-first-token
// target).
//
// Plain C++ (absl and nlohmann_json only) so a node can link it without the evaluation harness.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::eval {

// Indices of the points on the Pareto front of (cost: lower is better, quality: higher is
// better), in ascending cost. A point is on the front when no other point has cost <= and
// quality >= with at least one strict; of exact duplicates the first is kept. NaN points are
// never on the front. cost and quality must have the same size.
std::vector<size_t> ParetoFront(std::span<const double> cost, std::span<const double> quality);

struct LadderRung {
  std::string name;   // a label, e.g. "snapkv50-int4"
  std::string codec;  // kvcodec config text (CodecConfig::Parse accepts it)
  double score = 0;   // measured quality (see QualityLadder::quality_metric), higher is better
  double relative_score = 0;  // score / the full cache's score (1 = lossless)
  // Predicted frame size for a prompt of n cached tokens: fixed_bytes + bytes_per_token * n.
  double bytes_per_token = 0;
  double fixed_bytes = 0;
  double bits_per_element = 0;  // as measured (informative)
};

struct QualityLadder {
  int version = 1;
  std::string model_fingerprint;  // nodes::ModelFingerprint of the model it was measured on
  // What `score` is: "task_score" (mean task score in [0, 1]), "agreement" (top-1 agreement with
  // the full cache) or another name the producer documents.
  std::string quality_metric;
  double reference_score = 0;  // the full cache's score
  std::string source;          // what was measured (task file or text), informative
  // Ascending bytes_per_token and ascending score (a Pareto front).
  std::vector<LadderRung> rungs;
};

// Keeps the Pareto-optimal candidates (cost = bytes_per_token, quality = score), sorted by
// bytes. Candidates whose relative_score is below `min_relative_score` are dropped first.
std::vector<LadderRung> BuildLadderRungs(std::vector<LadderRung> candidates,
                                         double min_relative_score = 0);

// JSON: {"version":1,"model_fingerprint":...,"quality_metric":...,"reference_score":...,
// "source":...,"rungs":[{"name","codec","score","relative_score","bytes_per_token",
// "fixed_bytes","bits_per_element"}, ...]}.
std::string LadderToJson(const QualityLadder& ladder);
// InvalidArgument for malformed JSON, a missing or mistyped field, an unknown version, an empty
// ladder, negative or non-finite sizes, or rungs not in ascending bytes_per_token order.
absl::StatusOr<QualityLadder> ParseLadder(std::string_view json);
absl::StatusOr<QualityLadder> LoadLadderFile(const std::string& path);

struct RungChoice {
  size_t index = 0;            // into QualityLadder::rungs
  bool fits = false;           // false: nothing fits, `index` is the smallest rung
  double predicted_bytes = 0;  // for the request's token count
};

// The highest-scoring rung whose predicted size for `tokens` cached tokens is at most
// `byte_budget`; if none fits, the smallest rung with fits = false (a node then sends it or
// refuses, its choice). InvalidArgument for an empty ladder, tokens < 0 or a NaN budget.
absl::StatusOr<RungChoice> PickRungForBudget(const QualityLadder& ladder, int64_t tokens,
                                             double byte_budget);

// Rate control: the frame must cross a link of `link_bytes_per_second` within the time left of
// `ttft_target_seconds` once `other_seconds` (prefill, encode, decode-side rebuild and first
// step, as the node measures them) are spent: budget = (target - other) * rate bytes.
// InvalidArgument for a non-positive rate or non-finite times.
absl::StatusOr<RungChoice> PickRungForLink(const QualityLadder& ladder, int64_t tokens,
                                           double link_bytes_per_second,
                                           double ttft_target_seconds, double other_seconds = 0);

}  // namespace kvwire::eval
