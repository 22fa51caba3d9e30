// A bound on how deeply a JSON text nests, checked before it is parsed.
//
// Why: nlohmann parses and frees any nesting iteratively, but whatever walks the parsed value
// recursively (dump() in an error message, the tokenizer's component factories) overflows the
// stack on a few megabytes of "[[[[...". Real config.json, tokenizer.json and safetensors
// headers nest fewer than 10 levels. The limit is serde_json's, so the Hugging Face tokenizers
// library refuses the same files.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvwire::common {

inline constexpr int kMaxJsonNesting = 128;

// The deepest nesting of arrays and objects in `text`, or `limit` + 1 as soon as that is
// exceeded. Brackets inside strings do not count. `text` need not be valid JSON: the parser
// reports syntax errors afterwards.
inline int JsonNestingDepth(std::string_view text, int limit = kMaxJsonNesting) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return limit + 1;
      if (depth > deepest) deepest = depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// InvalidArgument "<what> nests deeper than 128 levels" when it does; OK otherwise.
inline absl::Status CheckJsonNesting(std::string_view text, std::string_view what) {
  if (JsonNestingDepth(text) <= kMaxJsonNesting) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      std::string(what), " nests arrays/objects deeper than ", kMaxJsonNesting, " levels"));
}

}  // namespace kvwire::common
