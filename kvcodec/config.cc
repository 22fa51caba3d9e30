// Text forms of the codec configuration: dtypes, bit plans, CodecConfig and named presets.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kvcodec/kvcodec.h"

namespace kvcodec {
namespace {

absl::StatusOr<int> ParseNonNegativeInt(absl::string_view text, absl::string_view what) {
  int value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid ", what, " '", text, "': expected a non-negative integer"));
  }
  return value;
}

// Shortest text that parses back to the same double, so ToString round-trips exactly.
std::string FormatDouble(double value) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, end);
}

struct CodingName {
  absl::string_view name;
  ValueCoding coding;
};
constexpr CodingName kCodingNames[] = {
    {"raw", ValueCoding::kRaw},   {"fp16", ValueCoding::kFloat16}, {"bf16", ValueCoding::kBFloat16},
    {"int8", ValueCoding::kInt8}, {"int4", ValueCoding::kInt4},    {"int3", ValueCoding::kInt3},
    {"int2", ValueCoding::kInt2},
};

std::string SpecToString(const QuantSpec& spec) {
  if (spec.coding == ValueCoding::kLowRank) return absl::StrCat("svd", spec.rank);
  std::string out;
  for (const auto& c : kCodingNames) {
    if (c.coding == spec.coding) out = std::string(c.name);
  }
  if (spec.is_integer()) {
    absl::StrAppend(&out, spec.axis == QuantAxis::kPerChannel ? "/channel" : "/token");
    if (spec.group_size > 0) absl::StrAppend(&out, "/g", spec.group_size);
  }
  return out;
}

absl::StatusOr<QuantSpec> ParseSpec(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  QuantSpec spec;
  const absl::string_view head = parts[0];
  bool found = false;
  for (const auto& c : kCodingNames) {
    if (c.name == head) {
      spec.coding = c.coding;
      found = true;
    }
  }
  if (!found && absl::StartsWith(head, "svd")) {
    auto rank = ParseNonNegativeInt(head.substr(3), "low rank");
    if (!rank.ok() || *rank == 0) {
      return absl::InvalidArgumentError(absl::StrCat("invalid low rank '", head, "': use svdK, K >= 1"));
    }
    spec.coding = ValueCoding::kLowRank;
    spec.rank = *rank;
    found = true;
  }
  if (!found) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown coding '", head, "': expected raw, fp16, bf16, int8, int4, int3, int2 or svdK"));
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const absl::string_view opt = parts[i];
    if (!spec.is_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("option '", opt, "' applies only to integer codings (in '", text, "')"));
    }
    if (opt == "token") {
      spec.axis = QuantAxis::kPerToken;
    } else if (opt == "channel") {
      spec.axis = QuantAxis::kPerChannel;
    } else if (absl::StartsWith(opt, "g")) {
      auto group = ParseNonNegativeInt(opt.substr(1), "group size");
      if (!group.ok()) return group.status();
      spec.group_size = *group;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown quantization option '", opt, "': expected token, channel or gN"));
    }
  }
  return spec;
}

std::string HeadModeName(HeadMode mode) {
  switch (mode) {
    case HeadMode::kShared: return "shared";
    case HeadMode::kPerHead: return "perhead";
    case HeadMode::kAdaptive: return "adaptive";
  }
  return "?";
}

std::string DeltaToString(const DeltaConfig& d) {
  std::string out;
  switch (d.mode) {
    case DeltaMode::kNone: return "none";
    case DeltaMode::kSequential: out = "seq"; break;
    case DeltaMode::kGroupedSequential: out = absl::StrCat("gseq/", d.group_size); break;
    case DeltaMode::kAnchor: out = absl::StrCat("anchor/", d.group_size); break;
  }
  if (!d.closed_loop) absl::StrAppend(&out, "/open");
  return out;
}

absl::StatusOr<DeltaConfig> ParseDelta(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  DeltaConfig d;
  size_t next = 1;
  if (parts[0] == "none") {
    d.mode = DeltaMode::kNone;
  } else if (parts[0] == "seq") {
    d.mode = DeltaMode::kSequential;
  } else if (parts[0] == "gseq" || parts[0] == "anchor") {
    d.mode = parts[0] == "gseq" ? DeltaMode::kGroupedSequential : DeltaMode::kAnchor;
    if (parts.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat("delta '", text, "' needs a group size, e.g. ",
                                                     parts[0], "/10"));
    }
    auto group = ParseNonNegativeInt(parts[1], "delta group size");
    if (!group.ok()) return group.status();
    if (*group < 2) return absl::InvalidArgumentError("delta group size must be at least 2");
    d.group_size = *group;
    next = 2;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown delta mode '", parts[0], "': expected none, seq, gseq/G or anchor/G"));
  }
  for (; next < parts.size(); ++next) {
    if (parts[next] == "open" && d.mode != DeltaMode::kNone) {
      d.closed_loop = false;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unexpected delta option '", parts[next], "'"));
    }
  }
  return d;
}

}  // namespace

