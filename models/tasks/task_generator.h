// Long-context retrieval tasks with known answers (RULER / needle-in-a-haystack style), built from
// a closed word-level synthetic language, for training and evaluating the bundled target/scout
// model pair without reaching any hub.
//
// Why a closed synthetic language: a small model trained on a 2-core machine only learns retrieval
// when the lookup is a clean content match (../shared/TRAINING-NOTES.md). So every word belongs to
// exactly one of four disjoint pools, and the needle's words never occur in the filler:
//   kFiller  lexical words of the filler grammar (determiners, nouns, verbs, ...),
//   kKey     the things a question asks about: name words (keys, variable names), QA objects and
//            QA attribute names,
//   kValue   the things an answer consists of: the digits 0-9 and QA attribute values,
//   kMarker  template words ("the", "pass", "key", "is", ...) and punctuation. "." is the only
//            marker the filler uses (it ends filler sentences).
// Text is lower case, one word per space-separated token, so a word-level tokenizer gives one token
// per word and a byte-level BPE built over Vocabulary() sees the same tokens every time.
//
// Split rule (held-out items never appear in training): every answer-bearing item has a canonical
// string; it is held out iff SplitHash(canonical) % kHeldOutModulus == 0 (a fixed keyed hash, so the
// partition is a pure function of the item and never changes between runs or machines):
//   value (a run of digits)         "v:" + digits joined by spaces, e.g. "v:4 8 1 2 7"
//   key of two or more name words   "k:" + words joined by spaces, e.g. "k:alpha kilo"
//   QA fact                         "f:" + object + "|" + attribute + "|" + value
// An example of split S contains only values, multi-word keys and facts of split S (distractors
// included). Single-word keys (the vartrack and mqar defaults) are deliberately not partitioned:
// withholding a vocabulary word would leave its embedding untrained, which measures nothing about
// retrieval; those tasks are held out through their values (and so through their bindings).
//
// Determinism: each example is drawn from its own xoshiro256** stream seeded from (seed, params,
// index) with splitmix64; integers come from Lemire's bounded method with rejection, never from
// std:: distributions, so the output is byte-identical across standard libraries and platforms.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvwire::tasks {

enum class TaskType {
  kPasskey,   // one pass key (digits) in filler
  kMultiKey,  // many "the special number for KEY is VALUE ." needles, one asked
  kVarTrack,  // chains "var B = A ." ending in a value, with distractor chains; ask the value
  kQa,        // templated fact sentences "the color of the box is green ."; ask one attribute
  kMqar,      // dense associative recall: "KEY VALUE ." pairs in filler, then every key queried
};
inline constexpr TaskType kAllTasks[] = {TaskType::kPasskey, TaskType::kMultiKey,
                                         TaskType::kVarTrack, TaskType::kQa, TaskType::kMqar};

enum class Split { kTrain, kHeldOut };
enum class WordPool { kFiller, kKey, kValue, kMarker };

std::string_view TaskName(TaskType task);  // "passkey", "multikey", "vartrack", "qa", "mqar"
absl::StatusOr<TaskType> ParseTaskType(std::string_view name);
std::string_view SplitName(Split split);  // "train", "heldout"
absl::StatusOr<Split> ParseSplit(std::string_view name);

// ---- Vocabulary -------------------------------------------------------------------------------

// Every word the generator can emit, each once, in a fixed order (markers, keys, values, filler):
// the list a tokenizer.json for the bundled models is built from.
const std::vector<std::string>& Vocabulary();
// The words of one pool, in vocabulary order.
const std::vector<std::string>& PoolWords(WordPool pool);
// Which pool a word belongs to; nullopt for words outside the vocabulary.
std::optional<WordPool> PoolOf(std::string_view word);
// Finer classes used by tests and tools (all subsets of the pools above).
const std::vector<std::string>& NameWords();       // kKey: keys and variable names
const std::vector<std::string>& DigitWords();      // kValue: "0".."9"
const std::vector<std::string>& QaObjectWords();   // kKey
const std::vector<std::string>& QaAttributeWords();  // kKey
// kValue words an attribute can take; empty for an unknown attribute.
const std::vector<std::string>& QaAttributeValues(std::string_view attribute);

