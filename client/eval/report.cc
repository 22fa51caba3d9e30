#include "client/eval/report.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/eval/ladder.h"
#include "nlohmann/json.hpp"

namespace kvwire::eval {
namespace {

using json = nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Mean over the finite entries; NaN if none.
struct Mean {
  double sum = 0;
  int64_t n = 0;
  void Add(double x) {
    if (std::isfinite(x)) {
      sum += x;
      ++n;
    }
  }
  double value() const { return n ? sum / static_cast<double>(n) : kNaN; }
};

std::vector<double> LayerMeans(const std::vector<std::vector<double>>& rows) {
  std::vector<Mean> means;
  for (const auto& row : rows) {
    if (row.size() > means.size()) means.resize(row.size());
    for (size_t l = 0; l < row.size(); ++l) means[l].Add(row[l]);
  }
  std::vector<double> out;
  for (const Mean& m : means) out.push_back(m.value());
  return out;
}

double MeanOf(const std::vector<double>& xs) {
  Mean m;
  for (double x : xs) m.Add(x);
  return m.value();
}

json Num(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

std::string F(double x, int decimals) {
  if (!std::isfinite(x)) return "-";
  return absl::StrFormat("%.*f", decimals, x);
}

std::string G(double x) {
  if (!std::isfinite(x)) return "-";
  return absl::StrFormat("%.3g", x);
}

std::string HumanBytes(double b) {
  if (!std::isfinite(b)) return "-";
  if (b >= 1e9) return absl::StrFormat("%.2fG", b / 1e9);
  if (b >= 1e6) return absl::StrFormat("%.2fM", b / 1e6);
  if (b >= 1e4) return absl::StrFormat("%.1fk", b / 1e3);
  return absl::StrFormat("%.0f", b);
}

std::string Csv(std::string_view s) {
  if (s.find_first_of(",\"\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string Join(const std::vector<double>& xs) {
  std::vector<std::string> parts;
  for (double x : xs) parts.push_back(std::isfinite(x) ? absl::StrFormat("%.6g", x) : "");
  return absl::StrJoin(parts, ";");
}

bool HasScores(const EvalSummary& s) {
  for (const ConfigSummary& c : s.configs) {
    if (std::isfinite(c.score)) return true;
  }
  return false;
}

}  // namespace

std::string_view QualityName(Quality q) {
  switch (q) {
    case Quality::kTaskScore: return "task_score";
    case Quality::kAgreement: return "agreement";
    case Quality::kKl: return "kl";
  }
  return "?";
}

absl::StatusOr<Quality> ParseQuality(std::string_view name) {
  for (Quality q : {Quality::kTaskScore, Quality::kAgreement, Quality::kKl}) {
    if (QualityName(q) == name) return q;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown quality \"", std::string(name), "\" (task_score, agreement or kl)"));
}

double QualityValue(const ConfigSummary& s, Quality q) {
  switch (q) {
    case Quality::kTaskScore: return s.score;
    case Quality::kAgreement: return s.fidelity.agreement();
    case Quality::kKl: return -s.fidelity.mean_kl();
  }
  return kNaN;
}

EvalSummary Summarize(const std::vector<EvalRecord>& records, const std::vector<ConfigLabel>& order,
                      const std::string& reference, Quality quality) {
  EvalSummary summary;
  summary.reference = reference;
  summary.quality = quality;
  std::map<std::string, std::vector<const EvalRecord*>> by_config;
  for (const EvalRecord& r : records) by_config[r.config].push_back(&r);
  for (const ConfigLabel& label : order) {
    ConfigSummary s;
    s.label = label;
    const auto& rs = by_config[label.name];
    s.examples = static_cast<int64_t>(rs.size());
    Mean score, enc, dec, gen, overlap;
    double bytes = 0, raw = 0, fixed = 0, tokens = 0, elements = 0, kept = 0;
    std::vector<double> scores;
    std::vector<std::vector<double>> ke, ve, ae;
    for (const EvalRecord* r : rs) {
      if (r->score) {
        score.Add(*r->score);
        if (std::isfinite(*r->score)) scores.push_back(*r->score);
      }
      overlap.Add(r->selection_overlap);
      enc.Add(r->encode_seconds);
      dec.Add(r->decode_seconds);
      gen.Add(r->generate_seconds);
      bytes += static_cast<double>(r->frame_bytes);
      raw += static_cast<double>(r->raw_bytes);
      fixed += static_cast<double>(r->header_bytes);
      tokens += static_cast<double>(r->cached_tokens);
      elements += static_cast<double>(r->elements);
      kept += static_cast<double>(r->kept_elements);
      s.fidelity.Merge(r->fidelity);
      ke.push_back(r->key_error);
      ve.push_back(r->value_error);
      ae.push_back(r->attention_error);
    }
    const double n = static_cast<double>(rs.size());
    s.score = score.value();
    s.score_stderr = kNaN;
    if (scores.size() >= 2) {
      double var = 0;
      for (double x : scores) var += (x - s.score) * (x - s.score);
      var /= static_cast<double>(scores.size() - 1);
      s.score_stderr = std::sqrt(var / static_cast<double>(scores.size()));
    }
    s.bytes_per_request = n ? bytes / n : kNaN;
    s.bytes_per_token = tokens ? bytes / tokens : kNaN;
    s.fixed_bytes = n ? fixed / n : kNaN;
    s.bits_per_element = elements ? 8 * bytes / elements : kNaN;
    s.bandwidth_fraction = raw ? bytes / raw : kNaN;
    s.kept_fraction = elements ? kept / elements : kNaN;
    s.selection_overlap = overlap.value();
    s.encode_seconds = enc.value();
    s.decode_seconds = dec.value();
    s.generate_seconds = gen.value();
    s.seconds_per_request = s.encode_seconds + s.decode_seconds + s.generate_seconds;
    s.key_error_by_layer = LayerMeans(ke);
    s.value_error_by_layer = LayerMeans(ve);
    s.attention_error_by_layer = LayerMeans(ae);
    s.key_error = MeanOf(s.key_error_by_layer);
    s.value_error = MeanOf(s.value_error_by_layer);
    s.attention_error = MeanOf(s.attention_error_by_layer);
    summary.configs.push_back(std::move(s));
  }
  double ref_score = kNaN;
  for (const ConfigSummary& s : summary.configs) {
    if (s.label.name == reference) ref_score = s.score;
  }
  for (ConfigSummary& s : summary.configs) {
    s.relative_score = ref_score > 0 ? s.score / ref_score : kNaN;
  }
  std::vector<double> cost, value;
  for (const ConfigSummary& s : summary.configs) {
    cost.push_back(s.examples ? s.bytes_per_request : kNaN);
    value.push_back(QualityValue(s, quality));
  }
  for (size_t i : ParetoFront(cost, value)) summary.configs[i].pareto = true;
  return summary;
}

PairedDelta PairedScoreDelta(const std::vector<EvalRecord>& records, std::string_view config,
                             std::string_view reference) {
  std::map<std::string, double> ref;
  for (const EvalRecord& r : records) {
    if (r.config == reference && r.score) ref[r.example_id] = *r.score;
  }
  std::vector<double> d;
  for (const EvalRecord& r : records) {
    if (r.config != config || !r.score) continue;
    auto it = ref.find(r.example_id);
    if (it != ref.end()) d.push_back(*r.score - it->second);
  }
  PairedDelta out;
  out.examples = static_cast<int64_t>(d.size());
  if (d.empty()) return out;
  for (double x : d) out.mean += x;
  out.mean /= static_cast<double>(d.size());
  if (d.size() >= 2) {
    double var = 0;
    for (double x : d) var += (x - out.mean) * (x - out.mean);
    var /= static_cast<double>(d.size() - 1);
    out.stderr_ = std::sqrt(var / static_cast<double>(d.size()));
  }
  return out;
}

bool BeatsBeyondNoise(const PairedDelta& d, double z, double margin) {
  return d.examples > 0 && d.mean > z * d.stderr_ + margin;
}

static bool HasOverlap(const EvalSummary& s) {
  for (const ConfigSummary& c : s.configs) {
    if (std::isfinite(c.selection_overlap)) return true;
  }
  return false;
}

std::string FormatTable(const EvalSummary& summary) {
  const bool scores = HasScores(summary);
  const bool overlap = HasOverlap(summary);
  size_t width = 6;
  for (const ConfigSummary& c : summary.configs) width = std::max(width, c.label.name.size());
  width = std::min<size_t>(width, 40);
  std::string out = absl::StrFormat("%-*s %5s", width + 2, "config", "n");
  if (scores) out += absl::StrFormat(" %7s %7s", "score", "%full");
  out += absl::StrFormat(" %7s %8s %9s %8s %9s %8s %7s %7s %8s%s\n", "agree", "KL", "ppl", "attn.err",
                         "bytes/req", "bits/el", "bw%", "kept%", "s/req", overlap ? "  overlap" : "");
  for (const ConfigSummary& c : summary.configs) {
    std::string name = c.label.name.size() > width ? c.label.name.substr(0, width - 1) + "~" : c.label.name;
    out += absl::StrFormat("%s %-*s %5d", c.pareto ? "*" : " ", width, name, c.examples);
    if (scores) out += absl::StrFormat(" %7s %7s", F(100 * c.score, 2), F(100 * c.relative_score, 1));
    const double ppl = c.fidelity.perplexity_candidate();
    out += absl::StrFormat(" %7s %8s %9s %8s %9s %8s %7s %7s %8s%s\n", F(c.fidelity.agreement(), 4),
                           G(c.fidelity.mean_kl()), G(ppl), G(c.attention_error),
                           HumanBytes(c.bytes_per_request), F(c.bits_per_element, 3),
                           F(100 * c.bandwidth_fraction, 2), F(100 * c.kept_fraction, 1),
                           G(c.seconds_per_request),
                           overlap ? absl::StrFormat(" %8s", F(100 * c.selection_overlap, 1) + (std::isfinite(c.selection_overlap) ? "%" : "")) : "");
  }
  out += absl::StrCat("* = on the Pareto front of ", std::string(QualityName(summary.quality)),
                      " against bytes per request");
  if (scores && !summary.reference.empty()) {
    out += absl::StrCat("; %full relative to \"", summary.reference, "\"");
  }
  bool ppl = false;
  for (const ConfigSummary& c : summary.configs) ppl = ppl || c.fidelity.nll_tokens > 0;
  if (ppl) {
    for (const ConfigSummary& c : summary.configs) {
      if (c.fidelity.nll_tokens > 0) {
        out += absl::StrCat("; ppl of the full cache ", G(c.fidelity.perplexity_reference()));
        break;
      }
    }
  }
  return out + "\n";
}

std::string ToCsv(const EvalSummary& summary) {
  std::string out =
      "config,codec,row,column,examples,score,score_stderr,relative_score,agreement,mean_kl,"
      "perplexity,perplexity_full,attention_error,key_error,value_error,bytes_per_request,"
      "bytes_per_token,fixed_bytes,bits_per_element,bandwidth_fraction,kept_fraction,"
      "encode_seconds,decode_seconds,generate_seconds,seconds_per_request,selection_overlap,pareto,"
      "key_error_by_layer,value_error_by_layer,attention_error_by_layer\n";
  auto num = [](double x) { return std::isfinite(x) ? absl::StrFormat("%.9g", x) : std::string(); };
  for (const ConfigSummary& c : summary.configs) {
    const FidelitySums& f = c.fidelity;
    out += absl::StrJoin(
        std::vector<std::string>{Csv(c.label.name), Csv(c.label.codec), Csv(c.label.row), Csv(c.label.column),
         absl::StrCat(c.examples), num(c.score), num(c.score_stderr), num(c.relative_score),
         num(f.agreement()), num(f.mean_kl()), num(f.perplexity_candidate()),
         num(f.perplexity_reference()), num(c.attention_error), num(c.key_error), num(c.value_error),
         num(c.bytes_per_request), num(c.bytes_per_token), num(c.fixed_bytes), num(c.bits_per_element),
         num(c.bandwidth_fraction), num(c.kept_fraction), num(c.encode_seconds), num(c.decode_seconds),
         num(c.generate_seconds), num(c.seconds_per_request), num(c.selection_overlap), c.pareto ? "1" : "0",
         Join(c.key_error_by_layer), Join(c.value_error_by_layer), Join(c.attention_error_by_layer)},
        ",");
    out += "\n";
  }
  return out;
}

std::string ToJson(const EvalSummary& summary, std::string_view extra_json) {
  json configs = json::array();
  auto list = [](const std::vector<double>& xs) {
    json a = json::array();
    for (double x : xs) a.push_back(Num(x));
    return a;
  };
  for (const ConfigSummary& c : summary.configs) {
    const FidelitySums& f = c.fidelity;
    configs.push_back({{"config", c.label.name},
                       {"codec", c.label.codec},
                       {"row", c.label.row},
                       {"column", c.label.column},
                       {"examples", c.examples},
                       {"score", Num(c.score)},
                       {"score_stderr", Num(c.score_stderr)},
                       {"relative_score", Num(c.relative_score)},
                       {"agreement", Num(f.agreement())},
                       {"mean_kl", Num(f.mean_kl())},
                       {"fidelity_steps", f.steps},
                       {"perplexity", Num(f.perplexity_candidate())},
                       {"perplexity_full", Num(f.perplexity_reference())},
                       {"perplexity_tokens", f.nll_tokens},
                       {"attention_error", Num(c.attention_error)},
                       {"key_error", Num(c.key_error)},
                       {"value_error", Num(c.value_error)},
                       {"key_error_by_layer", list(c.key_error_by_layer)},
                       {"value_error_by_layer", list(c.value_error_by_layer)},
                       {"attention_error_by_layer", list(c.attention_error_by_layer)},
                       {"bytes_per_request", Num(c.bytes_per_request)},
                       {"bytes_per_token", Num(c.bytes_per_token)},
                       {"fixed_bytes", Num(c.fixed_bytes)},
                       {"bits_per_element", Num(c.bits_per_element)},
                       {"bandwidth_fraction", Num(c.bandwidth_fraction)},
                       {"kept_fraction", Num(c.kept_fraction)},
                       {"encode_seconds", Num(c.encode_seconds)},
                       {"decode_seconds", Num(c.decode_seconds)},
                       {"generate_seconds", Num(c.generate_seconds)},
                       {"seconds_per_request", Num(c.seconds_per_request)},
                       {"selection_overlap", Num(c.selection_overlap)},
                       {"pareto", c.pareto}});
  }
  json j = {{"reference", summary.reference},
            {"quality", std::string(QualityName(summary.quality))},
            {"configs", configs}};
  if (!extra_json.empty()) {
    json extra = json::parse(extra_json.begin(), extra_json.end(), nullptr, false);
    if (extra.is_object()) {
      for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
    }
  }
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string SeedTable(const EvalSummary& summary, std::string_view title) {
  const bool scores = HasScores(summary);
  const bool relative = summary.quality != Quality::kKl;
  auto cell = [&](const ConfigSummary& c) -> std::string {
    if (c.examples == 0) return "-";
    switch (summary.quality) {
      case Quality::kTaskScore:
        return std::isfinite(c.relative_score)
                   ? absl::StrFormat("%.3f (%.1f%%)", c.score, 100 * c.relative_score)
                   : F(c.score, 3);
      case Quality::kAgreement:
        return F(c.fidelity.agreement(), 4);
      case Quality::kKl:
        return G(c.fidelity.mean_kl());
    }
    return "-";
  };
  std::string out = absl::StrCat("### ", std::string(title), "\n\n");
  std::vector<std::string> rows, cols;
  std::map<std::pair<std::string, std::string>, const ConfigSummary*> grid;
  std::vector<const ConfigSummary*> unpivoted;
  for (const ConfigSummary& c : summary.configs) {
    if (c.label.row.empty() || c.label.column.empty()) {
      unpivoted.push_back(&c);
      continue;
    }
    if (std::find(rows.begin(), rows.end(), c.label.row) == rows.end()) rows.push_back(c.label.row);
    if (std::find(cols.begin(), cols.end(), c.label.column) == cols.end()) cols.push_back(c.label.column);
    grid[{c.label.row, c.label.column}] = &c;
  }
  if (!rows.empty()) {
    // One pivot table: `heading`, then a Method row per grid row; `value` gives a cell's text
    // ("-" where a configuration has none).
    auto table = [&](const std::string& heading,
                     const std::function<std::string(const ConfigSummary&)>& value) {
      out += absl::StrCat(heading, "\n\n| Method | ", absl::StrJoin(cols, " | "), " |\n|---|");
      for (size_t i = 0; i < cols.size(); ++i) out += "---|";
      out += "\n";
      for (const std::string& r : rows) {
        out += absl::StrCat("| ", r, " |");
        for (const std::string& c : cols) {
          auto it = grid.find({r, c});
          out += absl::StrCat(" ", it == grid.end() ? "-" : value(*it->second), " |");
        }
        out += "\n";
      }
    };
    table(absl::StrCat("Quality: ", std::string(QualityName(summary.quality)),
                       summary.quality == Quality::kTaskScore && relative ? " (% of full)" : ""),
          cell);
    if (HasOverlap(summary)) {
      table("\nSelection overlap with the model's own global choice", [](const ConfigSummary& c) {
        return std::isfinite(c.selection_overlap) ? F(100 * c.selection_overlap, 1) + "%"
                                                  : std::string("-");
      });
    }
    table("\nBandwidth (% of the full cache at 16 bits)",
          [](const ConfigSummary& c) { return F(100 * c.bandwidth_fraction, 1); });
    out += "\n";
  }
  if (!unpivoted.empty()) {
    out += "| Configuration |";
    if (scores) out += " Score | % of Full |";
    out += " Agreement | KL | Bandwidth | Bits/element |\n|---|";
    if (scores) out += "---|---|";
    out += "---|---|---|---|\n";
    for (const ConfigSummary* c : unpivoted) {
      out += absl::StrCat("| ", c->label.name, " |");
      if (scores) {
        const std::string rel = std::isfinite(c->relative_score) ? F(100 * c->relative_score, 1) + "%" : "-";
        out += absl::StrCat(" ", F(c->score, 3), " | ", rel, " |");
      }
      out += absl::StrCat(" ", F(c->fidelity.agreement(), 4), " | ", G(c->fidelity.mean_kl()), " | ",
                          F(100 * c->bandwidth_fraction, 1), "% | ", F(c->bits_per_element, 2), " |\n");
    }
  }
  return out;
}

}  // namespace kvwire::eval