size_t DTypeSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name_std) {
  const absl::string_view name(name_std.data(), name_std.size());
  if (name == "float32" || name == "fp32" || name == "f32") return DType::kFloat32;
  if (name == "float16" || name == "fp16" || name == "f16") return DType::kFloat16;
  if (name == "bfloat16" || name == "bf16") return DType::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "': expected float32, float16 or bfloat16"));
}

int QuantSpec::bits() const {
  switch (coding) {
    case ValueCoding::kRaw: return 0;  // depends on the cache dtype
    case ValueCoding::kFloat16:
    case ValueCoding::kBFloat16:
    case ValueCoding::kLowRank: return 16;
    case ValueCoding::kInt8: return 8;
    case ValueCoding::kInt4: return 4;
    case ValueCoding::kInt3: return 3;
    case ValueCoding::kInt2: return 2;
  }
  return 0;
}

absl::StatusOr<BitPlan> BitPlan::Parse(std::string_view text_std) {
  const absl::string_view text(text_std.data(), text_std.size());
  BitPlan plan;
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (trimmed.empty()) return absl::InvalidArgumentError("empty bit plan");
  for (absl::string_view rule_text : absl::StrSplit(trimmed, ',')) {
    rule_text = absl::StripAsciiWhitespace(rule_text);
    const size_t colon = rule_text.find(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bit plan rule '", rule_text, "' needs LAYERS:CODING, e.g. *:int4 or 0:raw"));
    }
    absl::string_view layers = rule_text.substr(0, colon);
    Rule rule{-1, -1, 0, {}};
    if (absl::ConsumeSuffix(&layers, "k")) {
      rule.which = 1;
    } else if (absl::ConsumeSuffix(&layers, "v")) {
      rule.which = 2;
    }
    if (layers != "*") {
      std::vector<absl::string_view> range = absl::StrSplit(layers, '-');
      if (range.size() > 2) return absl::InvalidArgumentError(absl::StrCat("bad layer range '", layers, "'"));
      auto first = ParseNonNegativeInt(range[0], "layer");
      if (!first.ok()) return first.status();
      auto last = range.size() == 2 ? ParseNonNegativeInt(range[1], "layer") : first;
      if (!last.ok()) return last.status();
      if (*last < *first) return absl::InvalidArgumentError(absl::StrCat("empty layer range '", layers, "'"));
      rule.first_layer = *first;
      rule.last_layer = *last;
    }
    auto spec = ParseSpec(rule_text.substr(colon + 1));
    if (!spec.ok()) return spec.status();
    rule.spec = *spec;
    plan.rules_.push_back(rule);
  }
  // Canonical text, so equal plans compare equal as strings in frame headers.
  std::vector<std::string> parts;
  for (const Rule& r : plan.rules_) {
    std::string layers = r.first_layer < 0 ? "*"
                         : r.first_layer == r.last_layer
                             ? absl::StrCat(r.first_layer)
                             : absl::StrCat(r.first_layer, "-", r.last_layer);
    if (r.which == 1) layers += "k";
    if (r.which == 2) layers += "v";
    parts.push_back(absl::StrCat(layers, ":", SpecToString(r.spec)));
  }
  plan.text_ = absl::StrJoin(parts, ",");
  return plan;
}

QuantSpec BitPlan::Resolve(int layer, bool is_value) const {
  QuantSpec spec;
  for (const Rule& r : rules_) {
    const bool layer_match = r.first_layer < 0 || (layer >= r.first_layer && layer <= r.last_layer);
    const bool kv_match = r.which == 0 || (r.which == 2) == is_value;
    if (layer_match && kv_match) spec = r.spec;
  }
  return spec;
}

