#include "server/tokenizer/chat_template.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/string_util.h"
#include "server/tokenizer/tokenizer.h"
#include "server/tokenizer/utf8.h"

namespace kvwire::tokenizer {
namespace {

constexpr char kUnknown[] = "unknown chat template; use raw prompt mode";

// The [INST] templates are recognised only by their exact text (after trimming the ends):
// their revisions differ in single spaces that change the prompt.
constexpr std::string_view kMistralV01 =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
constexpr std::string_view kMistralV02 =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
constexpr std::string_view kLlama2Chat =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

constexpr std::string_view kAlternationError = "Conversation roles must alternate user/assistant/user/assistant/...";

// Python's str.isspace() set, which Jinja's trim filter and str.strip() use.
bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string_view PyStrip(std::string_view s) {
  auto space_at = [&](size_t i) {
    size_t len = 0;
    return utf8::ValidSequenceLength(s, i) != 0 && IsPySpace(utf8::DecodeAt(s, i, &len));
  };
  size_t b = 0;
  while (b < s.size() && space_at(b)) b += utf8::ValidSequenceLength(s, b);
  size_t e = s.size();
  while (e > b) {
    size_t p = e - 1;
    while (p > b && (static_cast<uint8_t>(s[p]) & 0xC0) == 0x80) --p;
    if (!space_at(p) || p + utf8::ValidSequenceLength(s, p) != e) break;
    e = p;
  }
  return s.substr(b, e - b);
}

// Undoes the escapes of a Jinja string literal (\n, \t, \\, \', \").
std::string UnescapeJinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char e = s[++i];
      out.push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e);
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Finds the literal default system prompt in a ChatML template, i.e. the text X inside a
// string literal '<|im_start|>system\nX<|im_end|>'. Returns "" if there is none.
std::string FindDefaultSystem(std::string_view t) {
  constexpr std::string_view kHead = "<|im_start|>system";
  constexpr std::string_view kTail = "<|im_end|>";
  for (size_t pos = t.find(kHead); pos != std::string_view::npos; pos = t.find(kHead, pos + 1)) {
    size_t p = pos + kHead.size();
    if (t.substr(p, 2) == "\\n") {
      p += 2;
    } else if (t.substr(p, 1) == "\n") {
      p += 1;
    } else {
      continue;
    }
    const size_t end = t.find(kTail, p);
    if (end == std::string_view::npos) continue;
    const std::string_view body = t.substr(p, end - p);
    // A literal: no quote (which would end the string) and no Jinja syntax inside.
    if (body.empty() || body.find_first_of("'\"{}") != std::string_view::npos) continue;
    return UnescapeJinja(body);
  }
  return "";
}

// What a template can print besides message fields: its string literals and the raw text
// between tags. Collected so that a template which prints anything the native renderers do not
// know about (an extra instruction line, a "<think>" block, ...) is rejected instead of being
// rendered without it.
struct TemplateScan {
  std::vector<std::string> literals;  // unescaped; excluding raise_exception(...) messages
  std::string raw_output;             // raw text Jinja would print, after whitespace control
  bool well_formed = true;
};

TemplateScan ScanTemplate(std::string_view t) {
  TemplateScan scan;
  size_t pos = 0;
  bool prev_block = false;  // previous tag was {% %} (trim_blocks drops one newline after it)
  bool prev_trim = false;   // previous tag ended with '-' (strips all following whitespace)
  while (pos <= t.size()) {
    const size_t open = t.find('{', pos);
    size_t tag = std::string_view::npos;
    for (size_t p = open; p != std::string_view::npos && p + 1 < t.size(); p = t.find('{', p + 1)) {
      if (t[p + 1] == '{' || t[p + 1] == '%' || t[p + 1] == '#') {
        tag = p;
        break;
      }
    }
    std::string raw(t.substr(pos, (tag == std::string_view::npos ? t.size() : tag) - pos));
    // Whitespace control as transformers configures Jinja (trim_blocks, lstrip_blocks) plus the
    // explicit '-' markers.
    if (prev_trim) {
      raw.erase(0,
                raw.find_first_not_of(" \t\r\n") == std::string::npos ? raw.size() : raw.find_first_not_of(" \t\r\n"));
    } else if (prev_block && !raw.empty() && raw[0] == '\n') {
      raw.erase(0, 1);
    }
    if (tag != std::string_view::npos) {
      const char kind = t[tag + 1];
      const bool trim_left = tag + 2 < t.size() && t[tag + 2] == '-';
      if (trim_left) {
        raw.erase(raw.find_last_not_of(" \t\r\n") == std::string::npos ? 0 : raw.find_last_not_of(" \t\r\n") + 1);
      } else if ((kind == '%' || kind == '#') && !(tag + 2 < t.size() && t[tag + 2] == '+')) {
        const size_t nl = raw.find_last_of('\n');
        const size_t line = nl == std::string::npos ? 0 : nl + 1;
        if (raw.find_first_not_of(" \t", line) == std::string::npos) raw.erase(line);
      }
    }
    scan.raw_output += raw;
    if (tag == std::string_view::npos) break;

    const char kind = t[tag + 1];
    const std::string_view close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t p = tag + 2;
    size_t end = std::string_view::npos;
    bool in_raise = false;
    while (p < t.size()) {
      if (kind != '#' && (t[p] == '\'' || t[p] == '"')) {
        const char q = t[p];
        std::string lit;
        size_t k = p + 1;
        for (; k < t.size() && t[k] != q; ++k) {
          if (t[k] == '\\' && k + 1 < t.size()) {
            const char e = t[++k];
            lit.push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e);
          } else {
            lit.push_back(t[k]);
          }
        }
        if (k >= t.size()) {
          scan.well_formed = false;
          return scan;
        }
        if (!in_raise) scan.literals.push_back(std::move(lit));
        p = k + 1;
        continue;
      }
      if (t.compare(p, close.size(), close) == 0) {
        end = p;
        break;
      }
      if (t.compare(p, 16, "raise_exception(") == 0) in_raise = true;
      if (in_raise && t[p] == ')') in_raise = false;
      ++p;
    }
    if (end == std::string_view::npos) {
      scan.well_formed = false;
      return scan;
    }
    prev_trim = end > 0 && t[end - 1] == '-';
    prev_block = kind == '%' || kind == '#';
    pos = end + close.size();
  }
  return scan;
}

