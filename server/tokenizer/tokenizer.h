// Hugging Face tokenizer.json tokenizers in plain C++ (no libtorch, no Python).
//
// Supported: BPE models as Qwen2/Qwen2.5, Llama-3 (byte-level BPE with a regex split) and
// Mistral/Llama-2 (SentencePiece-style BPE with byte fallback) ship them. Any model, normalizer,
// pre-tokenizer or decoder type outside that set makes loading fail with UnimplementedError naming
// it, rather than tokenizing differently from the reference.
//
// Encode() tokenizes text only: it never adds BOS/EOS (tokenizer.json's post_processor is not
// applied). Chat templates (chat_template.h) write the BOS token into the prompt text, which is
// then matched as a special token; for raw prompts prepend the BOS id yourself if the model
// expects one (GenerationTokens in chat_template.h carries it).
//
// A Tokenizer is immutable after loading; all methods are thread-safe.
#ifndef KVWIRE_SERVER_TOKENIZER_TOKENIZER_H_
#define KVWIRE_SERVER_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvwire::tokenizer {

class Tokenizer {
 public:
  // Loads a tokenizer.json file / its text.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids for `text`, which must be valid UTF-8 (InvalidArgumentError naming the byte offset
  // otherwise). With parse_special, special added tokens written in the text (e.g. "<|im_start|>")
  // become their ids; without it they are tokenized as ordinary text, which is what user-supplied
  // content should get. Non-special added tokens are always matched, as in the reference.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool parse_special = true) const;

  // Text for `ids`. Ids outside the vocabulary are OutOfRangeError. With skip_special, special
  // added tokens are left out. Bytes that do not form valid UTF-8 become U+FFFD. Like the
  // tokenizers library (and unlike transformers' Python decode), no clean_up_tokenization_spaces
  // rewriting is done.
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // One more than the largest token id (model vocab and added tokens). Model embedding tables
  // are often larger; ids past this have no text.
  int32_t vocab_size() const;

  // The id of a token spelled exactly as in tokenizer.json (vocab entry or added token), e.g.
  // "<|eot_id|>" or "Ġthe".
  std::optional<int32_t> TokenId(std::string_view token) const;
  // The tokenizer.json spelling of `id`, if it has one.
  std::optional<std::string_view> TokenText(int32_t id) const;

  // Whether `id` is an added token flagged "special" (BOS/EOS, chat markers, ...).
  bool IsSpecial(int32_t id) const;

  struct Impl;  // defined in tokenizer.cc

 private:
  friend class StreamingDecoder;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes a stream of generated ids into text incrementally. Push() returns only complete UTF-8
// characters: a character whose bytes are spread over several byte-level or byte-fallback tokens
// is held back until its last byte arrives. Concatenating every Push() and the final Flush()
// gives the same text as Tokenizer::Decode on all ids (for the Qwen2.5, Llama-3 and Mistral
// decoders; invalid byte sequences may be replaced by a different number of U+FFFD).
//
// Not thread-safe; one per stream. The Tokenizer must outlive it.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  ~StreamingDecoder();

  // Text completed by `id` (often empty while a multi-byte character is pending). An id outside
  // the vocabulary adds nothing and sets status() to OutOfRangeError.
  std::string Push(int32_t id);
  // Whatever is still held back (an incomplete character at the end becomes U+FFFD); resets the
  // pending bytes.
  std::string Flush();
  // OK unless an unknown id was pushed, or the decoder cannot be streamed exactly (then
  // UnimplementedError from construction on).
  absl::Status status() const { return status_; }

 private:
  struct State;
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::unique_ptr<State> state_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
  absl::Status status_;
};

}  // namespace kvwire::tokenizer

#endif  // KVWIRE_SERVER_TOKENIZER_TOKENIZER_H_
