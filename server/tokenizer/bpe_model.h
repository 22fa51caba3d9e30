// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}). Internal to server/tokenizer.
#ifndef KVWIRE_SERVER_TOKENIZER_BPE_MODEL_H_
#define KVWIRE_SERVER_TOKENIZER_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvwire::tokenizer {

// The largest token id a tokenizer.json may use. Id tables are indexed by id, so an absurd id
// would allocate gigabytes; the largest vocabularies in use have about 262k entries.
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 21) - 1;

// GPT-2's reversible byte <-> printable character mapping used by ByteLevel tokenizers: vocab
// entries spell byte b as the character ByteToChar(b) (e.g. ' ' is 'Ġ', U+0120).
char32_t ByteLevelByteToChar(uint8_t b);
// Inverse of ByteLevelByteToChar; -1 for characters outside the 256-character alphabet.
int ByteLevelCharToByte(char32_t c);

class BpeModel {
 public:
  // `byte_level`: the pre-tokenizer is ByteLevel, so vocab strings are byte-level spellings and
  // pieces are raw bytes. The model converts its vocab to raw bytes once here.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model, bool byte_level);

  // Appends the ids of one pre-tokenized piece (valid UTF-8, or raw bytes when byte_level).
  absl::Status EncodePiece(std::string_view piece, std::vector<int32_t>* out) const;

  // Vocab token strings (as written in tokenizer.json) by id, "" for holes. Moved out: the
  // model itself does not need them after loading.
  std::vector<std::string> TakeIdToToken() { return std::move(id_to_token_); }
  // The id of a vocab entry spelled as in tokenizer.json.
  std::optional<int32_t> TokenToId(std::string_view token) const;

 private:
  BpeModel() = default;

  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  absl::Status InitialSymbols(std::string_view piece, std::vector<int32_t>* ids, std::vector<uint32_t>* lens) const;

  bool byte_level_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  std::vector<std::string> id_to_token_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;  // tokenizer.json spelling -> id
  // The key space BPE works in: raw bytes for byte-level models (else token_to_id_ is used).
  absl::flat_hash_map<std::string, int32_t> bytes_to_id_;
  const absl::flat_hash_map<std::string, int32_t>& piece_to_id() const {
    return byte_level_ ? bytes_to_id_ : token_to_id_;
  }
  std::array<int32_t, 256> byte_id_{};           // byte-level: id of each single byte
  std::array<int32_t, 256> byte_fallback_id_{};  // "<0xAB>" tokens, -1 if absent
  absl::flat_hash_map<uint64_t, Merge> merges_;
};

}  // namespace kvwire::tokenizer

#endif  // KVWIRE_SERVER_TOKENIZER_BPE_MODEL_H_
