#include "server/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/tokenizer/string_util.h"

namespace kvwire::tokenizer {

// ---------------------------------------------------------------------------------------------
// Regex

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
};

namespace {

// Per-thread match scratch: one match-data block (only the overall match is needed) and a JIT
// stack large enough for long whitespace runs, where `\s+(?!\S)` backtracks once per char.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (context != nullptr && jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
  }
};

MatchScratch& Scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

std::string PcreError(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return std::string(reinterpret_cast<const char*>(buf));
}

// Oniguruma (used by Hugging Face tokenizers) gives \s the Unicode White_Space set; PCRE2's UCP
// \s lacks U+0085 (NEXT LINE). Rewriting \s and \S keeps splits identical to the reference.
absl::StatusOr<std::string> WidenWhitespace(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S') {
        if (in_class) {
          return absl::UnimplementedError(
              absl::StrCat("tokenizer.json: regex uses \\S inside a character class: ", std::string(p)));
        }
        out += "[^\\s\\x{85}]";
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < p.size() && p[i + 1] == ']') out.push_back(p[++i]);
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      // POSIX class such as [:alpha:] inside a bracket expression: copy through its ':]'.
      const size_t end = p.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out.append(p.substr(i, end + 2 - i));
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern, bool literal) {
  std::string source;
  if (literal) {
    source = std::string(pattern);
  } else {
    auto widened = WidenWhitespace(pattern);
    if (!widened.ok()) return widened.status();
    source = *std::move(widened);
  }
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &err, &err_offset, nullptr);
  if (code == nullptr) {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: cannot compile regex /", std::string(pattern),
                                                 "/ at offset ", err_offset, ": ", PcreError(err)));
  }
  std::unique_ptr<Regex> re(new Regex());
  re->impl_ = new Impl();
  re->impl_->code = code;
  // JIT makes the split several times faster; the interpreter is a correct fallback.
  re->impl_->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

Regex::~Regex() {
  if (impl_ != nullptr) {
    pcre2_code_free(impl_->code);
    delete impl_;
  }
}

absl::StatusOr<bool> Regex::Find(std::string_view subject, size_t start, size_t* match_begin, size_t* match_end) const {
  MatchScratch& s = Scratch();
  if (s.data == nullptr) return absl::ResourceExhaustedError("cannot allocate PCRE2 match data");
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc;
  if (impl_->jit) {
    rc = pcre2_jit_match(impl_->code, subj, subject.size(), start, 0, s.data, s.context);
  } else {
    rc = pcre2_match(impl_->code, subj, subject.size(), start, PCRE2_NO_UTF_CHECK, s.data, s.context);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) return absl::InternalError(absl::StrCat("regex match failed: ", PcreError(rc)));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
  *match_begin = ov[0];
  *match_end = ov[1];
  return true;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

namespace {

enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// Cuts `piece` into spans of regex matches and the gaps between them.
absl::Status FindSpans(const Regex& re, std::string_view piece, std::vector<Span>* spans) {
  spans->clear();
  size_t pos = 0;
  size_t search = 0;
  while (search <= piece.size()) {
    size_t b = 0;
    size_t e = 0;
    auto found = re.Find(piece, search, &b, &e);
    if (!found.ok()) return found.status();
    if (!*found) break;
    if (e == b) {
      // Empty match: splits nothing. Step over one character so the search moves on.
      if (b >= piece.size()) break;
      size_t step = 1;
      while (b + step < piece.size() && (static_cast<unsigned char>(piece[b + step]) & 0xC0) == 0x80) ++step;
      search = b + step;
      continue;
    }
    if (b > pos) spans->push_back({pos, b, false});
    spans->push_back({b, e, true});
    pos = e;
    search = e;
  }
  if (pos < piece.size()) spans->push_back({pos, piece.size(), false});
  return absl::OkStatus();
}

// Turns match/gap spans into pieces following the Hugging Face SplitDelimiterBehavior rules.
void ApplyBehavior(Behavior behavior, std::vector<Span>& spans, std::vector<std::pair<size_t, size_t>>* out) {
  out->clear();
  switch (behavior) {
    case Behavior::kIsolated:
      for (const Span& s : spans) out->emplace_back(s.begin, s.end);
      break;
    case Behavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out->emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Span& s : spans) {
        if (s.is_match && !prev_match && !out->empty()) {
          out->back().second = s.end;
        } else {
          out->emplace_back(s.begin, s.end);
        }
        prev_match = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev_match = false;  // "previous" in reverse order, i.e. the span to the right
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.is_match && !prev_match && !out->empty()) {
          out->back().first = s.begin;
        } else {
          out->emplace_back(s.begin, s.end);
        }
        prev_match = s.is_match;
      }
      std::reverse(out->begin(), out->end());
      break;
    }
    case Behavior::kContiguous: {
      bool prev_match = false;
      for (const Span& s : spans) {
        if (s.is_match == prev_match && !out->empty()) {
          out->back().second = s.end;
        } else {
          out->emplace_back(s.begin, s.end);
        }
        prev_match = s.is_match;
      }
      break;
    }
  }
}