// Whether every literal is one the renderer for the family emits (or a dictionary key / role
// name it compares with), and no raw text is printed.
bool OnlyKnownOutput(const TemplateScan& scan, std::initializer_list<std::string_view> known,
                     std::string_view default_system) {
  if (!scan.well_formed || !scan.raw_output.empty()) return false;
  for (const std::string& lit : scan.literals) {
    if (std::find(known.begin(), known.end(), lit) != known.end()) continue;
    if (!default_system.empty() &&
        (lit == default_system || lit == absl::StrCat("<|im_start|>system\n", AV(default_system), "<|im_end|>\n"))) {
      continue;
    }
    return false;
  }
  return true;
}

bool ContainsAny(std::string_view t, std::initializer_list<std::string_view> needles) {
  return std::any_of(needles.begin(), needles.end(), [&](std::string_view n) { return Contains(t, n); });
}

// Canonical spelling of a template for the marker checks below: whitespace outside string
// literals is dropped (so formatting does not matter), and real newlines/tabs inside literals
// are written as the \n / \t escapes (templates use either).
std::string Canonical(std::string_view t) {
  std::string out;
  char quote = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (quote != 0) {
      if (c == '\\' && i + 1 < t.size()) {
        out.push_back(c);
        out.push_back(t[++i]);
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else {
        if (c == quote) quote = 0;
        out.push_back(c);
      }
      continue;
    }
    if (c == '\'' || c == '"') quote = c;
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') out.push_back(c);
  }
  return out;
}

