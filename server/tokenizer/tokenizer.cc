#include "server/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/common/json_nesting.h"
#include "server/tokenizer/bpe_model.h"
#include "server/tokenizer/decoder.h"
#include "server/tokenizer/normalizer.h"
#include "server/tokenizer/pre_tokenizer.h"
#include "server/tokenizer/string_util.h"
#include "server/tokenizer/utf8.h"
#include "unicode/uchar.h"

namespace kvwire::tokenizer {
namespace {

// The largest tokenizer.json files in use are tens of MB; parsing costs several times the size.
constexpr std::uintmax_t kMaxTokenizerFileBytes = 256u << 20;

struct AddedToken {
  int32_t id;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;
};

// A byte trie over added-token contents, matched leftmost-longest like the reference's
// Aho-Corasick automaton. Added tokens are few (<= a few hundred) and start with rare bytes
// ('<' in practice), so a scan that only enters the trie at candidate first bytes is fast.
class AddedTokenTrie {
 public:
  AddedTokenTrie() { nodes_.emplace_back(); }

  void Insert(std::string_view s, int32_t token_index) {
    if (s.empty()) return;
    int32_t node = 0;
    for (char c : s) {
      const auto b = static_cast<uint8_t>(c);
      int32_t child = Child(node, b);
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].children.emplace_back(b, child);
      }
      node = child;
    }
    nodes_[node].token = token_index;
    first_byte_[static_cast<uint8_t>(s[0])] = true;
    empty_ = false;
  }

  bool empty() const { return empty_; }

  // Finds the leftmost, then longest, token occurrence in text[from..]. Returns false if none.
  bool FindFrom(std::string_view text, size_t from, size_t* begin, size_t* end, int32_t* token) const {
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_byte_[static_cast<uint8_t>(text[i])]) continue;
      int32_t node = 0;
      int32_t best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        node = Child(node, static_cast<uint8_t>(text[j]));
        if (node < 0) break;
        if (nodes_[node].token >= 0) {
          best = nodes_[node].token;
          best_end = j + 1;
        }
      }
      if (best >= 0) {
        *begin = i;
        *end = best_end;
        *token = best;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t token = -1;
  };
  int32_t Child(int32_t node, uint8_t b) const {
    for (const auto& [cb, idx] : nodes_[node].children) {
      if (cb == b) return idx;
    }
    return -1;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
  bool empty_ = true;
};

// Unicode White_Space, for added tokens' lstrip/rstrip (the reference uses regex \s).
bool IsSpaceAt(std::string_view s, size_t i, size_t* len) {
  *len = utf8::ValidSequenceLength(s, i);
  if (*len == 0) return false;
  size_t l = 0;
  return u_hasBinaryProperty(static_cast<UChar32>(utf8::DecodeAt(s, i, &l)), UCHAR_WHITE_SPACE);
}

// \w in the reference's regex: alphanumeric or connector punctuation (e.g. '_').
bool IsWordChar(char32_t c) {
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) || u_isdigit(static_cast<UChar32>(c)) ||
         u_charType(static_cast<UChar32>(c)) == U_CONNECTOR_PUNCTUATION ||
         u_charType(static_cast<UChar32>(c)) == U_NON_SPACING_MARK ||
         u_charType(static_cast<UChar32>(c)) == U_ENCLOSING_MARK ||
         u_charType(static_cast<UChar32>(c)) == U_COMBINING_SPACING_MARK;
}

char32_t LastChar(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<uint8_t>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i == 0) return 0;
  size_t l = 0;
  return utf8::DecodeAt(s, i - 1, &l);
}