absl::Status SplitPieces(const Regex& re, Behavior behavior, bool invert, PreTokenized* pt) {
  std::vector<std::string_view> result;
  result.reserve(pt->pieces.size() * 2);
  std::vector<Span> spans;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (std::string_view piece : pt->pieces) {
    if (absl::Status st = FindSpans(re, piece, &spans); !st.ok()) return st;
    if (invert) {
      for (Span& s : spans) s.is_match = !s.is_match;
    }
    ApplyBehavior(behavior, spans, &ranges);
    for (const auto& [b, e] : ranges) {
      if (e > b) result.push_back(piece.substr(b, e - b));
    }
  }
  // If the first piece lost its first bytes (Removed), it no longer starts the input; that only
  // matters for Metaspace "first", which never follows a removing Split in real files.
  pt->pieces = std::move(result);
  return absl::OkStatus();
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> re, Behavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}
  absl::Status Apply(PreTokenized* pt) const override { return SplitPieces(*re_, behavior_, invert_, pt); }

 private:
  std::unique_ptr<Regex> re_;
  Behavior behavior_;
  bool invert_;
};

// The GPT-2 split used by ByteLevel when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ByteLevel: optionally prefixes a space and splits with the GPT-2 regex. The byte -> printable
// character mapping itself is folded into the BPE model, which works on raw bytes (the vocab is
// converted once at load), so no per-call remapping is needed here.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}

  absl::Status Apply(PreTokenized* pt) const override {
    if (add_prefix_space_) {
      // Hugging Face applies this to every current piece, not only the first.
      for (std::string_view& piece : pt->pieces) {
        if (piece.empty() || piece.front() != ' ') {
          pt->storage.push_back(absl::StrCat(" ", AV(piece)));
          piece = pt->storage.back();
        }
      }
    }
    if (re_ != nullptr) return SplitPieces(*re_, Behavior::kIsolated, false, pt);
    return absl::OkStatus();
  }
  bool IsByteLevel() const override { return true; }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;  // null when use_regex is false
};

enum class PrependScheme { kAlways, kFirst, kNever };

