#include "client/eval/ladder.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvwire::eval {
namespace {

using json = nlohmann::json;

absl::StatusOr<double> GetNumber(const json& j, const char* key, bool required = true) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (!required) return 0.0;
    return absl::InvalidArgumentError(absl::StrCat("ladder: missing \"", key, "\""));
  }
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat("ladder: \"", key, "\" must be a number"));
  }
  return it->get<double>();
}

absl::StatusOr<std::string> GetString(const json& j, const char* key, bool required = true) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (!required) return std::string();
    return absl::InvalidArgumentError(absl::StrCat("ladder: missing \"", key, "\""));
  }
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("ladder: \"", key, "\" must be a string"));
  }
  return it->get<std::string>();
}

}  // namespace

std::vector<size_t> ParetoFront(std::span<const double> cost, std::span<const double> quality) {
  std::vector<size_t> order;
  for (size_t i = 0; i < cost.size() && i < quality.size(); ++i) {
    if (!std::isnan(cost[i]) && !std::isnan(quality[i])) order.push_back(i);
  }
  // Ascending cost, then descending quality, then input order: a sweep keeps every point that
  // beats the best quality seen so far at a strictly lower cost or equal cost.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (cost[a] != cost[b]) return cost[a] < cost[b];
    return quality[a] > quality[b];
  });
  std::vector<size_t> front;
  for (size_t i : order) {
    if (front.empty() || quality[i] > quality[front.back()]) front.push_back(i);
  }
  return front;
}

std::vector<LadderRung> BuildLadderRungs(std::vector<LadderRung> candidates,
                                         double min_relative_score) {
  std::erase_if(candidates, [&](const LadderRung& r) { return r.relative_score < min_relative_score; });
  std::vector<double> cost, quality;
  for (const LadderRung& r : candidates) {
    cost.push_back(r.bytes_per_token);
    quality.push_back(r.score);
  }
  std::vector<LadderRung> rungs;
  for (size_t i : ParetoFront(cost, quality)) rungs.push_back(candidates[i]);
  return rungs;
}

std::string LadderToJson(const QualityLadder& ladder) {
  json rungs = json::array();
  for (const LadderRung& r : ladder.rungs) {
    rungs.push_back({{"name", r.name},
                     {"codec", r.codec},
                     {"score", r.score},
                     {"relative_score", r.relative_score},
                     {"bytes_per_token", r.bytes_per_token},
                     {"fixed_bytes", r.fixed_bytes},
                     {"bits_per_element", r.bits_per_element}});
  }
  json j = {{"version", ladder.version},
            {"model_fingerprint", ladder.model_fingerprint},
            {"quality_metric", ladder.quality_metric},
            {"reference_score", ladder.reference_score},
            {"source", ladder.source},
            {"rungs", rungs}};
  return j.dump(2) + "\n";
}

absl::StatusOr<QualityLadder> ParseLadder(std::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("ladder: not a JSON object");
  }
  QualityLadder ladder;
  auto version = GetNumber(j, "version");
  if (!version.ok()) return version.status();
  if (*version != 1) {
    return absl::InvalidArgumentError(absl::StrCat("ladder: unknown version ", *version));
  }
  auto fp = GetString(j, "model_fingerprint", false);
  auto metric = GetString(j, "quality_metric");
  auto source = GetString(j, "source", false);
  auto reference = GetNumber(j, "reference_score", false);
  for (const absl::Status& s : {fp.status(), metric.status(), source.status(), reference.status()}) {
    if (!s.ok()) return s;
  }
  ladder.model_fingerprint = *fp;
  ladder.quality_metric = *metric;
  ladder.source = *source;
  ladder.reference_score = *reference;
  auto rungs = j.find("rungs");
  if (rungs == j.end() || !rungs->is_array() || rungs->empty()) {
    return absl::InvalidArgumentError("ladder: \"rungs\" must be a non-empty array");
  }
  for (const json& r : *rungs) {
    if (!r.is_object()) return absl::InvalidArgumentError("ladder: a rung is not an object");
    LadderRung rung;
    auto name = GetString(r, "name");
    auto codec = GetString(r, "codec");
    auto score = GetNumber(r, "score");
    auto rel = GetNumber(r, "relative_score", false);
    auto bpt = GetNumber(r, "bytes_per_token");
    auto fixed = GetNumber(r, "fixed_bytes", false);
    auto bits = GetNumber(r, "bits_per_element", false);
    for (const absl::Status& s : {name.status(), codec.status(), score.status(), rel.status(),
                                  bpt.status(), fixed.status(), bits.status()}) {
      if (!s.ok()) return s;
    }
    rung = {*name, *codec, *score, *rel, *bpt, *fixed, *bits};
    if (!std::isfinite(rung.bytes_per_token) || rung.bytes_per_token < 0 ||
        !std::isfinite(rung.fixed_bytes) || rung.fixed_bytes < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("ladder: rung \"", rung.name, "\" has a negative or non-finite size"));
    }
    if (!ladder.rungs.empty() && rung.bytes_per_token < ladder.rungs.back().bytes_per_token) {
      return absl::InvalidArgumentError("ladder: rungs must be in ascending bytes_per_token order");
    }
    ladder.rungs.push_back(std::move(rung));
  }
  return ladder;
}

absl::StatusOr<QualityLadder> LoadLadderFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ladder file ", path));
  std::ostringstream text;
  text << in.rdbuf();
  auto ladder = ParseLadder(text.str());
  if (!ladder.ok()) {
    return absl::Status(ladder.status().code(), absl::StrCat(path, ": ", ladder.status().message()));
  }
  return ladder;
}

absl::StatusOr<RungChoice> PickRungForBudget(const QualityLadder& ladder, int64_t tokens,
                                             double byte_budget) {
  if (ladder.rungs.empty()) return absl::InvalidArgumentError("empty quality ladder");
  if (tokens < 0) return absl::InvalidArgumentError("token count must be >= 0");
  if (std::isnan(byte_budget)) return absl::InvalidArgumentError("byte budget is NaN");
  auto predicted = [&](const LadderRung& r) {
    return r.fixed_bytes + r.bytes_per_token * static_cast<double>(tokens);
  };
  std::optional<size_t> best;
  size_t smallest = 0;
  for (size_t i = 0; i < ladder.rungs.size(); ++i) {
    const LadderRung& r = ladder.rungs[i];
    if (predicted(r) < predicted(ladder.rungs[smallest])) smallest = i;
    if (predicted(r) <= byte_budget && (!best || r.score > ladder.rungs[*best].score)) best = i;
  }
  RungChoice choice;
  choice.fits = best.has_value();
  choice.index = best.value_or(smallest);
  choice.predicted_bytes = predicted(ladder.rungs[choice.index]);
  return choice;
}

absl::StatusOr<RungChoice> PickRungForLink(const QualityLadder& ladder, int64_t tokens,
                                           double link_bytes_per_second,
                                           double ttft_target_seconds, double other_seconds) {
  if (!(link_bytes_per_second > 0) || std::isinf(link_bytes_per_second)) {
    return absl::InvalidArgumentError("link rate must be a positive, finite number of bytes/s");
  }
  if (!std::isfinite(ttft_target_seconds) || !std::isfinite(other_seconds)) {
    return absl::InvalidArgumentError("time-to-first-token target and other time must be finite");
  }
  const double budget = (ttft_target_seconds - other_seconds) * link_bytes_per_second;
  return PickRungForBudget(ladder, tokens, budget);
}

}  // namespace kvwire::eval