bool GetBool(const nlohmann::json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return (it != j.end() && it->is_boolean()) ? it->get<bool>() : dflt;
}

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<Decoder> decoder;

  std::vector<AddedToken> added;
  AddedTokenTrie raw_trie;         // added tokens with normalized=false: matched on input text
  AddedTokenTrie normalized_trie;  // normalized=true: matched after the normalizer ran

  std::vector<std::string> id_text;                       // tokenizer.json spelling by id
  std::vector<uint8_t> id_flags;                          // kHasText | kSpecial
  absl::flat_hash_map<std::string, int32_t> added_to_id;  // added tokens; model vocab is in `model`
  static constexpr uint8_t kHasText = 1;
  static constexpr uint8_t kSpecial = 2;

  // Splits `text` at added-token matches from `trie`. Calls on_text(segment, starts_at_0) for the
  // text between matches and emits matched ids into `out`.
  template <typename F>
  absl::Status SplitAdded(const AddedTokenTrie& trie, std::string_view text, bool text_at_input_start,
                          bool parse_special, std::vector<int32_t>* out, F&& on_text) const {
    size_t emitted = 0;  // text[0..emitted) handled
    size_t search = 0;
    size_t b = 0;
    size_t e = 0;
    int32_t tok = 0;
    while (!trie.empty() && trie.FindFrom(text, search, &b, &e, &tok)) {
      const AddedToken& at = added[tok];
      search = e;
      // With parse_special off a special token is plain text; the automaton still consumed it,
      // so overlapping tokens inside it are not looked for (same as the reference).
      if (at.special && !parse_special) continue;
      if (at.single_word) {
        const bool left_ok = b == 0 || !IsWordChar(LastChar(text.substr(0, b)));
        size_t l = 0;
        const bool right_ok =
            e == text.size() || utf8::ValidSequenceLength(text, e) == 0 || !IsWordChar(utf8::DecodeAt(text, e, &l));
        if (!left_ok || !right_ok) continue;
      }
      if (at.lstrip) {
        // Swallow whitespace before the token, but not text already emitted.
        size_t nb = b;
        while (nb > emitted) {
          size_t p = nb - 1;
          while (p > emitted && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
          size_t len = 0;
          if (!IsSpaceAt(text, p, &len)) break;
          nb = p;
        }
        b = nb;
      }
      if (at.rstrip) {
        size_t len = 0;
        while (e < text.size() && IsSpaceAt(text, e, &len)) e += len;
        search = e;
      }
      if (b > emitted) {
        if (absl::Status st = on_text(text.substr(emitted, b - emitted), text_at_input_start && emitted == 0);
            !st.ok()) {
          return st;
        }
      }
      out->push_back(at.id);
      emitted = e;
    }
    if (emitted < text.size()) {
      return on_text(text.substr(emitted), text_at_input_start && emitted == 0);
    }
    return absl::OkStatus();
  }

  // Pre-tokenizes and runs the model on one normalized stretch of text.
  absl::Status EncodeNormalized(std::string_view text, bool at_input_start, std::vector<int32_t>* out) const {
    if (text.empty()) return absl::OkStatus();
    if (pre_tokenizer == nullptr) return model->EncodePiece(text, out);
    PreTokenized pt;
    pt.pieces.push_back(text);
    pt.first_piece_at_input_start = at_input_start;
    if (absl::Status st = pre_tokenizer->Apply(&pt); !st.ok()) return st;
    for (std::string_view piece : pt.pieces) {
      if (absl::Status st = model->EncodePiece(piece, out); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  // One stretch of input between raw-matched added tokens: normalize, then look for added tokens
  // that match normalized text, then encode what is left.
  absl::Status EncodeSegment(std::string_view segment, bool at_input_start, bool parse_special,
                             std::vector<int32_t>* out) const {
    if (normalizer == nullptr) {
      return SplitAdded(normalized_trie, segment, at_input_start, parse_special, out,
                        [&](std::string_view t, bool s) { return EncodeNormalized(t, s, out); });
    }
    std::string norm(segment);
    if (absl::Status st = normalizer->Normalize(&norm); !st.ok()) return st;
    return SplitAdded(normalized_trie, norm, at_input_start, parse_special, out,
                      [&](std::string_view t, bool s) { return EncodeNormalized(t, s, out); });
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxTokenizerFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", size, " bytes is not a tokenizer.json (at most ",
                                                   kMaxTokenizerFileBytes, ")"));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read tokenizer file ", path));
  auto tok = FromJson(buf.str());
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text) {
  if (absl::Status deep = common::CheckJsonNesting(json_text, "tokenizer.json"); !deep.ok()) return deep;
  // nlohmann::json reports type mismatches by throwing; keep that inside this function.
  try {
    const nlohmann::json j = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError("tokenizer.json is not a valid JSON object");
    }
    auto impl = std::make_unique<Impl>();

    const nlohmann::json null_json;
    auto field = [&](const char* key) -> const nlohmann::json& {
      auto it = j.find(key);
      return it == j.end() ? null_json : *it;
    };

    auto normalizer = MakeNormalizer(field("normalizer"));
    if (!normalizer.ok()) return normalizer.status();
    impl->normalizer = *std::move(normalizer);

    auto pre = MakePreTokenizer(field("pre_tokenizer"));
    if (!pre.ok()) return pre.status();
    impl->pre_tokenizer = *std::move(pre);

    const nlohmann::json& model = field("model");
    if (!model.is_object()) return absl::InvalidArgumentError("tokenizer.json has no \"model\" object");
    std::string type = model.contains("type") && model["type"].is_string() ? model["type"].get<std::string>() : "";
    if (type.empty() && model.contains("merges")) type = "BPE";  // very old files omit it
    if (type != "BPE") {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json: model type \"", type, "\" is not supported (only BPE is)"));
    }
    const bool byte_level = impl->pre_tokenizer != nullptr && impl->pre_tokenizer->IsByteLevel();
    auto bpe = BpeModel::FromJson(model, byte_level);
    if (!bpe.ok()) return bpe.status();
    impl->model = *std::move(bpe);

    auto decoder = Decoder::FromJson(field("decoder"));
    if (!decoder.ok()) return decoder.status();
    impl->decoder = *std::move(decoder);

    // Id tables: model vocab first, then added tokens (which win on conflicts, as in the reference).
    impl->id_text = impl->model->TakeIdToToken();
    impl->id_flags.assign(impl->id_text.size(), 0);
    for (size_t id = 0; id < impl->id_text.size(); ++id) {
      // Only holes in the id range are empty; a vocab entry is never the empty string.
      if (!impl->id_text[id].empty()) impl->id_flags[id] = Impl::kHasText;
    }

    const nlohmann::json& added = field("added_tokens");
    if (!added.is_null() && !added.is_array()) {
      return absl::InvalidArgumentError("tokenizer.json: added_tokens must be an array");
    }
    if (added.is_array()) {
      for (const auto& a : added) {
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
            a["id"].get<int64_t>() > kMaxTokenId || !a.contains("content") || !a["content"].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tokenizer.json: malformed added_tokens entry (needs an id in [0, ", kMaxTokenId, "] and a content string)"));
        }
        AddedToken t;
        t.id = static_cast<int32_t>(a["id"].get<int64_t>());
        t.content = a["content"].get<std::string>();
        if (t.content.empty() || utf8::FindInvalid(t.content) != std::string::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat("tokenizer.json: added token ", t.id, " has empty or invalid content"));
        }
        t.special = GetBool(a, "special", false);
        t.lstrip = GetBool(a, "lstrip", false);
        t.rstrip = GetBool(a, "rstrip", false);
        t.single_word = GetBool(a, "single_word", false);
        t.normalized = GetBool(a, "normalized", !t.special);
        if (static_cast<size_t>(t.id) >= impl->id_text.size()) {
          impl->id_text.resize(static_cast<size_t>(t.id) + 1);
          impl->id_flags.resize(static_cast<size_t>(t.id) + 1, 0);
        }
        impl->id_text[t.id] = t.content;
        impl->id_flags[t.id] = Impl::kHasText | (t.special ? Impl::kSpecial : 0);
        impl->added_to_id[t.content] = t.id;
        const auto index = static_cast<int32_t>(impl->added.size());
        if (t.normalized && impl->normalizer != nullptr) {
          // As in the reference, a normalized token is looked for in its normalized spelling:
          // with a Prepend("▁") normalizer "<x>" matches "▁<x>", i.e. after a space.
          std::string pattern = t.content;
          if (absl::Status st = impl->normalizer->Normalize(&pattern); !st.ok()) return st;
          if (!pattern.empty()) impl->normalized_trie.Insert(pattern, index);
        } else {
          impl->raw_trie.Insert(t.content, index);
        }
        impl->added.push_back(std::move(t));
      }
    }
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: unexpected structure: ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("tokenizer.json: out of memory while loading");
  }
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool parse_special) const {
  if (const size_t bad = utf8::FindInvalid(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrFormat("text is not valid UTF-8: byte 0x%02X at offset %d", static_cast<uint8_t>(text[bad]), bad));
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  const Impl& m = *impl_;
  absl::Status st = m.SplitAdded(
      m.raw_trie, text, /*text_at_input_start=*/true, parse_special, &out,
      [&](std::string_view seg, bool at_start) { return m.EncodeSegment(seg, at_start, parse_special, &out); });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::vector<std::string_view> tokens;
  tokens.reserve(ids.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || static_cast<size_t>(id) >= m.id_text.size() || !(m.id_flags[id] & Impl::kHasText)) {
      return absl::OutOfRangeError(
          absl::StrCat("token id ", id, " (position ", k, ") is not in the vocabulary of size ", m.id_text.size()));
    }
    if (skip_special && (m.id_flags[id] & Impl::kSpecial)) continue;
    tokens.push_back(m.id_text[id]);
  }
  return m.decoder->Decode(tokens);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_text.size()); }

