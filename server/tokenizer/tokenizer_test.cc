// Unit tests on small hand-written tokenizer.json documents. The real Qwen2.5 / Llama-3 /
// Mistral files are exercised in tokenizer_real_test.cc.
#include "server/tokenizer/tokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/bpe_model.h"
#include "server/tokenizer/utf8.h"

namespace kvwire::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::unique_ptr<Tokenizer> Load(const json& j) {
  auto tok = Tokenizer::FromJson(j.dump());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

std::vector<int32_t> Enc(const Tokenizer& t, std::string_view s, bool parse_special = true) {
  auto ids = t.Encode(s, parse_special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::string Dec(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip_special = false) {
  auto s = t.Decode(ids, skip_special);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

// A character-level BPE (no pre-tokenizer, no normalizer) over the given vocab and merges.
json CharBpe(const std::vector<std::string>& vocab, const json& merges) {
  json v = json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"decoder", {{"type", "Fuse"}}},
          {"model", {{"type", "BPE"}, {"vocab", v}, {"merges", merges}}}};
}

// The GPT-2 byte alphabet as ids 0..255 plus `extra` tokens, with a ByteLevel pre-tokenizer.
json ByteLevelBpe(const std::vector<std::string>& extra, const json& merges) {
  json v = json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8::Append(ByteLevelByteToChar(static_cast<uint8_t>(b)), &s);
    v[s] = b;
  }
  for (size_t i = 0; i < extra.size(); ++i) v[extra[i]] = 256 + i;
  return {{"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", v}, {"merges", merges}}}};
}

TEST(TokenizerTest, MergesFollowRankOrder) {
  // "abc" with rank(b c) < rank(a b): b+c merges first, then a+bc.
  auto t1 = Load(CharBpe({"a", "b", "c", "ab", "bc", "abc"}, {"b c", "a b", "a bc"}));
  EXPECT_THAT(Enc(*t1, "abc"), ElementsAre(5));
  auto t2 = Load(CharBpe({"a", "b", "c", "ab", "bc"}, {"b c", "a b"}));
  EXPECT_THAT(Enc(*t2, "abc"), ElementsAre(0, 4));
  auto t3 = Load(CharBpe({"a", "b", "c", "ab", "bc"}, {"a b", "b c"}));
  EXPECT_THAT(Enc(*t3, "abc"), ElementsAre(3, 2));
}

TEST(TokenizerTest, MergesAsPairsAndTiesGoLeftmost) {
  // Newer files spell merges as ["a", "b"]. In "aaa" both pairs have the same rank: the leftmost
  // merges first.
  auto t = Load(CharBpe({"a", "aa"}, json::array({json::array({"a", "a"})})));
  EXPECT_THAT(Enc(*t, "aaa"), ElementsAre(1, 0));
  EXPECT_THAT(Enc(*t, "aaaa"), ElementsAre(1, 1));
}

TEST(TokenizerTest, IgnoreMergesMapsWholePiece) {
  json j = CharBpe({"a", "b", "c", "ab", "abc"}, {"a b"});
  EXPECT_THAT(Enc(*Load(j), "abc"), ElementsAre(3, 2));  // merges alone cannot reach "abc"
  j["model"]["ignore_merges"] = true;
  EXPECT_THAT(Enc(*Load(j), "abc"), ElementsAre(4));
}

TEST(TokenizerTest, ByteLevelRoundTripsAnyText) {
  // Ġ is the byte-level spelling of ' '.
  auto t = Load(ByteLevelBpe({"Ġ"
                              "h",
                              "Ġh"
                              "i"},
                             {"Ġ h", "Ġh i"}));
  EXPECT_THAT(Enc(*t, " hi"), ElementsAre(257));
  const std::string text = "héllo wörld 😀\n\t日本";
  EXPECT_EQ(Dec(*t, Enc(*t, text)), text);
  EXPECT_EQ(Enc(*t, "é"), std::vector<int32_t>({0xC3, 0xA9}));  // byte ids
}

