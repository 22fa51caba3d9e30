// A byte-level BPE tokenizer.json in which every word of a closed vocabulary is one token.
//
// The bundled models read the task generator's word language (models/tasks). Their tokenizer
// is an ordinary GPT-2-style byte-level BPE file, loaded by the same code as Qwen2.5's or
// Llama-3's, whose merges are chosen so that " word" always collapses into a single token:
// each word gets the chain of merges that extends "Ġ" + its first letter one byte at a time.
// Only merges whose left side starts with "Ġ" exist, so at every step the one applicable
// merge extends the prefix, and a vocabulary word can never be split differently. Text
// outside the vocabulary still tokenizes (into shorter pieces and single bytes), as with
// any byte-level BPE.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire::train {

// The end-of-text token, also used as BOS, EOS and padding by the bundled models.
inline constexpr char kEndOfText[] = "<|endoftext|>";

struct WordTokenizer {
  std::string json;        // the tokenizer.json text
  int vocab_size = 0;      // ids 0..vocab_size-1, the special token included
  int end_of_text_id = 0;  // id of kEndOfText
};

// Builds the tokenizer for `words` (non-empty, printable ASCII without spaces, no
// duplicates). Ids: the 256 byte symbols first, then the merge results in creation order,
// then kEndOfText. InvalidArgument for a bad word list.
absl::StatusOr<WordTokenizer> BuildWordTokenizer(const std::vector<std::string>& words);

}  // namespace kvwire::train
