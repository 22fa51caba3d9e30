// Named codec presets from files (a site's presets and its quality ladder; in Kubernetes they
// come from a ConfigMap). One preset per line:
//
//   # comment
//   name = config text or a built-in preset name
//   ladder-2 = select=snapkv;keep=0.5;plan=*:int4,0:raw;entropy=rans
//
// A file whose text starts with '{' is instead a measured quality ladder (the JSON of `kvwire
// calibrate`, client/eval/ladder.h): each rung's "name" and "codec" become a preset.
//
// Names are [a-z0-9][a-z0-9._-]* and at most 64 characters; a name may not be given twice (in
// one file or across files). A file's names shadow kvcodec's built-in presets of the same name.
// Requests name them in GenerateRequest.codec_preset, the prefill node's --codec may name one,
// and they are the `preset` label values of the metrics (besides the built-ins and "custom").
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcodec/kvcodec.h"

namespace kvwire::nodes {

// Name -> canonical config text (kvcodec::CodecConfig::ToString()).
using PresetMap = std::map<std::string, std::string>;

// Parses one file's text; `origin` names it in errors ("presets.conf:3: ..."). InvalidArgument
// for a bad line, name or config, or a name already in `into`.
absl::Status ParsePresets(std::string_view text, std::string_view origin, PresetMap& into);

// Reads and parses each file in order. NotFound for a missing file.
absl::StatusOr<PresetMap> LoadPresetFiles(const std::vector<std::string>& paths);

// `name` from `presets`, else kvcodec's built-in preset; NotFound when neither has it.
absl::StatusOr<kvcodec::CodecConfig> FindPreset(const PresetMap& presets, std::string_view name);

}  // namespace kvwire::nodes