TEST(TokenizerTest, ByteFallbackAndSentencePieceDecoder) {
  std::vector<std::string> vocab = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    snprintf(buf, sizeof(buf), "<0x%02X>", b);
    vocab.push_back(buf);
  }
  for (const char* s : {"▁", "h", "i", "▁h", "▁hi"}) vocab.push_back(s);
  json j = CharBpe(vocab, {"▁ h", "▁h i"});
  j["model"]["byte_fallback"] = true;
  j["model"]["unk_token"] = "<unk>";
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "▁"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["added_tokens"] = {{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}}};
  auto t = Load(j);
  const int32_t hi = 259 + 4;  // "▁hi"
  const int32_t space = 259;   // "▁"
  EXPECT_THAT(Enc(*t, "hi é"), ElementsAre(hi, space, 3 + 0xC3, 3 + 0xA9));
  EXPECT_EQ(Dec(*t, Enc(*t, "hi é")), "hi é");
  // A lone continuation byte decodes to U+FFFD; the leading space of the text is stripped once.
  EXPECT_EQ(Dec(*t, {space, 3 + 0xA9}), "\xEF\xBF\xBD");
  // Each special-token-separated segment gets its own "▁" prefix (the reference's legacy mode).
  EXPECT_THAT(Enc(*t, "hi<s>hi"), ElementsAre(hi, 1, hi));
  EXPECT_EQ(Dec(*t, Enc(*t, "hi<s>hi")), "hi<s> hi");
  EXPECT_EQ(Dec(*t, Enc(*t, "hi<s>hi"), /*skip_special=*/true), "hi hi");
}

TEST(TokenizerTest, UnknownCharactersFuseIntoOneUnk) {
  json j = CharBpe({"<unk>", "a"}, json::array());
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  EXPECT_THAT(Enc(*Load(j), "axyza"), ElementsAre(1, 0, 1));
  j["model"]["fuse_unk"] = false;
  EXPECT_THAT(Enc(*Load(j), "axya"), ElementsAre(1, 0, 0, 1));
  // Without unk or byte fallback the text cannot be encoded: an error, not dropped characters.
  auto t = Load(CharBpe({"a"}, json::array()));
  EXPECT_EQ(t->Encode("ab").status().code(), absl::StatusCode::kFailedPrecondition);
}

json WithAdded(json j, const json& added) {
  j["added_tokens"] = added;
  return j;
}

TEST(TokenizerTest, AddedTokensSpecialAndNot) {
  json base = ByteLevelBpe({}, json::array());
  auto t = Load(WithAdded(base, {{{"id", 300}, {"content", "<|x|>"}, {"special", true}, {"normalized", false}},
                                 {{"id", 301}, {"content", "<t>"}, {"special", false}, {"normalized", false}},
                                 {{"id", 302}, {"content", "<|x|>y"}, {"special", true}, {"normalized", false}}}));
  EXPECT_THAT(Enc(*t, "a<|x|>b"), ElementsAre('a', 300, 'b'));
  EXPECT_THAT(Enc(*t, "<|x|>y"), ElementsAre(302));  // longest match wins
  // parse_special=false: special tokens are text, non-special added tokens still match.
  std::vector<int32_t> plain = Enc(*t, "<|x|><t>", false);
  EXPECT_THAT(plain, ::testing::Not(::testing::Contains(300)));
  EXPECT_EQ(plain.back(), 301);
  EXPECT_EQ(Dec(*t, plain), "<|x|><t>");
  EXPECT_TRUE(t->IsSpecial(300));
  EXPECT_FALSE(t->IsSpecial(301));
  EXPECT_FALSE(t->IsSpecial('a'));
  EXPECT_EQ(t->TokenId("<t>"), 301);
  EXPECT_EQ(t->TokenId("nope"), std::nullopt);
  EXPECT_EQ(t->TokenText(300), "<|x|>");
  EXPECT_EQ(t->vocab_size(), 303);
  EXPECT_EQ(Dec(*t, {'a', 300, 'b'}, /*skip_special=*/true), "ab");
}

TEST(TokenizerTest, AddedTokensStripAndSingleWord) {
  json base = ByteLevelBpe({}, json::array());
  auto t = Load(WithAdded(base, {{{"id", 300}, {"content", "[L]"}, {"lstrip", true}, {"normalized", false}},
                                 {{"id", 301}, {"content", "[R]"}, {"rstrip", true}, {"normalized", false}},
                                 {{"id", 302}, {"content", "cat"}, {"single_word", true}, {"normalized", false}}}));
  EXPECT_THAT(Enc(*t, "a  [L]b"), ElementsAre('a', 300, 'b'));
  EXPECT_THAT(Enc(*t, "a[R]  b"), ElementsAre('a', 301, 'b'));
  EXPECT_THAT(Enc(*t, "a cat b"), ElementsAre('a', ' ', 302, ' ', 'b'));
  EXPECT_THAT(Enc(*t, "concat"), ::testing::Not(::testing::Contains(302)));
}

