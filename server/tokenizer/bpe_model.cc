#include "server/tokenizer/bpe_model.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/string_util.h"
#include "server/tokenizer/utf8.h"

namespace kvwire::tokenizer {
namespace {

// Printable bytes keep their own code point; the other 68 bytes are moved to U+0100.. in byte
// order, so every byte has a visible, non-whitespace spelling.
bool IsPrintableByte(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

struct ByteTables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 512> from_char{};  // indexed by code point < 512; -1 = not in alphabet
  ByteTables() {
    from_char.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = IsPrintableByte(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      to_char[b] = c;
      from_char[c] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& Tables() {
  static const ByteTables* tables = new ByteTables();
  return *tables;
}

// Converts a byte-level vocab spelling to the raw bytes it stands for; false if it contains a
// character outside the 256-character alphabet (such entries can never be produced by BPE).
bool ByteLevelDecode(std::string_view token, std::string* out) {
  out->clear();
  size_t i = 0;
  while (i < token.size()) {
    const size_t len = utf8::ValidSequenceLength(token, i);
    if (len == 0) return false;
    size_t l = 0;
    const int b = ByteLevelCharToByte(utf8::DecodeAt(token, i, &l));
    if (b < 0) return false;
    out->push_back(static_cast<char>(b));
    i += len;
  }
  return true;
}

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t len;  // bytes covered; 0 once merged into its left neighbour
};

struct HeapEntry {
  int32_t rank;
  int32_t pos;  // index of the left symbol; ties go to the leftmost pair, as in the reference
  int32_t new_id;
  bool operator>(const HeapEntry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

char32_t ByteLevelByteToChar(uint8_t b) { return Tables().to_char[b]; }

int ByteLevelCharToByte(char32_t c) { return c < 512 ? Tables().from_char[c] : -1; }

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model, bool byte_level) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  m->byte_level_ = byte_level;

  if (auto d = model.find("dropout");
      d != model.end() && !d->is_null() && !(d->is_number() && d->get<double>() == 0.0)) {
    return absl::UnimplementedError("tokenizer.json: BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: BPE ", key, " is not supported"));
    }
  }
  auto flag = [&](const char* key) {
    auto it = model.find(key);
    return it != model.end() && it->is_boolean() && it->get<bool>();
  };
  m->byte_fallback_ = flag("byte_fallback");
  m->fuse_unk_ = flag("fuse_unk");
  m->ignore_merges_ = flag("ignore_merges");

  auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab must be an object");
  }
  int64_t max_id = -1;
  m->token_to_id_.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > kMaxTokenId) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad id for vocab entry \"", it.key(),
                                                     "\" (ids are integers in [0, ", kMaxTokenId, "])"));
    }
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    m->token_to_id_[it.key()] = id;
    max_id = std::max<int64_t>(max_id, id);
  }
  m->id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [tok, id] : m->token_to_id_) m->id_to_token_[id] = tok;

  m->byte_id_.fill(-1);
  if (byte_level) {
    std::string raw;
    m->bytes_to_id_.reserve(m->token_to_id_.size());
    for (const auto& [tok, id] : m->token_to_id_) {
      if (ByteLevelDecode(tok, &raw)) m->bytes_to_id_[raw] = id;
    }
    for (int b = 0; b < 256; ++b) {
      auto it = m->bytes_to_id_.find(std::string(1, static_cast<char>(b)));
      if (it != m->bytes_to_id_.end()) m->byte_id_[b] = it->second;
    }
  }

  m->byte_fallback_id_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    auto it = m->token_to_id_.find(absl::StrFormat("<0x%02X>", b));
    if (it != m->token_to_id_.end()) m->byte_fallback_id_[b] = it->second;
  }

  if (auto unk = model.find("unk_token"); unk != model.end() && unk->is_string()) {
    auto it = m->token_to_id_.find(unk->get<std::string>());
    if (it == m->token_to_id_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: unk_token \"", unk->get<std::string>(), "\" is not in the vocab"));
    }
    m->unk_id_ = it->second;
  }

  auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) {
    return absl::InvalidArgumentError("tokenizer.json: model.merges must be an array");
  }
  m->merges_.reserve(merges->size());
  int32_t rank = 0;
  for (const auto& entry : *merges) {
    // Two spellings exist: "a b" (older files) and ["a", "b"] (newer files, which allows
    // tokens that contain spaces).
    std::string a;
    std::string b;
    if (entry.is_string()) {
      const std::string s = entry.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json: merge \"", s, "\" is not two space-separated tokens"));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge #", rank, " is malformed"));
    }
    auto ia = m->token_to_id_.find(a);
    auto ib = m->token_to_id_.find(b);
    auto in = m->token_to_id_.find(a + b);
    if (ia == m->token_to_id_.end() || ib == m->token_to_id_.end() || in == m->token_to_id_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: merge \"", a, " ", b, "\" uses a token not in the vocab"));
    }
    // Later duplicates overwrite earlier ones, as in the reference implementation.
    m->merges_[PairKey(ia->second, ib->second)] = Merge{rank, in->second};
    ++rank;
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(AV(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

absl::Status BpeModel::InitialSymbols(std::string_view piece, std::vector<int32_t>* ids,
                                      std::vector<uint32_t>* lens) const {
  ids->clear();
  lens->clear();
  // An unknown stretch waiting to be emitted as unk (fuse_unk joins consecutive ones).
  int64_t pending_unk_len = -1;
  auto flush_unk = [&] {
    if (pending_unk_len >= 0) {
      ids->push_back(unk_id_);
      lens->push_back(static_cast<uint32_t>(pending_unk_len));
      pending_unk_len = -1;
    }
  };
  size_t i = 0;
  while (i < piece.size()) {
    size_t len = 1;
    int32_t id = -1;
    if (byte_level_) {
      id = byte_id_[static_cast<uint8_t>(piece[i])];
    } else {
      len = utf8::ValidSequenceLength(piece, i);
      if (len == 0) return absl::InternalError("BPE piece is not valid UTF-8");
      auto it = token_to_id_.find(AV(piece.substr(i, len)));
      if (it != token_to_id_.end()) id = it->second;
    }
    if (id >= 0) {
      flush_unk();
      ids->push_back(id);
      lens->push_back(static_cast<uint32_t>(len));
      i += len;
      continue;
    }
    if (byte_fallback_ && !byte_level_) {
      bool all = true;
      for (size_t k = 0; k < len; ++k) all = all && byte_fallback_id_[static_cast<uint8_t>(piece[i + k])] >= 0;
      if (all) {
        flush_unk();
        for (size_t k = 0; k < len; ++k) {
          ids->push_back(byte_fallback_id_[static_cast<uint8_t>(piece[i + k])]);
          lens->push_back(1);
        }
        i += len;
        continue;
      }
    }
    if (unk_id_ < 0) {
      // The reference drops such characters silently; an error is safer than a wrong prompt.
      return absl::FailedPreconditionError(absl::StrCat("tokenizer has no token for the text at byte ", i,
                                                        " of piece \"", std::string(piece.substr(0, 64)),
                                                        "\" and no unk_token or byte fallback"));
    }
    if (pending_unk_len >= 0 && fuse_unk_) {
      pending_unk_len += static_cast<int64_t>(len);
    } else {
      flush_unk();
      pending_unk_len = static_cast<int64_t>(len);
    }
    i += len;
  }
  flush_unk();
  return absl::OkStatus();
}

absl::Status BpeModel::EncodePiece(std::string_view piece, std::vector<int32_t>* out) const {
  if (piece.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    // Llama-3 style: a piece that is itself a vocab entry maps straight to it, even if the merge
    // sequence would have split it differently.
    const auto& map = piece_to_id();
    auto it = map.find(AV(piece));
    if (it != map.end()) {
      out->push_back(it->second);
      return absl::OkStatus();
    }
  }
  // Scratch buffers reused across calls on the same thread: pieces are short and numerous.
  thread_local std::vector<int32_t> ids;
  thread_local std::vector<uint32_t> lens;
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<HeapEntry> heap_storage;
  if (absl::Status st = InitialSymbols(piece, &ids, &lens); !st.ok()) return st;
  if (ids.size() <= 1) {
    out->insert(out->end(), ids.begin(), ids.end());
    return absl::OkStatus();
  }

  const auto n = static_cast<int32_t>(ids.size());
  symbols.resize(ids.size());
  for (int32_t k = 0; k < n; ++k) symbols[k] = Symbol{ids[k], k - 1, k + 1 < n ? k + 1 : -1, lens[k]};

  // A binary min-heap on a reused vector (std::priority_queue would own and free it).
  std::vector<HeapEntry>& heap = heap_storage;
  heap.clear();
  const auto cmp = std::greater<HeapEntry>();
  auto push = [&](const HeapEntry& e) {
    heap.push_back(e);
    std::push_heap(heap.begin(), heap.end(), cmp);
  };
  for (int32_t k = 0; k + 1 < n; ++k) {
    auto it = merges_.find(PairKey(symbols[k].id, symbols[k + 1].id));
    if (it != merges_.end()) heap.push_back({it->second.rank, k, it->second.new_id});
  }
  std::make_heap(heap.begin(), heap.end(), cmp);
  // Always apply the lowest-ranked merge present; O(n log n) per piece. Entries made stale by an
  // earlier merge are detected by re-checking the pair they were created for.
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    const HeapEntry top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      auto p = merges_.find(PairKey(symbols[left.prev].id, left.id));
      if (p != merges_.end()) push({p->second.rank, left.prev, p->second.new_id});
    }
    if (left.next >= 0) {
      auto q = merges_.find(PairKey(left.id, symbols[left.next].id));
      if (q != merges_.end()) push({q->second.rank, top.pos, q->second.new_id});
    }
  }
  for (int32_t k = 0; k >= 0; k = symbols[k].next) out->push_back(symbols[k].id);
  // Do not let one huge piece pin megabytes of scratch on every thread that ever saw one.
  constexpr size_t kKeep = 1 << 16;
  if (symbols.capacity() > kKeep) {
    ids = {};
    lens = {};
    symbols = {};
    heap_storage = {};
  }
  return absl::OkStatus();
}

}  // namespace kvwire::tokenizer
