#include "server/nodes/presets.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvwire::nodes {
namespace {

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (!absl::ascii_islower(name[0]) && !absl::ascii_isdigit(name[0])) return false;
  for (char c : name) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

std::string_view Strip(std::string_view s) {
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

absl::Status AddPreset(const std::string& where, const std::string& name, const std::string& value,
                       PresetMap& into) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "bad preset name '", name, "' (want [a-z0-9][a-z0-9._-]*, <= 64)"));
  }
  if (into.count(name) > 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, "preset '", name, "' is defined twice"));
  }
  // A value is a built-in preset name or config text (config text always has an '=').
  absl::StatusOr<kvcodec::CodecConfig> config =
      value.find('=') == std::string::npos ? kvcodec::Preset(value) : kvcodec::CodecConfig::Parse(value);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "preset '", name, "': ", config.status().message()));
  }
  into[name] = config->ToString();
  return absl::OkStatus();
}

// A measured quality ladder (`kvwire calibrate` JSON, client/eval/ladder.h): its rungs'
// names and codecs; the figures are the rate controller's business, not the presets'.
absl::Status ParseLadderJson(std::string_view text, const std::string& origin, PresetMap& into) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("rungs") || !j["rungs"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": a JSON preset file must be a quality ladder with a \"rungs\" array"));
  }
  int index = 0;
  for (const nlohmann::json& rung : j["rungs"]) {
    const std::string where = absl::StrCat(origin, ": rung ", index++, ": ");
    if (!rung.is_object() || !rung.contains("name") || !rung["name"].is_string() ||
        !rung.contains("codec") || !rung["codec"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "needs string \"name\" and \"codec\""));
    }
    if (absl::Status s = AddPreset(where, rung["name"], rung["codec"], into); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParsePresets(std::string_view text, std::string_view origin, PresetMap& into) {
  if (const std::string_view body = Strip(text); !body.empty() && body.front() == '{') {
    return ParseLadderJson(body, std::string(origin), into);
  }
  std::istringstream lines{std::string(text)};
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    const std::string where = absl::StrCat(std::string(origin), ":", number, ": ");
    const std::string_view stripped = Strip(line);
    if (stripped.empty() || stripped.front() == '#') continue;
    const size_t eq = stripped.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(where, "expected 'name = config'"));
    }
    const std::string name(Strip(stripped.substr(0, eq)));
    const std::string value(Strip(stripped.substr(eq + 1)));
    if (absl::Status s = AddPreset(where, name, value, into); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<PresetMap> LoadPresetFiles(const std::vector<std::string>& paths) {
  PresetMap presets;
  for (const std::string& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open preset file ", path));
    std::ostringstream text;
    text << in.rdbuf();
    if (absl::Status s = ParsePresets(text.str(), path, presets); !s.ok()) return s;
  }
  return presets;
}

absl::StatusOr<kvcodec::CodecConfig> FindPreset(const PresetMap& presets, std::string_view name) {
  if (auto it = presets.find(std::string(name)); it != presets.end()) {
    return kvcodec::CodecConfig::Parse(it->second);
  }
  absl::StatusOr<kvcodec::CodecConfig> builtin = kvcodec::Preset(name);
  if (!builtin.ok()) return absl::NotFoundError(builtin.status().message());
  return builtin;
}

}  // namespace kvwire::nodes
