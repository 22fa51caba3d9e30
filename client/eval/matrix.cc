#include "client/eval/matrix.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace kvwire::eval {
namespace {

// Debian's abseil has its own string_view type.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string_view Strip(std::string_view s) {
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

constexpr std::string_view kConfigKeys[] = {"select", "keep",   "budget", "heads", "pyramid",
                                            "window", "kernel", "pool",   "sinks", "recent",
                                            "seed",   "plan",   "delta",  "entropy", "chunk"};

absl::StatusOr<EvalConfig> Make(std::string name, std::string_view text, std::string row = {},
                                std::string column = {}) {
  auto codec = kvcodec::Preset(text);
  if (!codec.ok()) codec = kvcodec::CodecConfig::Parse(text);
  if (!codec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec \"", AV(text), "\" is neither a preset nor valid config text: ",
                     codec.status().message()));
  }
  EvalConfig c;
  c.codec = *codec;
  c.label.codec = codec->ToString();
  c.label.name = name.empty() ? c.label.codec : std::move(name);
  c.label.row = std::move(row);
  c.label.column = std::move(column);
  return c;
}

std::string Percent(double keep) { return absl::StrFormat("%d%%", static_cast<int>(std::lround(100 * keep))); }

struct Builder {
  std::vector<EvalConfig> configs;
  absl::Status status;
  void Add(std::string name, std::string text, std::string row = {}, std::string column = {}) {
    if (!status.ok()) return;
    auto c = Make(std::move(name), text, std::move(row), std::move(column));
    if (!c.ok()) {
      status = c.status();
      return;
    }
    configs.push_back(*std::move(c));
  }
};

// Selection methods of the seeds, as (label, config text prefix).
struct Method {
  const char* label;
  const char* text;
};
constexpr Method kSelectionMethods[] = {
    {"Q2C", "select=q2c"},
    {"SnapKV", "select=snapkv"},
    {"H2O", "select=h2o"},
    {"StreamingLLM", "select=streaming"},
    {"PyramidKV", "select=snapkv;pyramid=1"},
    // AdaKV's head-adaptive budgets on the two score-based rules.
    {"SnapKV-AdaKV", "select=snapkv;heads=adaptive"},
    {"Q2C-AdaKV", "select=q2c;heads=adaptive"},
    {"Anchor", "select=anchor"},
    {"Random", "select=random;seed=1"},
};

bool GroupsFit(const kvcodec::CodecConfig& config, const ModelShape& shape) {
  auto plan = kvcodec::BitPlan::Parse(config.bit_plan);
  if (!plan.ok() || shape.head_dim <= 0) return true;
  for (int l = 0; l < std::max(1, shape.num_layers); ++l) {
    for (bool v : {false, true}) {
      const kvcodec::QuantSpec q = plan->Resolve(l, v);
      if (q.axis == kvcodec::QuantAxis::kPerToken && q.group_size > 0 && shape.head_dim % q.group_size != 0) {
        return false;
      }
      if (q.coding == kvcodec::ValueCoding::kLowRank && q.rank >= shape.head_dim) return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<EvalConfig> ParseConfigSpec(std::string_view spec) {
  spec = Strip(spec);
  if (spec.empty()) return absl::InvalidArgumentError("empty codec spec");
  const size_t eq = spec.find('=');
  if (eq != std::string_view::npos && eq > 0) {
    const std::string_view head = spec.substr(0, eq);
    const bool is_key = std::find(std::begin(kConfigKeys), std::end(kConfigKeys), head) != std::end(kConfigKeys);
    if (!is_key && head.find(';') == std::string_view::npos) {
      const std::string_view codec = Strip(spec.substr(eq + 1));
      // "label=" would otherwise parse as the default (lossless) codec under that label.
      if (codec.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("config \"", std::string(Strip(head)), "\" has an empty codec"));
      }
      return Make(std::string(Strip(head)), codec);
    }
  }
  auto preset = kvcodec::Preset(spec);
  return Make(preset.ok() ? std::string(spec) : std::string(), spec);
}

absl::StatusOr<std::vector<EvalConfig>> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config file ", path));
  std::vector<EvalConfig> out;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const std::string_view s = Strip(line);
    if (s.empty() || s[0] == '#') continue;
    auto c = ParseConfigSpec(s);
    if (!c.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": ", c.status().message()));
    out.push_back(*std::move(c));
  }
  return out;
}

