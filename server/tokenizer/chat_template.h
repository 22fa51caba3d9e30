// Chat prompt formatting for the model families kvwire serves, without a Jinja engine.
//
// Hugging Face models ship their prompt format as a Jinja template (tokenizer_config.json
// "chat_template"). Instead of interpreting Jinja, ChatTemplate recognises the template text of a
// few known families and renders them natively:
//   - ChatML (Qwen2, Qwen2.5 incl. its default system prompt and tool-result grouping, plain
//     ChatML); the default system prompt is read from the template text itself,
//   - Llama-3 (8B/70B Instruct; both the original and the add_generation_prompt revision),
//   - Mistral-Instruct v0.1 / v0.2 / Mixtral-8x7B-Instruct and Llama-2-chat "[INST]" formats
//     (exact known template texts only, since their whitespace varies subtly between revisions).
// Anything else is UnimplementedError ("unknown chat template; use raw prompt mode"); callers
// can then use ChatTemplate::Raw() and send a fully formatted prompt.
#ifndef KVWIRE_SERVER_TOKENIZER_CHAT_TEMPLATE_H_
#define KVWIRE_SERVER_TOKENIZER_CHAT_TEMPLATE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvwire::tokenizer {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool"
  std::string content;
};

class ChatTemplate {
 public:
  enum class Format {
    kRaw,              // no template: Render() concatenates contents verbatim
    kChatML,           // <|im_start|>role\ncontent<|im_end|>\n
    kLlama3,           // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
    kMistralInstruct,  // <s>[INST] user [/INST]assistant</s>
    kLlama2Chat,       // <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s>
  };

  // Reads "chat_template", "bos_token" and "eos_token" from tokenizer_config.json text.
  // NotFound when there is no chat_template (a base model: prompts are raw text);
  // Unimplemented when there is one that this class cannot render.
  static absl::StatusOr<ChatTemplate> FromConfig(std::string_view tokenizer_config_json);
  // Same, from the template text and the BOS/EOS spellings directly.
  static absl::StatusOr<ChatTemplate> FromTemplate(std::string_view chat_template, std::string bos_token,
                                                   std::string eos_token);
  // Explicit raw prompt mode: the caller formats the prompt itself.
  static ChatTemplate Raw();

  // The prompt text for `messages` (which must not be empty). With add_generation_prompt the
  // assistant header is appended so the model answers next (the Mistral/Llama-2 formats have
  // none: their prompt already ends in "[/INST]"; the original Llama-3 template always adds it).
  // Messages that the template itself would reject (roles out of user/assistant alternation for
  // the [INST] formats) are InvalidArgumentError with the template's own message.
  absl::StatusOr<std::string> Render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

  Format format() const { return format_; }
  // "raw", "chatml", "llama3", "mistral-instruct", "llama2-chat".
  std::string_view name() const;
  // ChatML only: the system prompt used when the conversation has none ("" if the template has none).
  const std::string& default_system_prompt() const { return default_system_; }

 private:
  ChatTemplate() = default;

  Format format_ = Format::kRaw;
  std::string bos_;
  std::string eos_;
  std::string default_system_;
  bool qwen_tool_grouping_ = false;        // ChatML: Qwen2.5 wraps "tool" messages in <tool_response>
  bool trim_content_ = false;              // Llama-3: `message['content'] | trim`
  bool bos_first_ = false;                 // Llama-3: bos_token before the first message
  bool generation_prompt_always_ = false;  // Llama-3 original template ignores add_generation_prompt
  bool eos_then_space_ = false;            // Mistral v0.1: assistant turns end in eos_token + ' '
};

// Token names and ids that bracket generation, from tokenizer_config.json (names) and
// generation_config.json (ids; "eos_token_id" may be one int or a list).
struct GenerationTokens {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<int32_t> bos_token_id;
  // Every id that ends generation: generation_config.json's eos_token_id list, then the id of
  // tokenizer_config.json's eos_token if not already there (needs a tokenizer to resolve it).
  std::vector<int32_t> eos_token_ids;
  std::optional<int32_t> pad_token_id;
  // tokenizer_config.json "add_bos_token" (Llama/Mistral: true); for raw prompts the caller
  // prepends bos_token_id when set, since Tokenizer::Encode never adds it.
  bool add_bos_token = false;
};

// Either JSON text may be empty (file absent). `tokenizer`, when given, resolves token names to
// ids (a name missing from its vocabulary is FailedPreconditionError) and ids from
// generation_config.json are used as they are.
absl::StatusOr<GenerationTokens> ParseGenerationTokens(std::string_view tokenizer_config_json,
                                                       std::string_view generation_config_json,
                                                       const Tokenizer* tokenizer = nullptr);

}  // namespace kvwire::tokenizer

#endif  // KVWIRE_SERVER_TOKENIZER_CHAT_TEMPLATE_H_