std::optional<int32_t> Tokenizer::TokenId(std::string_view token) const {
  auto it = impl_->added_to_id.find(AV(token));
  if (it != impl_->added_to_id.end()) return it->second;
  return impl_->model->TokenToId(token);
}

std::optional<std::string_view> Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_text.size() || !(impl_->id_flags[id] & Impl::kHasText)) {
    return std::nullopt;
  }
  return impl_->id_text[id];
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_flags.size() && (impl_->id_flags[id] & Impl::kSpecial);
}

// ---------------------------------------------------------------------------------------------
// StreamingDecoder

struct StreamingDecoder::State {
  Decoder::StreamState decoder_state;
};

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special), state_(std::make_unique<State>()) {
  state_->decoder_state = tokenizer_.impl_->decoder->NewStreamState();
  status_ = tokenizer_.impl_->decoder->streaming_status();
}

StreamingDecoder::~StreamingDecoder() = default;

std::string StreamingDecoder::Push(int32_t id) {
  const Tokenizer::Impl& m = *tokenizer_.impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.id_text.size() || !(m.id_flags[id] & Tokenizer::Impl::kHasText)) {
    if (status_.ok()) status_ = absl::OutOfRangeError(absl::StrCat("token id ", id, " is not in the vocabulary"));
    return "";
  }
  if (skip_special_ && (m.id_flags[id] & Tokenizer::Impl::kSpecial)) return "";
  pending_ += m.decoder->DecodeNext(m.id_text[id], &state_->decoder_state);
  // Emit everything except a trailing incomplete character, which the next token may finish.
  const size_t hold = utf8::IncompleteTailLength(pending_);
  std::string out;
  utf8::AppendLossy(std::string_view(pending_).substr(0, pending_.size() - hold), &out);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StreamingDecoder::Flush() {
  std::string out;
  utf8::AppendLossy(pending_, &out);
  pending_.clear();
  return out;
}

}  // namespace kvwire::tokenizer
