#include "client/calibrate_cmd.h"

#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace kvwire::cli {
namespace {

using json = nlohmann::json;

// Frame bytes = fixed + per_token * tokens: the fixed part is the frame's header and trailer;
// the rest scales with the cached tokens.
eval::LadderRung Rung(const std::string& name, const std::string& codec, double score, double reference,
                      double bytes_per_request, double bytes_per_token, double fixed_bytes, double bits) {
  eval::LadderRung r;
  r.name = name;
  r.codec = codec;
  r.score = score;
  r.relative_score = reference > 0 ? score / reference : std::nan("");
  const double tokens = bytes_per_token > 0 ? bytes_per_request / bytes_per_token : 0;
  const double fixed = std::isfinite(fixed_bytes) ? std::min(fixed_bytes, bytes_per_request) : 0;
  r.fixed_bytes = fixed;
  r.bytes_per_token = tokens > 0 ? (bytes_per_request - fixed) / tokens : bytes_per_token;
  r.bits_per_element = bits;
  return r;
}

double NumberOr(const json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

std::string FormatLadder(const eval::QualityLadder& ladder) {
  std::string out = absl::StrFormat("%-32s %10s %9s %12s %10s %8s  %s\n", "rung", ladder.quality_metric,
                                    "relative", "bytes/token", "fixed", "bits/el", "codec");
  for (const eval::LadderRung& r : ladder.rungs) {
    out += absl::StrFormat("%-32s %10.4f %8.1f%% %12.2f %10.0f %8.3f  %s\n", r.name.substr(0, 32), r.score,
                           100 * r.relative_score, r.bytes_per_token, r.fixed_bytes, r.bits_per_element, r.codec);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<eval::LadderRung>> LadderCandidates(const eval::EvalSummary& summary,
                                                               double* reference_score) {
  if (summary.quality == eval::Quality::kKl) {
    return absl::InvalidArgumentError("a ladder ranks by task_score or agreement, not kl");
  }
  double reference = std::nan("");
  for (const eval::ConfigSummary& c : summary.configs) {
    if (c.label.name == summary.reference) reference = eval::QualityValue(c, summary.quality);
  }
  std::vector<eval::LadderRung> out;
  for (const eval::ConfigSummary& c : summary.configs) {
    const double q = eval::QualityValue(c, summary.quality);
    if (c.examples == 0 || !std::isfinite(q) || !std::isfinite(c.bytes_per_request)) continue;
    out.push_back(Rung(c.label.name, c.label.codec, q, reference, c.bytes_per_request, c.bytes_per_token,
                       c.fixed_bytes, c.bits_per_element));
  }
  if (reference_score) *reference_score = reference;
  return out;
}

absl::StatusOr<std::vector<eval::LadderRung>> LadderCandidatesFromJson(const std::string& text,
                                                                       std::string* fingerprint,
                                                                       std::string* quality,
                                                                       double* reference_score) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("configs") || !j["configs"].is_array()) {
    return absl::InvalidArgumentError("not a kvwire eval summary (no \"configs\" array)");
  }
  *fingerprint = j.value("model_fingerprint", "");
  *quality = j.value("quality", "");
  if (*quality != "task_score" && *quality != "agreement") {
    return absl::InvalidArgumentError(absl::StrCat("a ladder ranks by task_score or agreement, the summary has \"",
                                                   *quality, "\" (rerun eval with --quality)"));
  }
  const std::string key = *quality == "task_score" ? "score" : "agreement";
  const std::string reference = j.value("reference", "");
  double ref = std::nan("");
  for (const json& c : j["configs"]) {
    if (c.value("config", "") == reference) ref = NumberOr(c, key.c_str(), std::nan(""));
  }
  std::vector<eval::LadderRung> out;
  for (const json& c : j["configs"]) {
    const double q = NumberOr(c, key.c_str(), std::nan(""));
    const double bytes = NumberOr(c, "bytes_per_request", std::nan(""));
    if (NumberOr(c, "examples", 0) <= 0 || !std::isfinite(q) || !std::isfinite(bytes)) continue;
    out.push_back(Rung(c.value("config", ""), c.value("codec", ""), q, ref, bytes,
                       NumberOr(c, "bytes_per_token", 0), NumberOr(c, "fixed_bytes", 0),
                       NumberOr(c, "bits_per_element", std::nan(""))));
  }
  *reference_score = ref;
  return out;
}

CLI::App* AddCalibrateCommand(CLI::App& app, CalibrateOptions& o) {
  auto* cmd = app.add_subcommand(
      "calibrate",
      "Write a model's quality ladder (the codec configurations on the Pareto front of quality against bytes "
      "per token), from eval summaries (--from) or by running a layer-sensitivity sweep and a pipeline matrix");
  CLI::Option* model = AddEvalOptions(cmd, o.eval);
  auto* from = cmd->add_option("--from", o.from, "Eval JSON summaries (PREFIX.json) to build the ladder from (repeatable)")
                   ->check(CLI::ExistingFile);
  from->excludes(model);
  cmd->add_option("--ladder", o.ladder_path, "Where to write the ladder JSON")->required();
  cmd->add_option("--min-relative", o.min_relative, "Leave out rungs below this fraction of the full cache's quality")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("!--no-sensitivity", o.sensitivity, "Run mode: skip the layer-sensitivity sweep");
  return cmd;
}

int RunCalibrate(const CalibrateOptions& o) {
  eval::QualityLadder ladder;
  std::vector<eval::LadderRung> candidates;
  if (!o.from.empty()) {
    for (const std::string& path : o.from) {
      std::ifstream in(path, std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      std::string fingerprint, quality;
      double reference = 0;
      auto c = LadderCandidatesFromJson(text.str(), &fingerprint, &quality, &reference);
      if (!c.ok()) {
        std::cerr << "kvwire calibrate: " << path << ": " << c.status().message() << "\n";
        return 1;
      }
      if (!ladder.model_fingerprint.empty() &&
          (fingerprint != ladder.model_fingerprint || quality != ladder.quality_metric)) {
        std::cerr << "kvwire calibrate: " << path << " was measured on another model or by another quality ("
                  << fingerprint << ", " << quality << ")\n";
        return 1;
      }
      ladder.model_fingerprint = fingerprint;
      ladder.quality_metric = quality;
      ladder.reference_score = reference;
      ladder.source = ladder.source.empty() ? path : ladder.source + "," + path;
      candidates.insert(candidates.end(), c->begin(), c->end());
    }
  } else {
    if (o.eval.model_dir.empty()) {
      std::cerr << "kvwire calibrate: give --model (with --tasks or --text) or --from\n";
      return 2;
    }
    EvalOptions base = o.eval;
    base.json = false;
    // Refuse bad options before the sweep, which can take hours on a real model.
    absl::Status valid = ValidateEvalOptions(base);
    if (valid.ok() && !base.quality.empty() && *eval::ParseQuality(base.quality) == eval::Quality::kKl) {
      valid = absl::InvalidArgumentError("a ladder ranks by task_score or agreement, not kl");
    }
    if (!valid.ok()) {
      std::cerr << "kvwire calibrate: " << valid.message() << "\n";
      return 2;
    }
    std::vector<std::string> proposed_plans;
    if (o.sensitivity) {
      EvalOptions sweep = base;
      sweep.configs.clear();
      sweep.configs_file.clear();
      sweep.matrices = {"layers"};
      sweep.quality.clear();
      if (!base.out_prefix.empty()) sweep.out_prefix = base.out_prefix + "-layers";
      auto run = RunEvalJob(sweep);
      if (!run.ok()) {
        std::cerr << "kvwire calibrate: layer sweep: " << run.status().message() << "\n";
        return 1;
      }
      const json extra = json::parse(run->extra_json);
      if (extra.contains("layer_sensitivity")) {
        const std::string plan = extra["layer_sensitivity"]["proposed_plan"].get<std::string>();
        std::cerr << "kvwire calibrate: layer sweep proposes plan " << plan << "\n";
        proposed_plans.push_back(plan);
      }
    }
    EvalOptions matrix = base;
    if (matrix.matrices.empty() && matrix.configs.empty() && matrix.configs_file.empty()) {
      matrix.matrices = {"pipelines", "bits"};
    }
    for (const std::string& plan : proposed_plans) {
      matrix.configs.push_back(absl::StrCat("proposed=plan=", plan, ";entropy=rans"));
      matrix.configs.push_back(absl::StrCat("snapkv50-proposed=select=snapkv;keep=0.5;plan=", plan, ";entropy=rans"));
      matrix.configs.push_back(absl::StrCat("snapkv25-proposed=select=snapkv;keep=0.25;plan=", plan, ";entropy=rans"));
    }
    if (!base.out_prefix.empty()) matrix.out_prefix = base.out_prefix + "-matrix";
    auto run = RunEvalJob(matrix);
    if (!run.ok()) {
      std::cerr << "kvwire calibrate: " << run.status().message() << "\n";
      return 1;
    }
    double reference = 0;
    auto c = LadderCandidates(run->summary, &reference);
    if (!c.ok()) {
      std::cerr << "kvwire calibrate: " << c.status().message() << "\n";
      return 2;
    }
    candidates = *std::move(c);
    ladder.model_fingerprint = run->model_fingerprint;
    ladder.quality_metric = std::string(eval::QualityName(run->summary.quality));
    ladder.reference_score = reference;
    ladder.source = run->source;
  }
  ladder.rungs = eval::BuildLadderRungs(std::move(candidates), o.min_relative);
  if (ladder.rungs.empty()) {
    std::cerr << "kvwire calibrate: no configuration qualifies for the ladder\n";
    return 1;
  }
  std::ofstream out(o.ladder_path, std::ios::binary | std::ios::trunc);
  out << eval::LadderToJson(ladder);
  out.close();  // a full disk shows only when the buffer is written out
  if (!out) {
    std::cerr << "kvwire calibrate: cannot write " << o.ladder_path << "\n";
    return 1;
  }
  std::cout << FormatLadder(ladder);
  std::cerr << "kvwire calibrate: wrote " << ladder.rungs.size() << " rungs to " << o.ladder_path << "\n";
  return 0;
}

}  // namespace kvwire::cli