absl::StatusOr<CodecConfig> CodecConfig::Parse(std::string_view text_std) {
  const absl::string_view text(text_std.data(), text_std.size());
  CodecConfig c;
  std::map<std::string, std::string, std::less<>> seen;
  for (absl::string_view item : absl::StrSplit(text, ';', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("config item '", item, "' is not key=value"));
    }
    const std::string key(absl::StripAsciiWhitespace(item.substr(0, eq)));
    const absl::string_view value = absl::StripAsciiWhitespace(item.substr(eq + 1));
    if (!seen.emplace(key, value).second) {
      return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' given twice"));
    }
    auto as_int = [&](int* out) -> absl::Status {
      auto v = ParseNonNegativeInt(value, key);
      if (!v.ok()) return v.status();
      *out = *v;
      return absl::OkStatus();
    };
    absl::Status st;
    if (key == "select") {
      auto m = ParseSelectionMethod(std::string_view(value.data(), value.size()));
      if (!m.ok()) return m.status();
      c.selection.method = *m;
    } else if (key == "keep") {
      double ratio;
      if (!absl::SimpleAtod(value, &ratio) || !(ratio > 0 && ratio <= 1)) {
        return absl::InvalidArgumentError(absl::StrCat("keep ratio '", value, "' must be in (0, 1]"));
      }
      c.selection.keep_ratio = ratio;
    } else if (key == "budget") {
      st = as_int(&c.selection.budget_tokens);
    } else if (key == "heads") {
      if (value == "shared") c.selection.head_mode = HeadMode::kShared;
      else if (value == "perhead") c.selection.head_mode = HeadMode::kPerHead;
      else if (value == "adaptive") c.selection.head_mode = HeadMode::kAdaptive;
      else return absl::InvalidArgumentError(absl::StrCat("heads '", value, "': expected shared, perhead or adaptive"));
    } else if (key == "pyramid") {
      if (value != "0" && value != "1") return absl::InvalidArgumentError("pyramid must be 0 or 1");
      c.selection.pyramid = value == "1";
    } else if (key == "beta") {
      double beta;
      if (!absl::SimpleAtod(value, &beta) || !(beta >= 1 && beta < 1e6)) {
        return absl::InvalidArgumentError(absl::StrCat("pyramid beta '", value, "' must be >= 1"));
      }
      c.selection.pyramid_beta = beta;
    } else if (key == "window") {
      st = as_int(&c.selection.window);
    } else if (key == "kernel") {
      st = as_int(&c.selection.kernel_size);
      if (st.ok() && c.selection.kernel_size % 2 == 0) {
        return absl::InvalidArgumentError("kernel size must be odd");
      }
    } else if (key == "pool") {
      if (value == "max") c.selection.pooling = Pooling::kMax;
      else if (value == "avg") c.selection.pooling = Pooling::kAvg;
      else return absl::InvalidArgumentError(absl::StrCat("pool '", value, "': expected max or avg"));
    } else if (key == "sinks") {
      st = as_int(&c.selection.sink_tokens);
    } else if (key == "recent") {
      if (value == "auto") c.selection.recent_tokens = SelectionConfig::kRecentAuto;
      else st = as_int(&c.selection.recent_tokens);
    } else if (key == "seed") {
      if (!absl::SimpleAtoi(value, &c.selection.seed)) return absl::InvalidArgumentError("seed must be an integer");
    } else if (key == "plan") {
      auto plan = BitPlan::Parse(std::string_view(value.data(), value.size()));
      if (!plan.ok()) return plan.status();
      c.bit_plan = plan->text();
    } else if (key == "delta") {
      auto d = ParseDelta(value);
      if (!d.ok()) return d.status();
      c.delta = *d;
    } else if (key == "entropy") {
      std::vector<absl::string_view> parts = absl::StrSplit(value, '/');
      if (parts[0] == "none" && parts.size() == 1) {
        c.entropy = EntropyCoder::kNone;
      } else if (parts[0] == "rans" && parts.size() == 1) {
        c.entropy = EntropyCoder::kRans;
      } else if (parts[0] == "zstd" && parts.size() <= 2) {
        c.entropy = EntropyCoder::kZstd;
        if (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &c.zstd_level) || c.zstd_level < -7 ||
                                  c.zstd_level > 22)) {
          return absl::InvalidArgumentError("zstd level must be in [-7, 22]");
        }
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("entropy '", value, "': expected none, zstd[/LEVEL] or rans"));
      }
    } else if (key == "chunk") {
      st = as_int(&c.layers_per_chunk);
      if (st.ok() && c.layers_per_chunk < 1) return absl::InvalidArgumentError("chunk must be >= 1 layer");
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown config key '", key,
          "'; known: select keep budget heads pyramid beta window kernel pool sinks recent seed "
          "plan delta entropy chunk"));
    }
    if (!st.ok()) return st;
  }
  return c;
}

