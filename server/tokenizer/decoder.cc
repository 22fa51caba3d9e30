#include "server/tokenizer/decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "server/tokenizer/bpe_model.h"
#include "server/tokenizer/string_util.h"
#include "server/tokenizer/utf8.h"

namespace kvwire::tokenizer {

struct Decoder::Step {
  enum Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind;
  std::string a;  // Replace: pattern; Strip: content char; Metaspace: replacement char
  std::string b;  // Replace: replacement
  size_t start = 0;
  size_t stop = 0;
  bool prepend = false;  // Metaspace: prepend_scheme != never
};

Decoder::~Decoder() = default;

namespace {

using Step = Decoder::Step;

// Maps one byte-level spelling back to bytes. A token with characters outside the byte alphabet
// (some added tokens) is taken as its own UTF-8, like the reference does.
void AppendByteLevel(std::string_view tok, std::string* out) {
  const size_t mark = out->size();
  size_t i = 0;
  while (i < tok.size()) {
    const size_t len = utf8::ValidSequenceLength(tok, i);
    size_t l = 0;
    const int b = len == 0 ? -1 : ByteLevelCharToByte(utf8::DecodeAt(tok, i, &l));
    if (b < 0) {
      out->resize(mark);
      out->append(tok);
      return;
    }
    out->push_back(static_cast<char>(b));
    i += len;
  }
}

// "<0xAB>" -> 0xAB; -1 for anything else.
int ByteFallbackValue(std::string_view tok) {
  if (tok.size() != 6 || tok.substr(0, 3) != "<0x" || tok[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(tok[3]);
  const int lo = hex(tok[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

void StripToken(const Step& s, std::string* tok) {
  size_t begin = 0;
  for (size_t k = 0; k < s.start && tok->compare(begin, s.a.size(), s.a) == 0; ++k) begin += s.a.size();
  size_t end = tok->size();
  for (size_t k = 0; k < s.stop && end >= begin + s.a.size() && tok->compare(end - s.a.size(), s.a.size(), s.a) == 0;
       ++k) {
    end -= s.a.size();
  }
  *tok = tok->substr(begin, end - begin);
}

void MetaspaceToken(const Step& s, bool first, std::string* tok) {
  // Token 0 loses every replacement character, not only a leading one: that is what the
  // reference does, and decoded text has to match it.
  absl::StrReplaceAll({{s.a, first && s.prepend ? "" : " "}}, tok);
}

absl::StatusOr<Step> ParseStep(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("tokenizer.json: decoder must be an object with a \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  Step s{};
  if (type == "ByteLevel") {
    s.kind = Step::kByteLevel;
  } else if (type == "ByteFallback") {
    s.kind = Step::kByteFallback;
  } else if (type == "Fuse") {
    s.kind = Step::kFuse;
  } else if (type == "Replace") {
    s.kind = Step::kReplace;
    auto pattern = j.find("pattern");
    auto content = j.find("content");
    if (pattern == j.end() || !pattern->is_object() || content == j.end() || !content->is_string()) {
      return absl::InvalidArgumentError("tokenizer.json: Replace decoder needs \"pattern\" and \"content\"");
    }
    auto str = pattern->find("String");
    if (str == pattern->end() || !str->is_string() || str->get<std::string>().empty()) {
      return absl::UnimplementedError("tokenizer.json: Replace decoder supports only a non-empty String pattern");
    }
    s.a = str->get<std::string>();
    s.b = content->get<std::string>();
  } else if (type == "Strip") {
    s.kind = Step::kStrip;
    auto content = j.find("content");
    if (content == j.end() || !content->is_string() || content->get<std::string>().empty()) {
      return absl::InvalidArgumentError("tokenizer.json: Strip decoder needs a \"content\" character");
    }
    s.a = content->get<std::string>();
    auto num = [&](const char* key) -> size_t {
      auto it = j.find(key);
      return (it != j.end() && it->is_number_unsigned()) ? it->get<size_t>() : 0;
    };
    s.start = num("start");
    s.stop = num("stop");
  } else if (type == "Metaspace") {
    s.kind = Step::kMetaspace;
    auto rep = j.find("replacement");
    if (rep == j.end() || !rep->is_string() || rep->get<std::string>().empty()) {
      return absl::InvalidArgumentError("tokenizer.json: Metaspace decoder needs a \"replacement\"");
    }
    s.a = rep->get<std::string>();
    s.prepend = true;
    if (auto ps = j.find("prepend_scheme"); ps != j.end() && ps->is_string() && ps->get<std::string>() == "never") {
      s.prepend = false;
    }
    if (auto ap = j.find("add_prefix_space"); ap != j.end() && ap->is_boolean() && !ap->get<bool>()) s.prepend = false;
  } else {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: decoder type \"", type, "\" is not supported"));
  }
  return s;
}

absl::Status ParseInto(const nlohmann::json& j, std::vector<Step>* steps) {
  if (j.is_object() && j.contains("type") && j["type"] == "Sequence") {
    auto list = j.find("decoders");
    if (list == j.end() || !list->is_array()) {
      return absl::InvalidArgumentError("tokenizer.json: Sequence decoder needs a \"decoders\" array");
    }
    for (const auto& item : *list) {
      if (absl::Status st = ParseInto(item, steps); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  auto step = ParseStep(j);
  if (!step.ok()) return step.status();
  steps->push_back(*std::move(step));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::FromJson(const nlohmann::json& config) {
  std::unique_ptr<Decoder> d(new Decoder());
  if (config.is_null()) {
    d->join_with_space_ = true;
    return d;
  }
  if (absl::Status st = ParseInto(config, &d->steps_); !st.ok()) return st;
  d->first_fused_step_ = d->steps_.size();
  for (size_t k = 0; k < d->steps_.size(); ++k) {
    if (d->steps_[k].kind == Step::kFuse || d->steps_[k].kind == Step::kByteLevel) {
      d->first_fused_step_ = k + 1;
      break;
    }
  }
  // Streaming works token by token; after the output has been fused into one string only a
  // leading Strip can still be applied incrementally.
  for (size_t k = d->first_fused_step_; k < d->steps_.size(); ++k) {
    const Step& s = d->steps_[k];
    const bool ok = s.kind == Step::kFuse || s.kind == Step::kByteLevel || (s.kind == Step::kStrip && s.stop == 0);
    if (!ok) {
      d->streaming_status_ = absl::UnimplementedError(
          "streaming decode: this tokenizer's decoder rewrites the fused text (Strip at the end, or "
          "Replace/Metaspace after Fuse); streamed text may differ from Decode()");
      break;
    }
  }
  return d;
}

std::string Decoder::Decode(const std::vector<std::string_view>& tokens) const {
  std::string out;
  if (join_with_space_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) joined.push_back(' ');
      joined.append(tokens[i]);
    }
    utf8::AppendLossy(joined, &out);
    return out;
  }
  std::vector<std::string> toks(tokens.begin(), tokens.end());
  for (const Step& s : steps_) {
    switch (s.kind) {
      case Step::kByteLevel: {
        std::string bytes;
        for (const std::string& t : toks) AppendByteLevel(t, &bytes);
        std::string text;
        utf8::AppendLossy(bytes, &text);
        toks.assign(1, std::move(text));
        break;
      }
      case Step::kReplace:
        for (std::string& t : toks) absl::StrReplaceAll({{s.a, s.b}}, &t);
        break;
      case Step::kByteFallback: {
        // Runs of byte tokens become their UTF-8 text, or one U+FFFD per byte if invalid.
        std::vector<std::string> next;
        std::string run;
        size_t run_len = 0;
        auto flush = [&] {
          if (run_len == 0) return;
          if (utf8::FindInvalid(run) == std::string::npos) {
            next.push_back(run);
          } else {
            for (size_t k = 0; k < run_len; ++k) next.emplace_back(utf8::kReplacement);
          }
          run.clear();
          run_len = 0;
        };
        for (std::string& t : toks) {
          const int b = ByteFallbackValue(t);
          if (b >= 0) {
            run.push_back(static_cast<char>(b));
            ++run_len;
          } else {
            flush();
            next.push_back(std::move(t));
          }
        }
        flush();
        toks = std::move(next);
        break;
      }
      case Step::kFuse:
        toks.assign(1, absl::StrJoin(toks, ""));
        break;
      case Step::kStrip:
        for (std::string& t : toks) StripToken(s, &t);
        break;
      case Step::kMetaspace:
        for (size_t i = 0; i < toks.size(); ++i) MetaspaceToken(s, i == 0, &toks[i]);
        break;
    }
  }
  for (const std::string& t : toks) utf8::AppendLossy(t, &out);
  return out;
}

Decoder::StreamState Decoder::NewStreamState() const {
  StreamState st;
  st.strip_left.assign(steps_.size(), 0);
  for (size_t k = first_fused_step_; k < steps_.size(); ++k) {
    if (steps_[k].kind == Step::kStrip) st.strip_left[k] = steps_[k].start;
  }
  return st;
}

std::string Decoder::DecodeNext(std::string_view token, StreamState* state) const {
  const bool first = state->index == 0;
  ++state->index;
  if (join_with_space_) return first ? std::string(token) : absl::StrCat(" ", AV(token));
  std::string t(token);
  for (size_t k = 0; k < steps_.size(); ++k) {
    const Step& s = steps_[k];
    const bool fused = k >= first_fused_step_;
    switch (s.kind) {
      case Step::kByteLevel: {
        std::string bytes;
        AppendByteLevel(t, &bytes);  // raw: the caller completes characters across tokens
        t = std::move(bytes);
        break;
      }
      case Step::kReplace:
        absl::StrReplaceAll({{s.a, s.b}}, &t);
        break;
      case Step::kByteFallback:
        if (const int b = ByteFallbackValue(t); b >= 0) t.assign(1, static_cast<char>(b));
        break;
      case Step::kFuse:
        break;
      case Step::kStrip:
        if (!fused) {
          StripToken(s, &t);
        } else {
          // Whole-output Strip: only the start of the stream is affected, possibly spread over
          // several tokens when the first ones are empty.
          size_t& left = state->strip_left[k];
          size_t begin = 0;
          while (left > 0 && t.compare(begin, s.a.size(), s.a) == 0) {
            begin += s.a.size();
            --left;
          }
          if (begin < t.size()) left = 0;  // reached other text: stop stripping
          t.erase(0, begin);
        }
        break;
      case Step::kMetaspace:
        MetaspaceToken(s, fused ? true : first, &t);
        break;
    }
  }
  return t;
}

}  // namespace kvwire::tokenizer