std::vector<std::string> MatrixNames() {
  return {"selection", "budgets", "quant", "layers", "delta", "svd", "pipelines", "bits", "scout", "presets"};
}

absl::StatusOr<std::vector<EvalConfig>> NamedMatrix(std::string_view name, const ModelShape& shape) {
  Builder b;
  b.Add("full", "plan=*:raw");
  if (name == "selection") {
    for (const Method& m : kSelectionMethods) {
      // 10%: where the methods part on needle tasks (at 25% the good ones keep every answer).
      for (double keep : {0.1, 0.25, 0.5, 0.75}) {
        b.Add(absl::StrCat(absl::AsciiStrToLower(m.label), "-", Percent(keep).substr(0, 2)),
              absl::StrCat(m.text, ";keep=", keep), m.label, Percent(keep));
      }
    }
  } else if (name == "budgets") {
    for (const Method& m : kSelectionMethods) {
      const std::string_view label = m.label;
      if (label == "Anchor" || label == "Random") continue;
      for (int budget : {64, 128, 256, 512, 1024, 2048}) {
        b.Add(absl::StrCat(absl::AsciiStrToLower(m.label), "-b", budget),
              absl::StrCat(m.text, ";budget=", budget), m.label, absl::StrCat(budget));
      }
    }
  } else if (name == "quant") {
    struct Axis {
      const char* column;
      const char* option;
    };
    constexpr Axis kAxes[] = {{"per-token", ""},          {"per-token g32", "/g32"},
                              {"per-token g64", "/g64"},  {"per-channel", "/channel"},
                              {"per-channel g64", "/channel/g64"}};
    for (const char* bits : {"int8", "int4", "int3", "int2"}) {
      for (const Axis& a : kAxes) {
        // Per-token groups split a head's channels; skip sizes the head does not divide into.
        const std::string_view option = a.option;
        if (option == "/g32" && shape.head_dim % 32 != 0) continue;
        if (option == "/g64" && shape.head_dim % 64 != 0) continue;
        b.Add(absl::StrCat(bits, absl::StrReplaceAll(a.option, {{"/", "-"}})),
              absl::StrCat("plan=*:", bits, a.option), absl::AsciiStrToUpper(bits), a.column);
      }
      // KIVI's split (keys per channel, values per token, groups of 32), as the int4-kivi preset.
      if (shape.head_dim % 32 == 0) {
        b.Add(absl::StrCat(bits, "-kivi"),
              absl::StrCat("plan=*k:", bits, "/channel/g32,*v:", bits, "/token/g32"),
              absl::AsciiStrToUpper(bits), "KIVI (K channel, V token, g32)");
      }
    }
    b.Add("mixed-int4", "plan=*:int4,0:raw", "Mixed (layer 0 raw)", "per-token");
  } else if (name == "layers" || name == "layers:int4" || name == "layers:int2") {
    if (shape.num_layers <= 0) return absl::InvalidArgumentError("the layers matrix needs the model's layer count");
    const std::string bits = name == "layers:int2" ? "int2" : "int4";
    const std::string spec = bits == "int2" && shape.head_dim % 32 == 0 ? "int2/g32" : bits;
    b.Add(absl::StrCat("all-", bits), absl::StrCat("plan=*:", spec));
    for (int l = 0; l < shape.num_layers; ++l) {
      b.Add(absl::StrCat(bits, "-only-L", l), absl::StrCat("plan=*:raw,", l, ":", spec),
            absl::StrCat(absl::AsciiStrToUpper(bits), " only this layer"), absl::StrCat("L", l));
      b.Add(absl::StrCat("fp16-keep-L", l), absl::StrCat("plan=*:", spec, ",", l, ":raw"),
            absl::StrCat("Raw this layer, rest ", absl::AsciiStrToUpper(bits)), absl::StrCat("L", l));
    }
  } else if (name == "delta") {
    struct Delta {
      const char* row;
      const char* text;
    };
    constexpr Delta kDeltas[] = {{"Direct", "none"},
                                 {"Sequential", "seq"},
                                 {"Grouped (10)", "gseq/10"},
                                 {"Anchor (10)", "anchor/10"},
                                 {"Sequential, open loop", "seq/open"},
                                 {"Anchor (10), open loop", "anchor/10/open"}};
    for (const Delta& d : kDeltas) {
      for (const char* bits : {"int4", "int2"}) {
        b.Add(absl::StrCat("delta-", absl::StrReplaceAll(d.text, {{"/", "-"}}), "-", bits),
              absl::StrCat("plan=*:", bits, ";delta=", d.text, ";entropy=rans"), d.row,
              absl::AsciiStrToUpper(bits));
      }
    }
  } else if (name == "svd") {
    for (int rank : {4, 8, 16, 32, 64}) {
      if (shape.head_dim > 0 && rank >= shape.head_dim) continue;
      b.Add(absl::StrCat("svd", rank), absl::StrCat("plan=*:svd", rank), "SVD", absl::StrCat("rank ", rank));
    }
  } else if (name == "pipelines") {
    struct Plan {
      const char* label;
      const char* text;
    };
    constexpr Plan kPlans[] = {{"INT8", "*:int8"}, {"INT4", "*:int4"}, {"Mixed INT4", "*:int4,0:raw"}};
    for (const char* method : {"snapkv", "q2c"}) {
      for (const Plan& p : kPlans) {
        for (double keep : {0.25, 0.5, 0.75, 1.0}) {
          const std::string select = keep < 1 ? absl::StrCat("select=", method, ";keep=", keep, ";") : "";
          if (keep == 1.0 && std::string_view(method) != "snapkv") continue;  // same as snapkv's
          const std::string row = keep < 1 ? absl::StrCat(method == std::string_view("q2c") ? "Q2C" : "SnapKV", " + ", p.label)
                                           : absl::StrCat("No selection + ", p.label);
          b.Add(absl::StrCat(keep < 1 ? absl::StrCat(method, Percent(keep).substr(0, 2), "-") : "",
                             absl::StrReplaceAll(absl::AsciiStrToLower(p.label), {{" ", "-"}})),
                absl::StrCat(select, "plan=", p.text, ";entropy=rans"), row, Percent(keep));
        }
      }
    }
  } else if (name == "bits") {
    b.Add("int8", "plan=*:int8");
    b.Add("int4", "plan=*:int4");
    b.Add("int3", "plan=*:int3");
    b.Add("int2", "plan=*:int2");
  } else if (name == "scout") {
    for (const char* method : {"q2c", "snapkv"}) {
      const std::string label = std::string_view(method) == "q2c" ? "Q2C" : "SnapKV";
      for (double keep : {0.25, 0.5, 0.75}) {
        const std::string text = absl::StrCat("select=", method, ";keep=", keep);
        const std::string base = absl::StrCat(method, Percent(keep).substr(0, 2));
        b.Add(base, text, absl::StrCat(label, " own (per layer)"), Percent(keep));
        b.Add(base + "-global", text, absl::StrCat(label, " own (global)"), Percent(keep));
        if (b.status.ok()) b.configs.back().source = SelectionSource::kGlobal;
        b.Add(base + "-scout", text, absl::StrCat(label, " from the scout"), Percent(keep));
        if (b.status.ok()) b.configs.back().source = SelectionSource::kScout;
      }
    }
  } else if (name == "presets") {
    for (const std::string& p : kvcodec::PresetNames()) {
      if (p == "full") continue;
      b.Add(p, p);
      // Presets whose per-token groups do not divide this model's heads cannot encode it.
      if (b.status.ok() && !GroupsFit(b.configs.back().codec, shape)) b.configs.pop_back();
    }
  } else {
    return absl::NotFoundError(absl::StrCat("unknown matrix \"", AV(name), "\" (one of ",
                                            absl::StrJoin(MatrixNames(), ", "), ")"));
  }
  if (!b.status.ok()) return b.status;
  return b.configs;
}

