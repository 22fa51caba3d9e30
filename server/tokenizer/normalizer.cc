#include "server/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "unicode/bytestream.h"
#include "unicode/normalizer2.h"
#include "unicode/stringpiece.h"

namespace kvwire::tokenizer {
namespace {

bool IsAscii(const std::string& s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Unicode normalization forms. ICU does the work because the composition tables are large and
// must match the Unicode version the reference implementations use; a hand-rolled table would
// drift. ASCII is already in every form, which skips ICU for most text.
class UnicodeNormalizer : public Normalizer {
 public:
  UnicodeNormalizer(const icu::Normalizer2* impl, std::string name) : impl_(impl), name_(std::move(name)) {}

  absl::Status Normalize(std::string* text) const override {
    if (IsAscii(*text)) return absl::OkStatus();
    UErrorCode err = U_ZERO_ERROR;
    const icu::StringPiece in(text->data(), static_cast<int32_t>(text->size()));
    if (impl_->isNormalizedUTF8(in, err) && U_SUCCESS(err)) return absl::OkStatus();
    err = U_ZERO_ERROR;
    std::string out;
    out.reserve(text->size() + text->size() / 8);
    icu::StringByteSink<std::string> sink(&out);
    impl_->normalizeUTF8(0, in, sink, nullptr, err);
    if (U_FAILURE(err)) {
      return absl::InternalError(absl::StrCat(name_, " normalization failed: ", u_errorName(err)));
    }
    *text = std::move(out);
    return absl::OkStatus();
  }

 private:
  const icu::Normalizer2* impl_;  // owned by ICU, lives for the process
  std::string name_;
};

// "Prepend": adds a fixed string in front of non-empty input (SentencePiece-style "▁").
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

// "Replace" with a literal pattern (e.g. " " -> "▁").
class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  absl::Status Normalize(std::string* text) const override {
    if (text->find(from_) != std::string::npos) absl::StrReplaceAll({{from_, to_}}, text);
    return absl::OkStatus();
  }

 private:
  std::string from_;
  std::string to_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& s : steps_) {
      if (absl::Status st = s->Normalize(text); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

absl::StatusOr<std::unique_ptr<Normalizer>> MakeUnicode(const std::string& type) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* impl = nullptr;
  if (type == "NFC") impl = icu::Normalizer2::getNFCInstance(err);
  if (type == "NFD") impl = icu::Normalizer2::getNFDInstance(err);
  if (type == "NFKC") impl = icu::Normalizer2::getNFKCInstance(err);
  if (type == "NFKD") impl = icu::Normalizer2::getNFKDInstance(err);
  if (impl == nullptr || U_FAILURE(err)) {
    return absl::InternalError(absl::StrCat("ICU has no ", type, " normalizer: ", u_errorName(err)));
  }
  return std::make_unique<UnicodeNormalizer>(impl, type);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<Normalizer>();
  if (!config.is_object() || !config.contains("type") || !config["type"].is_string()) {
    return absl::InvalidArgumentError("tokenizer.json: normalizer must be an object with a \"type\"");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") return MakeUnicode(type);
  if (type == "Prepend") {
    auto it = config.find("prepend");
    if (it == config.end() || !it->is_string()) {
      return absl::InvalidArgumentError("tokenizer.json: Prepend normalizer needs a string \"prepend\"");
    }
    return std::make_unique<PrependNormalizer>(it->get<std::string>());
  }
  if (type == "Replace") {
    auto pattern = config.find("pattern");
    auto content = config.find("content");
    if (pattern == config.end() || !pattern->is_object() || content == config.end() || !content->is_string()) {
      return absl::InvalidArgumentError("tokenizer.json: Replace normalizer needs \"pattern\" and \"content\"");
    }
    auto str = pattern->find("String");
    if (str == pattern->end() || !str->is_string()) {
      return absl::UnimplementedError("tokenizer.json: Replace normalizer with a Regex pattern is not supported");
    }
    if (str->get<std::string>().empty()) {
      return absl::InvalidArgumentError("tokenizer.json: Replace normalizer has an empty pattern");
    }
    return std::make_unique<ReplaceNormalizer>(str->get<std::string>(), content->get<std::string>());
  }
  if (type == "Sequence") {
    auto list = config.find("normalizers");
    if (list == config.end() || !list->is_array()) {
      return absl::InvalidArgumentError("tokenizer.json: Sequence normalizer needs a \"normalizers\" array");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& item : *list) {
      auto step = MakeNormalizer(item);
      if (!step.ok()) return step.status();
      if (*step) steps.push_back(*std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: normalizer type \"", type, "\" is not supported"));
}

}  // namespace kvwire::tokenizer
