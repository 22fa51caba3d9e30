// Pre-tokenizers from tokenizer.json's "pre_tokenizer" field, plus the PCRE2 wrapper they use.
// Internal to server/tokenizer.
#ifndef KVWIRE_SERVER_TOKENIZER_PRE_TOKENIZER_H_
#define KVWIRE_SERVER_TOKENIZER_PRE_TOKENIZER_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvwire::tokenizer {

// A compiled PCRE2 pattern (UTF + UCP, JIT when available). Matching is thread-safe: per-thread
// scratch space is kept in thread_local storage.
class Regex {
 public:
  // `pattern` uses the Rust/Oniguruma syntax of tokenizer.json, which PCRE2 accepts for the
  // constructs these files use (\p{L}, \p{N}, (?i:...), (?!...)). `\s`/`\S` are widened to
  // Unicode White_Space (adds U+0085) to match Oniguruma, which Hugging Face tokenizers uses.
  // With `literal`, the pattern is matched as a plain string.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Finds the first match in subject[start..]. Returns false when there is none. `subject` must
  // be valid UTF-8 (it is not re-checked).
  absl::StatusOr<bool> Find(std::string_view subject, size_t start, size_t* match_begin, size_t* match_end) const;

 private:
  Regex() = default;
  struct Impl;
  Impl* impl_ = nullptr;
};

// The pieces a segment of text is split into before the model sees them. Pieces are views into
// the caller's text or into `storage` when a pre-tokenizer rewrites them.
struct PreTokenized {
  std::vector<std::string_view> pieces;
  std::deque<std::string> storage;  // deque: growing it never moves existing strings
  // Whether pieces[0] starts at byte 0 of the original input (Metaspace prepend_scheme "first").
  bool first_piece_at_input_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual absl::Status Apply(PreTokenized* pt) const = 0;
  // True when this is (or contains) a ByteLevel pre-tokenizer: the model then works on raw bytes.
  virtual bool IsByteLevel() const { return false; }
};

// Builds the pre-tokenizer for `config` (a tokenizer.json "pre_tokenizer" value); nullptr for JSON
// null. Supported: Split (String or Regex pattern, any behavior, invert), ByteLevel, Metaspace,
// Sequence. Anything else is UnimplementedError.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& config);

}  // namespace kvwire::tokenizer

#endif  // KVWIRE_SERVER_TOKENIZER_PRE_TOKENIZER_H_
