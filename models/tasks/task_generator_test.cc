#include "models/tasks/task_generator.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kvwire::tasks {
namespace {

using Words = std::vector<std::string_view>;

Example MustGenerate(const TaskParams& params, uint64_t index) {
  absl::StatusOr<Example> ex = GenerateExample(params, index);
  EXPECT_TRUE(ex.ok()) << ex.status();
  return ex.ok() ? *std::move(ex) : Example{};
}

TaskParams Params(TaskType task, int length, std::optional<double> depth, uint64_t seed = 1,
                  Split split = Split::kTrain) {
  TaskParams p;
  p.task = task;
  p.length = length;
  p.depth = depth;
  p.seed = seed;
  p.split = split;
  return p;
}

bool IsDigit(std::string_view w) { return w.size() == 1 && w[0] >= '0' && w[0] <= '9'; }
bool IsName(std::string_view w) {
  const auto& names = NameWords();
  return std::find(names.begin(), names.end(), w) != names.end();
}

// Start indices of every occurrence of `needle` in `hay`.
std::vector<int> Occurrences(const Words& hay, const Words& needle) {
  std::vector<int> at;
  if (needle.empty() || needle.size() > hay.size()) return at;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    if (std::equal(needle.begin(), needle.end(), hay.begin() + static_cast<long>(i))) {
      at.push_back(static_cast<int>(i));
    }
  }
  return at;
}

