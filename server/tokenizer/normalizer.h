// Normalizers from tokenizer.json's "normalizer" field. Internal to server/tokenizer.
#ifndef KVWIRE_SERVER_TOKENIZER_NORMALIZER_H_
#define KVWIRE_SERVER_TOKENIZER_NORMALIZER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvwire::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual absl::Status Normalize(std::string* text) const = 0;
};

// Builds the normalizer described by `config` (a tokenizer.json "normalizer" value). Returns
// nullptr for JSON null (no normalization). Supported: NFC, NFD, NFKC, NFKD (via ICU), Prepend,
// Replace with a literal String pattern, Sequence. Anything else is UnimplementedError.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& config);

}  // namespace kvwire::tokenizer

#endif  // KVWIRE_SERVER_TOKENIZER_NORMALIZER_H_