TEST(TokenizerTest, NormalizedAddedTokensMatchAfterNormalization) {
  // With normalized=true the token is looked for in the normalized text, spelled as the
  // normalizer spells it (the reference normalizes the token's content too): here "▁[T]", so
  // it matches after a space and not inside a word.
  std::vector<std::string> vocab = {"<unk>", "▁", "a", "b", "▁a", "[T]"};
  json j = CharBpe(vocab, {"▁ a"});
  j["model"]["unk_token"] = "<unk>";
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "▁"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  j["added_tokens"] = {{{"id", 5}, {"content", "[T]"}, {"special", false}, {"normalized", true}}};
  EXPECT_THAT(Enc(*Load(j), "a [T]b"), ElementsAre(4, 5, 3));
  EXPECT_THAT(Enc(*Load(j), "a[T]b"), ElementsAre(4, 0, 0, 0, 3));
  // normalized=false: matched in the input as written; each side is normalized on its own.
  j["added_tokens"][0]["normalized"] = false;
  EXPECT_THAT(Enc(*Load(j), "a[T]b"), ElementsAre(4, 5, 1, 3));
}

// Regression: ids size the id tables, so one absurd id allocated gigabytes (or aborted).
TEST(TokenizerTest, AbsurdIdsAreRejectedBeforeAllocating) {
  json j = CharBpe({"a", "b"}, json::array());
  j["model"]["vocab"]["c"] = 2147483647;
  auto r = Tokenizer::FromJson(j.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("bad id for vocab entry \"c\""));

  j = CharBpe({"a", "b"}, json::array());
  j["added_tokens"] = {{{"id", 2147483647}, {"content", "<x>"}, {"special", true}}};
  r = Tokenizer::FromJson(j.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("malformed added_tokens entry"));

  j["added_tokens"][0]["id"] = 100000;  // large but plausible
  EXPECT_NE(Load(j), nullptr);
}

// Regression: the component factories recurse once per nested Sequence; 200k levels
// overflowed the stack.
TEST(TokenizerTest, DeeplyNestedComponentsAreRejected) {
  std::string normalizer = R"({"type": "NFC"})";
  for (int i = 0; i < 200; ++i) normalizer = R"({"type": "Sequence", "normalizers": [)" + normalizer + "]}";
  json j = CharBpe({"a"}, json::array());
  std::string text = j.dump();
  text.replace(text.find(R"("normalizer":null)"), 17, R"("normalizer":)" + normalizer);
  auto r = Tokenizer::FromJson(text);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("tokenizer.json nests arrays/objects deeper than 128"));
}

TEST(TokenizerTest, InvalidUtf8IsRejectedWithOffset) {
  auto t = Load(ByteLevelBpe({}, json::array()));
  for (std::string bad : {std::string("ok\xFFok"), std::string("ab\xC3"), std::string("\xED\xA0\x80"),
                          std::string("\xC0\xAF"), std::string("xx\xF4\x90\x80\x80")}) {
    auto r = t->Encode(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("offset"));
  }
  auto r = t->Encode("ok\xFFok");
  EXPECT_THAT(r.status().message(), HasSubstr("offset 2"));
  EXPECT_TRUE(t->Encode("").ok());
  EXPECT_TRUE(t->Encode("").value().empty());
}