bool IsLossless(const kvcodec::CodecConfig& config, int num_layers) {
  if (config.selection.method != kvcodec::SelectionMethod::kKeepAll) return false;
  if (config.delta.mode != kvcodec::DeltaMode::kNone) return false;
  auto plan = kvcodec::BitPlan::Parse(config.bit_plan);
  if (!plan.ok()) return false;
  for (int l = 0; l < num_layers; ++l) {
    for (bool v : {false, true}) {
      if (plan->Resolve(l, v).coding != kvcodec::ValueCoding::kRaw) return false;
    }
  }
  return true;
}

absl::StatusOr<LayerSensitivity> AnalyzeLayers(const EvalSummary& summary, int num_layers,
                                               Quality quality) {
  auto find = [&](const std::string& name) -> const ConfigSummary* {
    for (const ConfigSummary& c : summary.configs) {
      if (c.label.name == name && c.examples > 0) return &c;
    }
    return nullptr;
  };
  LayerSensitivity s;
  for (const char* bits : {"int4", "int2"}) {
    if (find(absl::StrCat("all-", bits))) s.bits = bits;
  }
  const ConfigSummary* full = find("full");
  const ConfigSummary* all = s.bits.empty() ? nullptr : find(absl::StrCat("all-", s.bits));
  if (!full || !all) {
    return absl::FailedPreconditionError("layer sensitivity needs the \"layers\" matrix (full and all-int4 results)");
  }
  auto q = [&](const ConfigSummary* c) { return QualityValue(*c, quality); };
  if (!std::isfinite(q(full)) || !std::isfinite(q(all))) {
    return absl::FailedPreconditionError(
        absl::StrCat("quality \"", AV(QualityName(quality)), "\" was not measured in this run"));
  }
  s.total_loss = q(full) - q(all);
  for (int l = 0; l < num_layers; ++l) {
    const ConfigSummary* alone = find(absl::StrCat(s.bits, "-only-L", l));
    const ConfigSummary* keep = find(absl::StrCat("fp16-keep-L", l));
    if (!alone || !keep) {
      return absl::FailedPreconditionError(absl::StrCat("layer ", l, " of the layers matrix has no results"));
    }
    s.loss_alone.push_back(q(full) - q(alone));
    s.recovery.push_back(q(keep) - q(all));
  }
  if (s.total_loss > 0) {
    std::vector<int> order(num_layers);
    std::iota(order.begin(), order.end(), 0);
    auto weight = [&](int l) { return std::max(s.loss_alone[l], s.recovery[l]); };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return weight(a) > weight(b); });
    const size_t cap = std::max<size_t>(1, static_cast<size_t>(std::ceil(num_layers / 4.0)));
    for (int l : order) {
      if (s.bottlenecks.size() >= cap || weight(l) < 0.25 * s.total_loss) break;
      s.bottlenecks.push_back(l);
    }
    if (s.bottlenecks.empty()) s.bottlenecks.push_back(order[0]);
    std::sort(s.bottlenecks.begin(), s.bottlenecks.end());
  }
  // The sweep's own all-layers plan (e.g. "*:int2/g32"), with the bottlenecks raw.
  auto base = kvcodec::CodecConfig::Parse(all->label.codec);
  s.proposed_plan = base.ok() ? base->bit_plan : absl::StrCat("*:", s.bits);
  for (int l : s.bottlenecks) absl::StrAppend(&s.proposed_plan, ",", l, ":raw");
  return s;
}

std::string LayerSensitivityTable(const LayerSensitivity& s) {
  const std::string bits = absl::AsciiStrToUpper(s.bits);
  std::string out = absl::StrFormat(
      "| Layer | Loss with only this layer at %s | Recovery keeping only this layer raw |\n|---|---|---|\n",
      bits);
  for (size_t l = 0; l < s.loss_alone.size(); ++l) {
    const bool b = std::find(s.bottlenecks.begin(), s.bottlenecks.end(), static_cast<int>(l)) != s.bottlenecks.end();
    out += absl::StrFormat("| %s%d%s | %.4g | %.4g |\n", b ? "**" : "", l, b ? "**" : "", s.loss_alone[l],
                           s.recovery[l]);
  }
  out += absl::StrFormat("\nTotal loss with every layer at %s: %.4g\n", bits, s.total_loss);
  out += absl::StrCat("Bottleneck layers: ",
                      s.bottlenecks.empty() ? "none" : absl::StrJoin(s.bottlenecks, ", "), "\n");
  out += absl::StrCat("Proposed bit plan: `", s.proposed_plan, "`\n");
  return out;
}

}  // namespace kvwire::eval