// ---- Split rule -------------------------------------------------------------------------------

inline constexpr uint64_t kHeldOutModulus = 10;
uint64_t SplitHash(std::string_view canonical);
Split ValueSplit(const std::vector<std::string_view>& digits);
// Keys of one word are never partitioned (see above): this returns kTrain for them, and callers
// treat single-word keys as shared by both splits.
Split KeySplit(const std::vector<std::string_view>& words);
Split FactSplit(std::string_view object, std::string_view attribute, std::string_view value);

// ---- Generation -------------------------------------------------------------------------------

// Zero for an integer parameter means "the task's default" (documented per field).
struct TaskParams {
  TaskType task = TaskType::kPasskey;
  Split split = Split::kTrain;
  uint64_t seed = 0;
  // Target prompt length in words: context + question + the answer prefix (the prefill a model
  // sees). Met exactly when the needles fit; kMinLength..kMaxLength.
  int length = 1024;
  // Where the asked needle starts, as a fraction of the free room: 0 = first word of the context,
  // 1 = it ends the context. nullopt draws a fresh depth per example (what training should use, so
  // that no fixed-offset shortcut solves the task).
  std::optional<double> depth;
  // multikey: needles (default 8); vartrack: chains incl. the asked one (default 3); qa: facts
  // (default 4); mqar: key-value pairs, all queried (default 8). Unused by passkey.
  int num_keys = 0;
  int num_hops = 0;      // vartrack: assignments after the root value (default 4)
  int value_digits = 0;  // digits per value, 1..9 (default 5; mqar 3: two digits leave too few
                         // held-out values for 8 distinct pairs)
  int key_words = 0;     // name words per key, 1 or 2 (multikey 2; vartrack and mqar 1)
};
inline constexpr int kMinLength = 32;
inline constexpr int kMaxLength = 1 << 20;

// A half-open word range [start, start + length).
struct Span {
  int start = 0;
  int length = 0;
};

struct Example {
  std::string id;
  TaskType task = TaskType::kPasskey;
  Split split = Split::kTrain;
  // Words; each view points into the static vocabulary, valid for the program's lifetime.
  std::vector<std::string_view> context;
  std::vector<std::string_view> question;  // without the answer prefix
  std::vector<std::string_view> answer;
  double depth = 0;          // the requested depth, or the one drawn for this example
  Span needle;               // the asked needle in `context` (vartrack: the root assignment)
  int answer_position = -1;  // first word of the answer's only occurrence in `context`
  std::vector<Span> needles;  // every inserted needle, in context order (asked one included)
  // Answer word spans in TrainingSequence(): the final answer, and for mqar also every earlier
  // query's answer inside the question, so a trainer can put loss on all of them.
  std::vector<Span> supervised;

  // Words a model prefills: context + question + answer prefix.
  int length() const { return static_cast<int>(context.size() + question.size()) + 2; }
  // needle.start / (context words - needle words): the depth actually realised.
  double actual_depth() const;
};

// The answer prefix ends every question, so the model's next words are the answer.
inline constexpr std::string_view kAnswerPrefix = "answer :";

absl::StatusOr<Example> GenerateExample(const TaskParams& params, uint64_t index);

// Text with the question after the context, as in real long-context prompts (SnapKV's
// observation window and Q2C's question span then cover the question). question_text ends with
// kAnswerPrefix; the full prompt is context_text + " " + question_text.
struct Prompt {
  std::string context_text;
  std::string question_text;
  std::string answer_text;
};
Prompt FormatPrompt(const Example& example);

// context + question + answer prefix + answer, the sequence `supervised` indexes.
std::vector<std::string_view> TrainingSequence(const Example& example);

// One JSONL record (no trailing newline): id, task, split, context, question (with the answer
// prefix), answers, depth, length, needle_position, answer_spans (word [start, length] pairs over
// the space-separated context + question + answer).
std::string ToJsonLine(const Example& example);

}  // namespace kvwire::tasks