TEST(TokenizerTest, UnsupportedComponentsAreNamed) {
  json j = CharBpe({"a"}, json::array());
  json m = j;
  m["model"]["type"] = "WordPiece";
  auto r = Tokenizer::FromJson(m.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(r.status().message(), HasSubstr("WordPiece"));

  m = j;
  m["pre_tokenizer"] = {{"type", "Whitespace"}};
  r = Tokenizer::FromJson(m.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(r.status().message(), HasSubstr("Whitespace"));

  m = j;
  m["normalizer"] = {{"type", "Lowercase"}};
  r = Tokenizer::FromJson(m.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(r.status().message(), HasSubstr("Lowercase"));

  m = j;
  m["decoder"] = {{"type", "CTC"}};
  r = Tokenizer::FromJson(m.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(r.status().message(), HasSubstr("CTC"));

  m = j;
  m["model"]["continuing_subword_prefix"] = "##";
  EXPECT_EQ(Tokenizer::FromJson(m.dump()).status().code(), absl::StatusCode::kUnimplemented);

  EXPECT_EQ(Tokenizer::FromJson("{not json").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromJson(R"({"model": {"type": "BPE", "vocab": [], "merges": []}})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromJson(CharBpe({"a"}, {"a b"}).dump()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromFile("/nonexistent/tokenizer.json").status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerTest, UnknownIdsAreOutOfRange) {
  auto t = Load(CharBpe({"a", "b"}, json::array()));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{0, 2}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(t->Decode(std::vector<int32_t>{-1}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Dec(*t, {0, 1, 0}), "aba");
}

TEST(TokenizerTest, NfcNormalizerComposes) {
  json j = CharBpe({"e", "\xC3\xA9", "\xCC\x81"}, json::array());  // e, é, combining acute
  EXPECT_THAT(Enc(*Load(j), "e\xCC\x81"), ElementsAre(0, 2));
  j["normalizer"] = {{"type", "NFC"}};
  EXPECT_THAT(Enc(*Load(j), "e\xCC\x81"), ElementsAre(1));
}

TEST(TokenizerTest, MetaspacePreTokenizerAndDecoder) {
  json j = CharBpe({"▁", "a", "b", "▁a", "▁b"}, {"▁ a", "▁ b"});
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  auto t = Load(j);
  EXPECT_THAT(Enc(*t, "a b"), ElementsAre(3, 4));
  EXPECT_THAT(Enc(*t, "a  b"), ElementsAre(3, 0, 4));
  EXPECT_EQ(Dec(*t, {3, 0, 4}), "a  b");
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_THAT(Enc(*Load(j), "a b"), ElementsAre(1, 4));
}

TEST(TokenizerTest, SplitRegexTreatsNextLineAsWhitespace) {
  // Hugging Face runs these regexes with Oniguruma, whose \s includes U+0085.
  json j = ByteLevelBpe({}, json::array());
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", "\\S+|\\s+"}}}, {"behavior", "Isolated"}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  j["model"]["vocab"]["ab"] = 300;
  j["model"]["vocab"]["Âħ"] = 301;  // the byte-level spelling of U+0085
  j["model"]["vocab"]["bÂ"] = 302;
  // "b Â" would merge across the split if U+0085 were not whitespace.
  j["model"]["merges"] = {"b Â", "a b", "Â ħ"};
  EXPECT_THAT(Enc(*Load(j),
                  "ab\xC2\x85"
                  "ab"),
              ElementsAre(300, 301, 300));
}

TEST(TokenizerTest, StreamingDecoderHoldsPartialCharacters) {
  auto t = Load(ByteLevelBpe({}, json::array()));
  const std::string text = "a😀é日";
  std::vector<int32_t> ids = Enc(*t, text);
  ASSERT_EQ(ids.size(), 1u + 4 + 2 + 3);
  StreamingDecoder sd(*t);
  std::vector<std::string> outs;
  for (int32_t id : ids) outs.push_back(sd.Push(id));
  EXPECT_EQ(outs[0], "a");
  EXPECT_EQ(outs[1], "");
  EXPECT_EQ(outs[3], "");
  EXPECT_EQ(outs[4], "😀");
  EXPECT_EQ(outs[6], "é");
  EXPECT_EQ(outs[9], "日");
  EXPECT_EQ(sd.Flush(), "");
  EXPECT_TRUE(sd.status().ok());

  // An incomplete character at the end is flushed as U+FFFD; an invalid byte is replaced at once.
  StreamingDecoder sd2(*t);
  EXPECT_EQ(sd2.Push(0xE6), "");
  EXPECT_EQ(sd2.Push(0x97), "");
  EXPECT_EQ(sd2.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(sd2.Push(0xE6), "");
  EXPECT_EQ(sd2.Push('x'), "\xEF\xBF\xBDx");
  EXPECT_EQ(sd2.Push(0xFF), "\xEF\xBF\xBD");

  StreamingDecoder sd3(*t);
  EXPECT_EQ(sd3.Push(99999), "");
  EXPECT_EQ(sd3.status().code(), absl::StatusCode::kOutOfRange);
}

TEST(TokenizerTest, StreamingMatchesDecodeWithStrip) {
  std::vector<std::string> vocab = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    snprintf(buf, sizeof(buf), "<0x%02X>", b);
    vocab.push_back(buf);
  }
  for (const char* s : {"▁", "h", "i", "▁h", "▁hi"}) vocab.push_back(s);
  json j = CharBpe(vocab, {"▁ h", "▁h i"});
  j["model"]["byte_fallback"] = true;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "▁"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["added_tokens"] = {{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}}};
  auto t = Load(j);
  for (bool skip : {false, true}) {
    for (const std::string text : {"hi 日本 hi", "<s>hi é", "  hi"}) {
      std::vector<int32_t> ids = Enc(*t, text);
      StreamingDecoder sd(*t, skip);
      std::string streamed;
      for (int32_t id : ids) streamed += sd.Push(id);
      streamed += sd.Flush();
      EXPECT_EQ(streamed, Dec(*t, ids, skip)) << text;
      EXPECT_TRUE(sd.status().ok());
    }
  }
}

}  // namespace
}  // namespace kvwire::tokenizer