std::string CodecConfig::ToString() const {
  const SelectionConfig& s = selection;
  std::string entropy_text = entropy == EntropyCoder::kNone   ? "none"
                             : entropy == EntropyCoder::kRans ? "rans"
                                                              : absl::StrCat("zstd/", zstd_level);
  return absl::StrCat(
      "select=", std::string(SelectionMethodName(s.method)), ";keep=", FormatDouble(s.keep_ratio),
      ";budget=", s.budget_tokens, ";heads=", HeadModeName(s.head_mode),
      ";pyramid=", s.pyramid ? 1 : 0, ";beta=", FormatDouble(s.pyramid_beta),
      ";window=", s.window, ";kernel=", s.kernel_size,
      ";pool=", s.pooling == Pooling::kMax ? "max" : "avg", ";sinks=", s.sink_tokens,
      ";recent=",
      s.recent_tokens == SelectionConfig::kRecentAuto ? "auto" : absl::StrCat(s.recent_tokens),
      ";seed=", s.seed, ";plan=", bit_plan,
      ";delta=", DeltaToString(delta), ";entropy=", entropy_text, ";chunk=", layers_per_chunk);
}

namespace {
const std::vector<std::pair<std::string, std::string>>& PresetTable() {
  // Each preset exists because a seed experiment or a deployment needs it by name.
  static const auto* table = new std::vector<std::pair<std::string, std::string>>{
      {"full", "plan=*:raw"},
      {"bf16", "plan=*:bf16"},
      {"full-zstd", "plan=*:raw;entropy=zstd/3"},
      {"full-rans", "plan=*:raw;entropy=rans"},
      {"int8", "plan=*:int8;entropy=rans"},
      {"int4", "plan=*:int4"},
      {"int4-rans", "plan=*:int4;entropy=rans"},
      {"int4-channel", "plan=*:int4/channel;entropy=rans"},
      // KIVI: keys per channel (they have per-channel outliers), values per token, both in
      // groups of 32. Without the groups a key channel shares one range over the whole prompt:
      // 3.4x the KL at INT4 on the bundled target, and at INT2 12.8% of full instead of 46.2%
      // (multi-key). KIVI's full-precision window of recent tokens is not modelled.
      {"int4-kivi", "plan=*k:int4/channel/g32,*v:int4/token/g32;entropy=rans"},
      {"int2-kivi", "plan=*k:int2/channel/g32,*v:int2/token/g32;entropy=rans"},
      {"int3", "plan=*:int3;entropy=rans"},
      {"int2", "plan=*:int2/g32;entropy=rans"},
      // Seed 003: layer 0 kept at 16 bits makes INT4 lossless at ~27.7% bandwidth.
      {"mixed-int4", "plan=*:int4,0:raw;entropy=rans"},
      {"cachegen", "plan=*:int4;delta=anchor/10;entropy=rans"},
      {"svd64", "plan=*:svd64"},
      {"snapkv50", "select=snapkv;keep=0.5"},
      {"snapkv25-int4", "select=snapkv;keep=0.25;plan=*:int4;entropy=rans"},
      {"q2c25-int4", "select=q2c;keep=0.25;plan=*:int4;entropy=rans"},
      {"h2o25-int4", "select=h2o;keep=0.25;plan=*:int4;entropy=rans"},
      {"streaming25-int4", "select=streaming;keep=0.25;plan=*:int4;entropy=rans"},
      {"pyramid25-int4", "select=snapkv;keep=0.25;pyramid=1;plan=*:int4;entropy=rans"},
      // Scout and text paths (server/scout): only the selection applies, no cache travels.
      {"scout-q2c25", "select=q2c;keep=0.25"},
      {"scout-snapkv25", "select=snapkv;keep=0.25"},
      {"text", "plan=*:raw"},
  };
  return *table;
}
}  // namespace

absl::StatusOr<CodecConfig> Preset(std::string_view name_std) {
  const absl::string_view name(name_std.data(), name_std.size());
  for (const auto& [preset, text] : PresetTable()) {
    if (preset == name) return CodecConfig::Parse(text);
  }
  return absl::NotFoundError(absl::StrCat("unknown preset '", name, "'; known presets: ",
                                          absl::StrJoin(PresetNames(), ", ")));
}

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  for (const auto& [preset, text] : PresetTable()) names.push_back(preset);
  return names;
}

}  // namespace kvcodec