// Metaspace: spaces become the replacement character (normally U+2581 "▁"), a leading one is
// added per prepend_scheme, and pieces are split so each starts with the replacement.
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  absl::Status Apply(PreTokenized* pt) const override {
    std::vector<std::string_view> result;
    for (size_t k = 0; k < pt->pieces.size(); ++k) {
      std::string text(pt->pieces[k]);
      if (text.find(' ') != std::string::npos) absl::StrReplaceAll({{" ", replacement_}}, &text);
      const bool at_start = k == 0 && pt->first_piece_at_input_start;
      const bool prepend = scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && at_start);
      if (prepend && text.compare(0, replacement_.size(), replacement_) != 0) text.insert(0, replacement_);
      pt->storage.push_back(std::move(text));
      std::string_view stored = pt->storage.back();
      if (!split_) {
        result.push_back(stored);
        continue;
      }
      // MergedWithNext on the replacement character: each piece starts at a replacement.
      size_t begin = 0;
      size_t pos = stored.find(replacement_, 1);
      while (pos != std::string_view::npos) {
        result.push_back(stored.substr(begin, pos - begin));
        begin = pos;
        pos = stored.find(replacement_, pos + replacement_.size());
      }
      if (begin < stored.size()) result.push_back(stored.substr(begin));
    }
    pt->pieces = std::move(result);
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  absl::Status Apply(PreTokenized* pt) const override {
    for (const auto& s : steps_) {
      if (absl::Status st = s->Apply(pt); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  bool IsByteLevel() const override {
    for (const auto& s : steps_) {
      if (s->IsByteLevel()) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

bool BoolField(const nlohmann::json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return (it != j.end() && it->is_boolean()) ? it->get<bool>() : dflt;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSplit(const nlohmann::json& config) {
  auto pattern = config.find("pattern");
  if (pattern == config.end() || !pattern->is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: Split pre-tokenizer needs a \"pattern\" object");
  }
  std::unique_ptr<Regex> re;
  if (auto s = pattern->find("String"); s != pattern->end() && s->is_string()) {
    auto compiled = Regex::Compile(s->get<std::string>(), /*literal=*/true);
    if (!compiled.ok()) return compiled.status();
    re = *std::move(compiled);
  } else if (auto r = pattern->find("Regex"); r != pattern->end() && r->is_string()) {
    auto compiled = Regex::Compile(r->get<std::string>(), /*literal=*/false);
    if (!compiled.ok()) return compiled.status();
    re = *std::move(compiled);
  } else {
    return absl::InvalidArgumentError("tokenizer.json: Split pattern must have \"String\" or \"Regex\"");
  }
  std::string behavior = "Isolated";
  if (auto b = config.find("behavior"); b != config.end() && b->is_string()) behavior = b->get<std::string>();
  Behavior bh;
  if (behavior == "Isolated") {
    bh = Behavior::kIsolated;
  } else if (behavior == "Removed") {
    bh = Behavior::kRemoved;
  } else if (behavior == "MergedWithPrevious") {
    bh = Behavior::kMergedWithPrevious;
  } else if (behavior == "MergedWithNext") {
    bh = Behavior::kMergedWithNext;
  } else if (behavior == "Contiguous") {
    bh = Behavior::kContiguous;
  } else {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: Split behavior \"", behavior, "\" is not supported"));
  }
  return std::make_unique<SplitPreTokenizer>(std::move(re), bh, BoolField(config, "invert", false));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeMetaspace(const nlohmann::json& config) {
  auto rep = config.find("replacement");
  if (rep == config.end() || !rep->is_string() || rep->get<std::string>().empty()) {
    return absl::InvalidArgumentError("tokenizer.json: Metaspace needs a \"replacement\" string");
  }
  PrependScheme scheme = PrependScheme::kAlways;
  if (auto ps = config.find("prepend_scheme"); ps != config.end() && ps->is_string()) {
    const std::string s = ps->get<std::string>();
    if (s == "always") {
      scheme = PrependScheme::kAlways;
    } else if (s == "first") {
      scheme = PrependScheme::kFirst;
    } else if (s == "never") {
      scheme = PrependScheme::kNever;
    } else {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: Metaspace prepend_scheme \"", s, "\""));
    }
  }
  // Older files only have add_prefix_space; false there means "never".
  if (!BoolField(config, "add_prefix_space", true)) scheme = PrependScheme::kNever;
  return std::make_unique<MetaspacePreTokenizer>(rep->get<std::string>(), scheme, BoolField(config, "split", true));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<PreTokenizer>();
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    return absl::InvalidArgumentError("tokenizer.json: pre_tokenizer must be an object with a \"type\"");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "Split") return MakeSplit(config);
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> re;
    if (BoolField(config, "use_regex", true)) {
      auto compiled = Regex::Compile(kGpt2Pattern, false);
      if (!compiled.ok()) return compiled.status();
      re = *std::move(compiled);
    }
    return std::make_unique<ByteLevelPreTokenizer>(BoolField(config, "add_prefix_space", true), std::move(re));
  }
  if (type == "Metaspace") return MakeMetaspace(config);
  if (type == "Sequence") {
    auto list = config.find("pretokenizers");
    if (list == config.end() || !list->is_array()) {
      return absl::InvalidArgumentError("tokenizer.json: Sequence pre-tokenizer needs a \"pretokenizers\" array");
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& item : *list) {
      auto step = MakePreTokenizer(item);
      if (!step.ok()) return step.status();
      if (*step) steps.push_back(*std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: pre_tokenizer type \"", type, "\" is not supported"));
}

}  // namespace kvwire::tokenizer
