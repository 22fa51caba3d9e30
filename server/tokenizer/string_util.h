// Bridges std::string_view and absl::string_view. Debian's Abseil is built with its own
// string_view type (ABSL_OPTION_USE_STD_STRING_VIEW 0), so absl::StrCat & co. and absl hash-map
// lookups do not accept std::string_view directly. Internal to server/tokenizer.
#ifndef KVWIRE_SERVER_TOKENIZER_STRING_UTIL_H_
#define KVWIRE_SERVER_TOKENIZER_STRING_UTIL_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace kvwire::tokenizer {

inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

inline bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

}  // namespace kvwire::tokenizer

#endif  // KVWIRE_SERVER_TOKENIZER_STRING_UTIL_H_