std::optional<std::string> TokenName(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  // Older configs store {"__type": "AddedToken", "content": "<s>", ...}.
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

ChatTemplate ChatTemplate::Raw() { return ChatTemplate(); }

std::string_view ChatTemplate::name() const {
  switch (format_) {
    case Format::kRaw:
      return "raw";
    case Format::kChatML:
      return "chatml";
    case Format::kLlama3:
      return "llama3";
    case Format::kMistralInstruct:
      return "mistral-instruct";
    case Format::kLlama2Chat:
      return "llama2-chat";
  }
  return "raw";
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromConfig(std::string_view tokenizer_config_json) {
  // nlohmann::json throws on type mismatches; none may escape the API.
  try {
    const nlohmann::json config =
        nlohmann::json::parse(tokenizer_config_json.begin(), tokenizer_config_json.end(), nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json is not a valid JSON object");
    }
    auto it = config.find("chat_template");
    std::string tmpl;
    if (it == config.end() || it->is_null()) {
      return absl::NotFoundError("tokenizer_config.json has no chat_template");
    }
    if (it->is_string()) {
      tmpl = it->get<std::string>();
    } else if (it->is_array()) {
      // Several named templates ("default", "tool_use", ...): plain chat uses "default".
      for (const auto& entry : *it) {
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
            entry["template"].is_string()) {
          tmpl = entry["template"].get<std::string>();
        }
      }
      if (tmpl.empty()) return absl::UnimplementedError(absl::StrCat("no \"default\" chat_template; ", kUnknown));
    } else {
      return absl::InvalidArgumentError("tokenizer_config.json: chat_template must be a string or a list");
    }
    return FromTemplate(tmpl, TokenName(config, "bos_token").value_or(""), TokenName(config, "eos_token").value_or(""));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: unexpected structure: ", e.what()));
  }
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTemplate(std::string_view chat_template, std::string bos_token,
                                                        std::string eos_token) {
  ChatTemplate ct;
  ct.bos_ = std::move(bos_token);
  ct.eos_ = std::move(eos_token);
  const std::string_view t = chat_template;
  const std::string sq = Canonical(t);

  if (Contains(t, "<|im_start|>") && Contains(t, "<|im_end|>")) {
    if (ContainsAny(t, {"<think>", "reasoning_content", "enable_thinking"})) {
      return absl::UnimplementedError(absl::StrCat("chat template with thinking blocks (Qwen3 style); ", kUnknown));
    }
    // The per-message line and the generation prompt must be the plain ChatML ones.
    const bool message_line = ContainsAny(sq, {"'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>'",
                                               "'<|im_start|>'+message.role+'\\n'+message.content+'<|im_end|>'"});
    const bool generation = Contains(sq, "'<|im_start|>assistant\\n'");
    if (!message_line || !generation) return absl::UnimplementedError(absl::StrCat("ChatML-like template; ", kUnknown));
    ct.format_ = Format::kChatML;
    ct.default_system_ = FindDefaultSystem(t);
    ct.qwen_tool_grouping_ = Contains(t, "<tool_response>");
    const bool known = OnlyKnownOutput(
        ScanTemplate(t),
        {"<|im_start|>", "<|im_end|>", "\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_start|>system\n",
         "<|im_start|>user", "\n<tool_response>\n", "\n</tool_response>", "system", "user", "assistant", "tool", "role",
         "content",
         // Qwen2.5's tools branch and tool-call rendering; only reached with tools / tool_calls,
         // which Render() never passes.
         "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
         "with function signatures within <tools></tools> XML tags:\n<tools>",
         "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
         "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
         "<args-json-object>}\n</tool_call><|im_end|>\n",
         "\n<tool_call>\n{\"name\": \"", "\", \"arguments\": ", "}\n</tool_call>"},
        ct.default_system_);
    if (!known) return absl::UnimplementedError(absl::StrCat("ChatML template that prints other text; ", kUnknown));
    return ct;
  }

  if (Contains(t, "<|start_header_id|>") && Contains(t, "<|eot_id|>")) {
    if (ContainsAny(t, {"Cutting Knowledge Date", "ipython", "tools", "date_string"})) {
      return absl::UnimplementedError(
          absl::StrCat("Llama-3.1+ chat template (tools / knowledge-date system header); ", kUnknown));
    }
    const bool message_line =
        Contains(sq, "'<|start_header_id|>'+message['role']+'<|end_header_id|>\\n\\n'+message['content']");
    const bool generation = Contains(sq, "'<|start_header_id|>assistant<|end_header_id|>\\n\\n'");
    if (!message_line || !generation)
      return absl::UnimplementedError(absl::StrCat("Llama-3-like template; ", kUnknown));
    ct.format_ = Format::kLlama3;
    ct.trim_content_ = Contains(sq, "message['content']|trim");
    ct.bos_first_ = Contains(sq, "bos_token+content");
    ct.generation_prompt_always_ = !Contains(t, "add_generation_prompt");
    if (!OnlyKnownOutput(ScanTemplate(t),
                         {"<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
                          "<|start_header_id|>assistant<|end_header_id|>\n\n", "role", "content"},
                         "")) {
      return absl::UnimplementedError(absl::StrCat("Llama-3 template that prints other text; ", kUnknown));
    }
    return ct;
  }

  const std::string_view exact = PyStrip(t);
  if (exact == kMistralV01 || exact == kMistralV02) {
    ct.format_ = Format::kMistralInstruct;
    ct.eos_then_space_ = exact == kMistralV01;
    return ct;
  }
  if (exact == kLlama2Chat) {
    ct.format_ = Format::kLlama2Chat;
    return ct;
  }
  return absl::UnimplementedError(std::string(kUnknown));
}

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  for (size_t i = 0; i < messages.size(); ++i) {
    if (utf8::FindInvalid(messages[i].content) != std::string::npos ||
        utf8::FindInvalid(messages[i].role) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, " is not valid UTF-8"));
    }
  }
  std::string out;
  if (format_ == Format::kRaw) {
    for (const ChatMessage& m : messages) out += m.content;
    return out;
  }
  if (messages.empty()) return absl::InvalidArgumentError("chat has no messages");
  const size_t n = messages.size();

  switch (format_) {
    case Format::kRaw:
      break;

    case Format::kChatML: {
      auto turn = [&](std::string_view role, std::string_view content) {
        absl::StrAppend(&out, "<|im_start|>", AV(role), "\n", AV(content), "<|im_end|>\n");
      };
      const bool first_is_system = messages[0].role == "system";
      if (!first_is_system && !default_system_.empty()) turn("system", default_system_);
      for (size_t i = 0; i < n; ++i) {
        const ChatMessage& m = messages[i];
        if (!qwen_tool_grouping_) {
          turn(m.role, m.content);
          continue;
        }
        // Qwen2.5: consecutive tool results share one user turn; roles the template does not
        // know produce nothing, exactly as the template renders them.
        if (m.role == "user" || m.role == "system" || m.role == "assistant") {
          turn(m.role, m.content);
        } else if (m.role == "tool") {
          if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
          absl::StrAppend(&out, "\n<tool_response>\n", m.content, "\n</tool_response>");
          if (i + 1 == n || messages[i + 1].role != "tool") out += "<|im_end|>\n";
        }
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    }

    case Format::kLlama3: {
      for (size_t i = 0; i < n; ++i) {
        if (i == 0 && bos_first_) out += bos_;
        const std::string_view content = trim_content_ ? PyStrip(messages[i].content) : messages[i].content;
        absl::StrAppend(&out, "<|start_header_id|>", messages[i].role, "<|end_header_id|>\n\n", AV(content),
                        "<|eot_id|>");
      }
      if (add_generation_prompt || generation_prompt_always_)
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    }

    case Format::kMistralInstruct: {
      out += bos_;
      for (size_t i = 0; i < n; ++i) {
        const ChatMessage& m = messages[i];
        if ((m.role == "user") != (i % 2 == 0)) return absl::InvalidArgumentError(std::string(kAlternationError));
        if (m.role == "user") {
          absl::StrAppend(&out, "[INST] ", m.content, " [/INST]");
        } else if (m.role == "assistant") {
          absl::StrAppend(&out, m.content, eos_, eos_then_space_ ? " " : "");
        } else {
          return absl::InvalidArgumentError("Only user and assistant roles are supported!");
        }
      }
      return out;
    }

    case Format::kLlama2Chat: {
      size_t first = 0;
      std::optional<std::string_view> system;
      if (messages[0].role == "system") {
        system = messages[0].content;
        first = 1;
      }
      for (size_t i = first; i < n; ++i) {
        const ChatMessage& m = messages[i];
        const size_t k = i - first;
        if ((m.role == "user") != (k % 2 == 0)) return absl::InvalidArgumentError(std::string(kAlternationError));
        std::string content = m.content;
        if (k == 0 && system.has_value()) content = absl::StrCat("<<SYS>>\n", AV(*system), "\n<</SYS>>\n\n", m.content);
        if (m.role == "user") {
          absl::StrAppend(&out, bos_, "[INST] ", AV(PyStrip(content)), " [/INST]");
        } else if (m.role == "assistant") {
          absl::StrAppend(&out, " ", AV(PyStrip(content)), " ", eos_);
        }
        // Any other role in an allowed position renders nothing in this template.
      }
      return out;
    }
  }
  return out;
}

