#include "models/train/word_tokenizer.h"

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace kvwire::train {
namespace {

// GPT-2's reversible byte -> printable code point map: printable Latin-1 bytes stand for
// themselves, the others are moved to U+0100 and up in byte order.
std::vector<std::string> ByteSymbols() {
  std::vector<int> code(256, -1);
  auto keep = [&](int lo, int hi) {
    for (int b = lo; b <= hi; ++b) code[b] = b;
  };
  keep('!', '~');
  keep(0xA1, 0xAC);
  keep(0xAE, 0xFF);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    if (code[b] < 0) code[b] = next++;
  }
  std::vector<std::string> out(256);
  for (int b = 0; b < 256; ++b) {
    const int cp = code[b];
    if (cp < 0x80) {
      out[b] = std::string(1, static_cast<char>(cp));
    } else {  // every code point here is below U+0800: two UTF-8 bytes
      out[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<WordTokenizer> BuildWordTokenizer(const std::vector<std::string>& words) {
  if (words.empty()) return absl::InvalidArgumentError("the word list is empty");
  const std::vector<std::string> byte_symbol = ByteSymbols();
  const std::string space = byte_symbol[' '];  // "Ġ"

  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  int next_id = 0;
  for (int b = 0; b < 256; ++b) vocab[byte_symbol[b]] = next_id++;

  nlohmann::json merges = nlohmann::json::array();
  std::set<std::string> seen_words;
  for (const std::string& word : words) {
    if (word.empty()) return absl::InvalidArgumentError("empty word in the vocabulary");
    for (unsigned char c : word) {
      if (c <= ' ' || c > '~') {
        return absl::InvalidArgumentError(
            absl::StrCat("word '", word, "' has a character outside printable ASCII"));
      }
    }
    if (!seen_words.insert(word).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate word '", word, "'"));
    }
    std::string prefix = space;
    for (unsigned char c : word) {
      const std::string& piece = byte_symbol[c];
      std::string merged = prefix + piece;
      if (!vocab.contains(merged)) {
        vocab[merged] = next_id++;
        merges.push_back(nlohmann::json::array({prefix, piece}));
      }
      prefix = std::move(merged);
    }
  }
  const int eot_id = next_id++;

  nlohmann::ordered_json byte_level = {{"type", "ByteLevel"},
                                       {"add_prefix_space", true},
                                       {"trim_offsets", true},
                                       {"use_regex", true}};
  nlohmann::ordered_json doc;
  doc["version"] = "1.0";
  doc["truncation"] = nullptr;
  doc["padding"] = nullptr;
  doc["added_tokens"] = nlohmann::ordered_json::array({{{"id", eot_id},
                                                        {"content", kEndOfText},
                                                        {"single_word", false},
                                                        {"lstrip", false},
                                                        {"rstrip", false},
                                                        {"normalized", false},
                                                        {"special", true}}});
  // The prefill node joins context and question with "\n"; as a space it keeps every word of
  // the question a single " word" token.
  doc["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "\n"}}}, {"content", " "}};
  doc["pre_tokenizer"] = byte_level;
  doc["post_processor"] = nullptr;
  doc["decoder"] = byte_level;
  doc["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"vocab", vocab},
                  {"merges", merges}};
  return WordTokenizer{doc.dump(1), next_id, eot_id};
}

}  // namespace kvwire::train