// Maximal runs of words satisfying `pred`.
template <typename Pred>
std::vector<Words> Runs(const Words& words, Pred pred) {
  std::vector<Words> runs;
  Words cur;
  for (std::string_view w : words) {
    if (pred(w)) {
      cur.push_back(w);
    } else if (!cur.empty()) {
      runs.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) runs.push_back(cur);
  return runs;
}

// Debian's abseil takes only its own string_view, so join by hand.
std::string Join(const Words& w) {
  std::string out;
  for (size_t i = 0; i < w.size(); ++i) {
    if (i > 0) out += ' ';
    out.append(w[i]);
  }
  return out;
}

TEST(Vocabulary, PoolsAreDisjointAndCoverEveryWord) {
  const std::vector<std::string>& vocab = Vocabulary();
  size_t total = 0;
  for (WordPool pool : {WordPool::kFiller, WordPool::kKey, WordPool::kValue, WordPool::kMarker}) {
    total += PoolWords(pool).size();
    for (const std::string& w : PoolWords(pool)) {
      ASSERT_TRUE(PoolOf(w).has_value()) << w;
      EXPECT_EQ(*PoolOf(w), pool) << w << " is listed in two pools";
      EXPECT_FALSE(w.empty());
      EXPECT_EQ(w.find(' '), std::string::npos) << w;
    }
  }
  // A word listed twice (in one pool or two) would make the vocabulary shorter than the pools.
  EXPECT_EQ(vocab.size(), total);
  EXPECT_GE(vocab.size(), 300u);
  EXPECT_EQ(std::set<std::string>(vocab.begin(), vocab.end()).size(), vocab.size());
  for (const auto* list : {&NameWords(), &QaObjectWords(), &QaAttributeWords()}) {
    for (const std::string& w : *list) EXPECT_EQ(PoolOf(w), WordPool::kKey) << w;
  }
  for (const std::string& w : DigitWords()) EXPECT_EQ(PoolOf(w), WordPool::kValue) << w;
  for (const std::string& a : QaAttributeWords()) {
    EXPECT_FALSE(QaAttributeValues(a).empty()) << a;
    for (const std::string& v : QaAttributeValues(a)) EXPECT_EQ(PoolOf(v), WordPool::kValue) << v;
  }
  // The needle templates' words must not be filler words (TRAINING-NOTES: shared words turn the
  // lookup into a harder multi-token match).
  for (const char* w : {"the", "is", "of", "for", "pass", "key", "it", "remember", "what", "var",
                        "=", "answer", ":", "?", "special", "number", "value"}) {
    EXPECT_EQ(PoolOf(w), WordPool::kMarker) << w;
  }
  EXPECT_FALSE(PoolOf("not-a-word").has_value());
}

TEST(Generate, SameSeedGivesIdenticalJsonAndOtherSeedsDiffer) {
  for (TaskType task : kAllTasks) {
    std::string a, b, c;
    for (uint64_t i = 0; i < 10; ++i) {
      const TaskParams p = Params(task, 512, std::nullopt, 7);
      a += ToJsonLine(MustGenerate(p, i)) + "\n";
      b += ToJsonLine(MustGenerate(p, i)) + "\n";
      const std::string other = ToJsonLine(MustGenerate(Params(task, 512, std::nullopt, 8), i));
      EXPECT_NE(ToJsonLine(MustGenerate(p, i)), other);
      c += other + "\n";
    }
    EXPECT_EQ(a, b) << TaskName(task);
    EXPECT_NE(a, c) << TaskName(task);
    // Examples of one run differ from each other too.
    EXPECT_NE(ToJsonLine(MustGenerate(Params(task, 512, 0.5, 7), 0)),
              ToJsonLine(MustGenerate(Params(task, 512, 0.5, 7), 1)));
  }
}

TEST(Generate, LengthIsMetAtEveryScale) {
  for (TaskType task : kAllTasks) {
    for (int length : {256, 1024, 4096}) {
      for (std::optional<double> depth : {std::optional<double>(0.0), std::optional<double>(0.5),
                                          std::optional<double>(1.0), std::optional<double>()}) {
        const Example ex = MustGenerate(Params(task, length, depth, 3), 0);
        // The construction is exact; the requirement is a small tolerance.
        EXPECT_LE(std::abs(ex.length() - length), length / 100) << ex.id;
        EXPECT_EQ(ex.length(), length) << ex.id;
        const Prompt p = FormatPrompt(ex);
        const std::vector<std::string> words =
            absl::StrSplit(absl::StrCat(p.context_text, " ", p.question_text), ' ');
        EXPECT_EQ(static_cast<int>(words.size()), ex.length()) << ex.id;
      }
    }
  }
}

TEST(Generate, NeedleSitsAtTheRequestedDepth) {
  for (TaskType task : kAllTasks) {
    for (int length : {256, 1024, 4096}) {
      for (double depth : {0.0, 0.25, 0.5, 0.75, 1.0}) {
        for (uint64_t i = 0; i < 3; ++i) {
          const Example ex = MustGenerate(Params(task, length, depth, 11), i);
          const int c = static_cast<int>(ex.context.size());
          EXPECT_NEAR(ex.actual_depth(), depth, 1.0 / (c - ex.needle.length)) << ex.id;
          // Independently of the generator's bookkeeping: where the answer really is.
          const std::vector<int> at = Occurrences(ex.context, ex.answer);
          ASSERT_EQ(at.size(), 1u) << ex.id;
          EXPECT_NEAR(static_cast<double>(at[0]) / c, depth,
                      static_cast<double>(ex.needle.length + 1) / c)
              << ex.id;
        }
      }
    }
  }
}

TEST(Generate, RandomDepthsSpreadOverTheContext) {
  // No fixed-offset shortcut: with random depths the needle lands all over the context.
  for (TaskType task : kAllTasks) {
    int buckets[5] = {};
    for (uint64_t i = 0; i < 200; ++i) {
      const Example ex = MustGenerate(Params(task, 256, std::nullopt, 5), i);
      ++buckets[std::min(4, static_cast<int>(ex.actual_depth() * 5))];
    }
    for (int b : buckets) EXPECT_GE(b, 15) << TaskName(task);
  }
}

TEST(Generate, AnswerOccursExactlyOnceAndFillerStaysFiller) {
  for (TaskType task : kAllTasks) {
    for (int length : {256, 1024}) {
      for (uint64_t i = 0; i < 40; ++i) {
        const Example ex = MustGenerate(Params(task, length, std::nullopt, 21), i);
        const std::vector<int> at = Occurrences(ex.context, ex.answer);
        ASSERT_EQ(at.size(), 1u) << ex.id << ": " << Join(ex.answer);
        EXPECT_EQ(at[0], ex.answer_position) << ex.id;
        // Outside the needles only filler words and the sentence period.
        std::vector<bool> in_needle(ex.context.size(), false);
        int prev_end = 0;
        for (const Span& s : ex.needles) {
          EXPECT_GE(s.start, prev_end) << ex.id << ": needles overlap";
          prev_end = s.start + s.length;
          for (int k = s.start; k < s.start + s.length; ++k) in_needle[k] = true;
        }
        for (size_t k = 0; k < ex.context.size(); ++k) {
          const std::optional<WordPool> pool = PoolOf(ex.context[k]);
          ASSERT_TRUE(pool.has_value()) << ex.context[k];
          if (in_needle[k]) {
            EXPECT_NE(*pool, WordPool::kFiller) << ex.id << " word " << k;
          } else {
            EXPECT_TRUE(*pool == WordPool::kFiller || ex.context[k] == ".")
                << ex.id << " word " << k << ": " << ex.context[k];
          }
        }
        for (std::string_view w : ex.question) EXPECT_NE(PoolOf(w), WordPool::kFiller) << ex.id;
      }
    }
  }
}

// Everything answer-bearing in an example: values, multi-word keys, QA facts.
struct Items {
  std::set<std::string> values, keys, facts;
};

void Collect(const Example& ex, Items* items) {
  Words all = TrainingSequence(ex);
  for (const Words& run : Runs(all, IsDigit)) {
    items->values.insert(Join(run));
    EXPECT_EQ(ValueSplit(run), ex.split) << ex.id << ": value " << Join(run);
  }
  for (const Words& run : Runs(all, IsName)) {
    if (run.size() < 2) continue;  // single-word keys are shared by design
    items->keys.insert(Join(run));
    EXPECT_EQ(KeySplit(run), ex.split) << ex.id << ": key " << Join(run);
  }
  // "the ATTR of the OBJ is VAL"
  for (size_t i = 0; i + 6 < ex.context.size(); ++i) {
    if (ex.context[i] == "the" && ex.context[i + 2] == "of" && ex.context[i + 3] == "the" &&
        ex.context[i + 5] == "is") {
      items->facts.insert(
          std::string(ex.context[i + 4]) + "|" + std::string(ex.context[i + 1]) + "|" +
          std::string(ex.context[i + 6]));
      EXPECT_EQ(FactSplit(ex.context[i + 4], ex.context[i + 1], ex.context[i + 6]), ex.split)
          << ex.id;
    }
  }
}

std::vector<std::string> Intersection(const std::set<std::string>& a,
                                      const std::set<std::string>& b) {
  std::vector<std::string> out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

TEST(Split, HeldOutItemsNeverAppearInTrainingAndViceVersa) {
  Items train, heldout;
  for (Split split : {Split::kTrain, Split::kHeldOut}) {
    Items* items = split == Split::kTrain ? &train : &heldout;
    int n = 0;
    for (TaskType task : kAllTasks) {
      for (uint64_t i = 0; i < 1000; ++i, ++n) {
        Collect(MustGenerate(Params(task, 256, std::nullopt, 99, split), i), items);
      }
    }
    // Two-word variable names are partitioned as well.
    TaskParams vt = Params(TaskType::kVarTrack, 256, std::nullopt, 99, split);
    vt.key_words = 2;
    for (uint64_t i = 0; i < 200; ++i, ++n) Collect(MustGenerate(vt, i), items);
    EXPECT_GE(n, 5000);
  }
  EXPECT_THAT(Intersection(train.values, heldout.values), ::testing::IsEmpty());
  EXPECT_THAT(Intersection(train.keys, heldout.keys), ::testing::IsEmpty());
  EXPECT_THAT(Intersection(train.facts, heldout.facts), ::testing::IsEmpty());
  // The check saw real variety on both sides.
  EXPECT_GT(train.values.size(), 10000u);
  EXPECT_GT(heldout.values.size(), 1000u);
  EXPECT_GT(heldout.keys.size(), 200u);
  EXPECT_GT(heldout.facts.size(), 50u);
}

TEST(Split, RuleIsTheDocumentedHash) {
  const Words v = {"4", "8", "1", "2", "7"};
  EXPECT_EQ(ValueSplit(v) == Split::kHeldOut, SplitHash("v:4 8 1 2 7") % kHeldOutModulus == 0);
  // About a tenth of five-digit values are held out.
  int held = 0;
  for (int x = 0; x < 100000; x += 7) {
    Words w;
    std::string s = std::to_string(100000 + x).substr(1);
    for (char& ch : s) w.push_back(DigitWords()[ch - '0']);
    held += ValueSplit(w) == Split::kHeldOut;
  }
  EXPECT_NEAR(held / (100000.0 / 7), 0.1, 0.01);
  EXPECT_EQ(KeySplit({"alpha"}), Split::kTrain);
}

// Resolves "var NAME = RHS ." declarations without the generator's help.
TEST(VarTrack, AnswerMatchesAnIndependentResolver) {
  for (int key_words : {1, 2}) {
    for (int hops : {1, 4, 6}) {
      for (uint64_t i = 0; i < 30; ++i) {
        TaskParams p = Params(TaskType::kVarTrack, 512, std::nullopt, 31);
        p.key_words = key_words;
        p.num_hops = hops;
        p.split = i % 2 ? Split::kHeldOut : Split::kTrain;
        const Example ex = MustGenerate(p, i);
        std::map<std::string, Words> rhs;
        const Words& c = ex.context;
        for (size_t k = 0; k < c.size(); ++k) {
          if (c[k] != "var") continue;
          size_t eq = k + 1;
          while (eq < c.size() && c[eq] != "=") ++eq;
          size_t dot = eq + 1;
          while (dot < c.size() && c[dot] != ".") ++dot;
          ASSERT_LT(dot, c.size()) << ex.id;
          const std::string name = Join(Words(c.begin() + k + 1, c.begin() + eq));
          EXPECT_EQ(rhs.count(name), 0u) << ex.id << ": " << name << " declared twice";
          rhs[name] = Words(c.begin() + eq + 1, c.begin() + dot);
        }
        EXPECT_EQ(static_cast<int>(rhs.size()), 3 * (hops + 1)) << ex.id;
        // Question: what is the value of var NAME ?
        ASSERT_GE(ex.question.size(), 8u);
        std::string name = Join(Words(ex.question.begin() + 6, ex.question.end() - 1));
        int steps = 0;
        Words value;
        for (;;) {
          ASSERT_EQ(rhs.count(name), 1u) << ex.id << ": undeclared " << name;
          const Words& r = rhs[name];
          if (std::all_of(r.begin(), r.end(), IsDigit)) {
            value = r;
            break;
          }
          name = Join(r);
          ASSERT_LE(++steps, 100) << ex.id << ": cycle";
        }
        EXPECT_EQ(steps, hops) << ex.id;
        EXPECT_EQ(Join(value), Join(ex.answer)) << ex.id;
      }
    }
  }
}

// MQAR: every query's answer (earlier ones inline, the last one the target) is the value paired
// with that key in the context, and `supervised` points at exactly those words.
TEST(Mqar, DenseAnswersAreTheBoundValues) {
  for (uint64_t i = 0; i < 50; ++i) {
    const Example ex = MustGenerate(Params(TaskType::kMqar, 256, std::nullopt, 41), i);
    std::map<std::string, std::string> bound;  // "KEY V V ." in the context
    for (const Span& s : ex.needles) {
      bound[std::string(ex.context[s.start])] =
          Join(Words(ex.context.begin() + s.start + 1, ex.context.begin() + s.start + s.length - 1));
    }
    ASSERT_EQ(bound.size(), 8u) << ex.id;
    const Words seq = TrainingSequence(ex);
    ASSERT_EQ(ex.supervised.size(), 8u) << ex.id;
    std::set<std::string> asked;
    for (const Span& s : ex.supervised) {
      // "what is KEY ? answer : V V" -> the key is 4 words before the answer.
      ASSERT_GE(s.start, 4);
      const std::string key(seq[s.start - 4]);
      EXPECT_EQ(seq[s.start - 1], ":");
      EXPECT_EQ(Join(Words(seq.begin() + s.start, seq.begin() + s.start + s.length)), bound[key])
          << ex.id << " key " << key;
      asked.insert(key);
    }
    EXPECT_EQ(asked.size(), 8u) << ex.id << ": every key is queried once";
    EXPECT_EQ(ex.supervised.back().start, ex.length());
  }
}

TEST(Prompt, QuestionFollowsContextAndEndsWithTheAnswerPrefix) {
  for (TaskType task : kAllTasks) {
    const Example ex = MustGenerate(Params(task, 512, 0.3, 2), 0);
    const Prompt p = FormatPrompt(ex);
    EXPECT_EQ(p.context_text, Join(ex.context));
    EXPECT_EQ(p.question_text, Join(ex.question) + " " + std::string(kAnswerPrefix));
    EXPECT_EQ(p.answer_text, Join(ex.answer));
    EXPECT_THAT(p.question_text, ::testing::StartsWith("what is"));
    EXPECT_THAT(p.question_text, ::testing::EndsWith("? answer :"));
    // The training sequence is context, then question, then prefix, then answer.
    const Words seq = TrainingSequence(ex);
    EXPECT_EQ(Join(seq), absl::StrCat(p.context_text, " ", p.question_text, " ", p.answer_text));
    EXPECT_EQ(Join(Words(seq.begin(), seq.begin() + static_cast<long>(ex.context.size()))),
              p.context_text);
    // The context holds no question or answer prefix.
    EXPECT_EQ(std::count(ex.context.begin(), ex.context.end(), "?"), 0) << ex.id;
    EXPECT_EQ(std::count(ex.context.begin(), ex.context.end(), "answer"), 0) << ex.id;
    EXPECT_EQ(std::count(ex.context.begin(), ex.context.end(), "what"), 0) << ex.id;
  }
}

TEST(Generate, BadParametersAreInvalidArgument) {
  auto code = [](TaskParams p) { return GenerateExample(p, 0).status().code(); };
  TaskParams p = Params(TaskType::kPasskey, 10, 0.5);
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Params(TaskType::kPasskey, 256, 1.5);
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Params(TaskType::kPasskey, 256, std::nan(""));
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Params(TaskType::kMultiKey, 256, 0.5);
  p.key_words = 3;
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Params(TaskType::kMqar, 4096, 0.5);
  p.num_keys = 65;  // more single-word keys than names
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Params(TaskType::kMultiKey, 64, 0.5);
  p.num_keys = 40;  // needles longer than the context
  EXPECT_EQ(code(p), absl::StatusCode::kInvalidArgument);
  p = Params(TaskType::kMqar, 1024, 0.5, 1, Split::kHeldOut);
  p.value_digits = 1;  // about one held-out one-digit value exists
  EXPECT_FALSE(GenerateExample(p, 0).ok());
}

// Runs the kvwire_tasks binary; returns its exit code.
int RunCli(const std::string& args) {
  const int status = std::system(absl::StrCat(KVWIRE_TASKS_CLI, " ", args, " 2>/dev/null").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Cli, WritesValidDeterministicJsonl) {
  const std::string dir = ::testing::TempDir();
  const std::string a = dir + "/kvwire_tasks_a.jsonl", b = dir + "/kvwire_tasks_b.jsonl";
  const std::string args =
      "--task all --length 256,512 --count 2 --seed 3 --split heldout --depths 0,0.5,1 --out ";
  ASSERT_EQ(RunCli(args + a), 0);
  ASSERT_EQ(RunCli(args + b), 0);
  const std::string text = ReadFile(a);
  EXPECT_EQ(text, ReadFile(b));
  std::istringstream lines(text);
  std::string line;
  std::set<std::string> ids;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* field : {"id", "task", "context", "question", "split"}) {
      ASSERT_TRUE(j.contains(field) && j[field].is_string()) << field;
    }
    ASSERT_TRUE(j["answers"].is_array() && j["answers"].size() == 1 && j["answers"][0].is_string());
    ASSERT_TRUE(j["depth"].is_number() && j["length"].is_number_integer());
    EXPECT_EQ(j["split"], "heldout");
    EXPECT_TRUE(ids.insert(j["id"].get<std::string>()).second) << "duplicate id";
    const std::string context = j["context"], question = j["question"];
    EXPECT_NE(context.find(j["answers"][0].get<std::string>()), std::string::npos);
    const std::vector<std::string> words = absl::StrSplit(context + " " + question, ' ');
    EXPECT_EQ(static_cast<int>(words.size()), j["length"].get<int>());
  }
  EXPECT_EQ(n, 5 * 2 * 3 * 2);  // tasks x lengths x depths x count

  // The binary writes what the library generates.
  TaskParams p = Params(TaskType::kPasskey, 256, 0.0, 3, Split::kHeldOut);
  EXPECT_EQ(text.substr(0, text.find('\n')), ToJsonLine(MustGenerate(p, 0)));

  EXPECT_EQ(RunCli("--task nope --out " + a), 2);
  EXPECT_EQ(RunCli("--task passkey --length 8 --out " + a), 2);
  EXPECT_EQ(RunCli("--task passkey --depths 0,2 --out " + a), 2);
}

}  // namespace
}  // namespace kvwire::tasks
