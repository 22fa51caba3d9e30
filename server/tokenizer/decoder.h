// Decoders from tokenizer.json's "decoder" field: token strings back to text. Internal to
// server/tokenizer.
#ifndef KVWIRE_SERVER_TOKENIZER_DECODER_H_
#define KVWIRE_SERVER_TOKENIZER_DECODER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvwire::tokenizer {

class Decoder {
 public:
  // Supported: ByteLevel, Replace (String pattern), ByteFallback, Fuse, Strip, Metaspace and
  // Sequence of those; JSON null joins tokens with spaces (the reference behaviour). Anything else
  // is UnimplementedError.
  static absl::StatusOr<std::unique_ptr<Decoder>> FromJson(const nlohmann::json& config);

  // Decodes a whole sequence of vocab spellings. The result is valid UTF-8: bytes that do not
  // form characters become U+FFFD, as in the reference.
  std::string Decode(const std::vector<std::string_view>& tokens) const;

  // State carried between tokens by the streaming decoder.
  struct StreamState {
    size_t index = 0;                // tokens seen so far
    std::vector<size_t> strip_left;  // per whole-stream Strip step: leading chars still to strip
  };
  StreamState NewStreamState() const;
  // The bytes the next token adds to the output. They may end inside a UTF-8 sequence (byte-level
  // and byte-fallback tokens carry single bytes); the caller assembles complete characters.
  std::string DecodeNext(std::string_view token, StreamState* state) const;
  // OK when DecodeNext reproduces Decode exactly (up to how invalid bytes are replaced);
  // UnimplementedError naming the step otherwise.
  const absl::Status& streaming_status() const { return streaming_status_; }

  struct Step;  // defined in decoder.cc

  ~Decoder();

 private:
  Decoder() = default;
  std::vector<Step> steps_;
  bool join_with_space_ = false;  // no decoder in tokenizer.json
  // Index of the first step that sees the whole output as one string (after Fuse/ByteLevel).
  size_t first_fused_step_ = 0;
  absl::Status streaming_status_;
};

}  // namespace kvwire::tokenizer

#endif  // KVWIRE_SERVER_TOKENIZER_DECODER_H_