absl::StatusOr<GenerationTokens> ParseGenerationTokens(std::string_view tokenizer_config_json,
                                                       std::string_view generation_config_json,
                                                       const Tokenizer* tokenizer) {
  try {
    GenerationTokens g;
    if (!tokenizer_config_json.empty()) {
      const nlohmann::json c =
          nlohmann::json::parse(tokenizer_config_json.begin(), tokenizer_config_json.end(), nullptr, false);
      if (c.is_discarded() || !c.is_object()) {
        return absl::InvalidArgumentError("tokenizer_config.json is not a valid JSON object");
      }
      g.bos_token = TokenName(c, "bos_token");
      g.eos_token = TokenName(c, "eos_token");
      g.pad_token = TokenName(c, "pad_token");
      auto add_bos = c.find("add_bos_token");
      g.add_bos_token = add_bos != c.end() && add_bos->is_boolean() && add_bos->get<bool>();
    }

    auto int_id = [](const nlohmann::json& v) -> std::optional<int32_t> {
      if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX) {
        return static_cast<int32_t>(v.get<int64_t>());
      }
      return std::nullopt;
    };
    if (!generation_config_json.empty()) {
      const nlohmann::json gc =
          nlohmann::json::parse(generation_config_json.begin(), generation_config_json.end(), nullptr, false);
      if (gc.is_discarded() || !gc.is_object()) {
        return absl::InvalidArgumentError("generation_config.json is not a valid JSON object");
      }
      if (auto it = gc.find("bos_token_id"); it != gc.end() && !it->is_null()) {
        g.bos_token_id = int_id(*it);
        if (!g.bos_token_id) return absl::InvalidArgumentError("generation_config.json: bad bos_token_id");
      }
      if (auto it = gc.find("pad_token_id"); it != gc.end() && !it->is_null()) {
        g.pad_token_id = int_id(*it);
        if (!g.pad_token_id) return absl::InvalidArgumentError("generation_config.json: bad pad_token_id");
      }
      if (auto it = gc.find("eos_token_id"); it != gc.end() && !it->is_null()) {
        if (it->is_array()) {
          for (const auto& v : *it) {
            auto id = int_id(v);
            if (!id) return absl::InvalidArgumentError("generation_config.json: bad entry in eos_token_id");
            g.eos_token_ids.push_back(*id);
          }
        } else if (auto id = int_id(*it)) {
          g.eos_token_ids.push_back(*id);
        } else {
          return absl::InvalidArgumentError("generation_config.json: eos_token_id must be an int or a list of ints");
        }
      }
    }

    if (tokenizer != nullptr) {
      auto resolve = [&](const std::optional<std::string>& name,
                         const char* what) -> absl::StatusOr<std::optional<int32_t>> {
        if (!name.has_value()) return std::optional<int32_t>();
        auto id = tokenizer->TokenId(*name);
        if (!id) {
          return absl::FailedPreconditionError(
              absl::StrCat(what, " \"", *name, "\" is not in the tokenizer's vocabulary"));
        }
        return id;
      };
      auto bos = resolve(g.bos_token, "bos_token");
      if (!bos.ok()) return bos.status();
      if (!g.bos_token_id) g.bos_token_id = *bos;
      auto pad = resolve(g.pad_token, "pad_token");
      if (!pad.ok()) return pad.status();
      if (!g.pad_token_id) g.pad_token_id = *pad;
      auto eos = resolve(g.eos_token, "eos_token");
      if (!eos.ok()) return eos.status();
      // Chat models end turns with the tokenizer's eos_token (e.g. <|im_end|>) even when the
      // generation config lists only the base model's end-of-text id.
      if (eos->has_value() &&
          std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), **eos) == g.eos_token_ids.end()) {
        g.eos_token_ids.push_back(**eos);
      }
    }
    return g;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("generation config: unexpected structure: ", e.what()));
  }
}

}  // namespace kvwire::tokenizer
