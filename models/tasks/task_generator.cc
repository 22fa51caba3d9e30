#include "models/tasks/task_generator.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kvwire::tasks {
namespace {

// Abseil on Debian has its own string_view; absl string functions take only that one.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

using Words = std::vector<std::string_view>;

// ---- Word lists -------------------------------------------------------------------------------
// Pools are disjoint by construction (the test checks it). The filler avoids every template word
// ("the", "is", "of", "for", "it", ...) so that the needle is a one-token content match, and its
// nouns avoid QA objects and attribute values so no fact word turns up in the filler.

constexpr std::string_view kPeriod = ".";
constexpr std::string_view kMarkers[] = {".",   "?",        ":",  "=",    "the",    "pass",
                                         "key", "is",       "remember", "it",   "what", "answer",
                                         "special", "number", "for", "var",  "value",  "of"};
enum MarkerIndex {
  kDot, kQuestionMark, kColon, kEquals, kThe, kPass, kKeyWord, kIs, kRemember, kIt, kWhat,
  kAnswer, kSpecial, kNumber, kFor, kVar, kValueWord, kOf
};
std::string_view M(MarkerIndex i) { return kMarkers[i]; }

constexpr std::string_view kNames[] = {
    // NATO alphabet
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
    // Greek letters not already above
    "beta", "gamma", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi",
    "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega",
    // planets and elements
    "mercury", "venus", "mars", "jupiter", "saturn", "uranus", "neptune", "pluto", "argon",
    "boron", "carbon", "helium", "neon", "radon", "xenon", "zinc"};
constexpr std::string_view kObjects[] = {"box",  "lamp", "chair",  "cup",    "door",   "kite",
                                         "boat", "coat", "bell",   "bottle", "drum",   "vase",
                                         "ring", "hat",  "bag",    "clock",  "pen",    "shoe",
                                         "flag", "rope", "table",  "mirror", "basket", "candle"};
constexpr std::string_view kAttributes[] = {"color", "material", "shape", "size", "pattern"};
constexpr std::string_view kColors[] = {"red",   "green", "blue",  "yellow", "purple", "orange",
                                        "white", "black", "brown", "pink",   "gray",   "silver"};
constexpr std::string_view kMaterials[] = {"wood",    "metal", "glass",   "stone", "paper",
                                           "cloth",   "plastic", "clay",  "leather", "wool"};
constexpr std::string_view kShapes[] = {"round",  "square",  "flat",   "oval",
                                        "curved", "pointed", "hollow", "triangular"};
constexpr std::string_view kSizes[] = {"tiny", "small", "medium", "large", "huge", "giant"};
constexpr std::string_view kPatterns[] = {"striped", "dotted",  "plain",
                                          "checked", "spotted", "woven"};
constexpr std::string_view kDigits[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

constexpr std::string_view kDeterminers[] = {"one",   "this", "that", "every", "some",    "each",
                                             "our",   "their", "his", "her",   "my",      "your",
                                             "another", "no"};
constexpr std::string_view kPronouns[] = {"they",     "we",     "she",    "he",
                                          "someone",  "everyone", "nobody", "you"};
constexpr std::string_view kAdjectives[] = {
    "quiet",   "old",     "young",  "busy",   "calm",    "bright",   "dark",    "gentle",
    "early",   "late",    "happy",  "lazy",   "brave",   "clever",   "proud",   "famous",
    "distant", "nearby",  "ancient", "modern", "rainy",  "sunny",    "windy",   "empty",
    "crowded", "hungry",  "tired",  "noisy",  "friendly", "strange", "simple",  "humble",
    "lucky",   "careful", "patient", "wild",  "warm",    "cold",     "polite",  "curious"};
constexpr std::string_view kNouns[] = {
    "farmer",  "teacher", "baker",   "sailor",  "doctor",   "child",   "neighbor", "traveler",
    "merchant", "poet",   "soldier", "village", "river",    "garden",  "window",   "road",
    "forest",  "kitchen", "letter",  "mountain", "bridge",  "market",  "harbor",   "field",
    "valley",  "island",  "city",    "school",  "library",  "station", "tower",    "castle",
    "meadow",  "orchard", "cottage", "street",  "morning",  "evening", "winter",   "summer",
    "journey", "story",   "song",    "dream",   "horse",    "dog",     "cat",      "bird",
    "tree",    "flower",  "cloud",   "storm",   "hill",     "lake",    "friend",   "stranger",
    "painter", "farm",    "wagon",   "ship"};
constexpr std::string_view kTransitiveVerbs[] = {
    "saw",     "found",  "carried", "painted",  "followed", "visited", "opened",  "built",
    "watched", "cleaned", "crossed", "borrowed", "described", "admired", "repaired", "helped",
    "greeted", "noticed", "praised", "called",  "chased",   "met",     "reached", "explored",
    "wrote",   "sold",   "bought",  "planted",  "fed",      "guarded"};
constexpr std::string_view kIntransitiveVerbs[] = {
    "slept",   "waited",   "laughed", "rested", "smiled",  "wandered", "paused",
    "sang",    "danced",   "arrived", "departed", "listened", "worked", "played",
    "hurried", "stayed",   "returned", "whispered", "shivered", "nodded"};
constexpr std::string_view kPrepositions[] = {"near",   "under",  "across", "behind", "beside",
                                              "through", "along", "toward", "around", "beyond",
                                              "inside", "above",  "below"};
constexpr std::string_view kAdverbs[] = {"slowly", "quietly",  "later",   "again",    "often",
                                         "soon",   "happily",  "carefully", "today",  "yesterday",
                                         "outside", "together", "gladly",  "briefly"};
constexpr std::string_view kInterjections[] = {"indeed", "well", "anyway", "meanwhile", "alas",
                                               "still"};

template <size_t N>
void AppendAll(const std::string_view (&list)[N], std::vector<std::string>* out) {
  for (std::string_view w : list) out->emplace_back(w);
}

struct Lexicon {
  std::vector<std::string> vocabulary;
  std::vector<std::string> pools[4];
  std::vector<std::string> names, digits, objects, attributes;
  std::vector<std::string> attribute_values[std::size(kAttributes)];
  absl::flat_hash_map<std::string, WordPool> pool_of;

  Lexicon() {
    AppendAll(kMarkers, &pools[static_cast<int>(WordPool::kMarker)]);
    AppendAll(kNames, &names);
    AppendAll(kObjects, &objects);
    AppendAll(kAttributes, &attributes);
    for (auto* list : {&names, &objects, &attributes}) {
      auto& keys = pools[static_cast<int>(WordPool::kKey)];
      keys.insert(keys.end(), list->begin(), list->end());
    }
    AppendAll(kDigits, &digits);
    AppendAll(kColors, &attribute_values[0]);
    AppendAll(kMaterials, &attribute_values[1]);
    AppendAll(kShapes, &attribute_values[2]);
    AppendAll(kSizes, &attribute_values[3]);
    AppendAll(kPatterns, &attribute_values[4]);
    auto& values = pools[static_cast<int>(WordPool::kValue)];
    values = digits;
    for (const auto& list : attribute_values) values.insert(values.end(), list.begin(), list.end());
    auto& filler = pools[static_cast<int>(WordPool::kFiller)];
    AppendAll(kDeterminers, &filler);
    AppendAll(kPronouns, &filler);
    AppendAll(kAdjectives, &filler);
    AppendAll(kNouns, &filler);
    AppendAll(kTransitiveVerbs, &filler);
    AppendAll(kIntransitiveVerbs, &filler);
    AppendAll(kPrepositions, &filler);
    AppendAll(kAdverbs, &filler);
    AppendAll(kInterjections, &filler);
    // Vocabulary order: markers, keys, values, filler. A word listed twice (a bug the tests catch
    // by comparing sizes) keeps its first pool.
    for (WordPool p : {WordPool::kMarker, WordPool::kKey, WordPool::kValue, WordPool::kFiller}) {
      for (const std::string& w : pools[static_cast<int>(p)]) {
        if (pool_of.emplace(w, p).second) vocabulary.push_back(w);
      }
    }
  }
};

const Lexicon& Lex() {
  static const Lexicon* const lexicon = new Lexicon();
  return *lexicon;
}

// ---- Randomness -------------------------------------------------------------------------------

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// xoshiro256** (Blackman and Vigna), seeded by splitmix64 as its authors recommend.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : s_) {
      seed += 0x9e3779b97f4a7c15ULL;
      s = SplitMix64(seed);
    }
  }
  uint64_t Next() {
    const uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = std::rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n), n > 0: Lemire's multiply-shift with rejection (exactly uniform).
  uint64_t Below(uint64_t n) {
    unsigned __int128 m = static_cast<unsigned __int128>(Next()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(Next()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
  int Int(int n) { return static_cast<int>(Below(static_cast<uint64_t>(n))); }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i > 1; --i) std::swap((*v)[i - 1], (*v)[Below(i)]);
  }
  template <size_t N>
  std::string_view Pick(const std::string_view (&list)[N]) {
    return list[Below(N)];
  }

 private:
  uint64_t s_[4];
};

// ---- Filler grammar ---------------------------------------------------------------------------
// Sentences "SUBJECT VERB [OBJECT] [PREP-PHRASE]* [ADVERB] ." of an exact word count, so the
// context hits its target length exactly and needles sit at exact positions. Past-tense verbs
// sidestep agreement.

void AppendNounPhrase(Rng& rng, int words, Words* out) {  // 2: det noun; 3: det adj noun
  out->push_back(rng.Pick(kDeterminers));
  if (words == 3) out->push_back(rng.Pick(kAdjectives));
  out->push_back(rng.Pick(kNouns));
}

// A tail of r words is buildable from 3- and 4-word prepositional phrases plus at most one
// adverb unless r == 2.
bool TailFillable(int r) { return r >= 0 && r != 2; }

void AppendSentence(Rng& rng, int len, Words* out) {  // 3 <= len <= 14
  const int body = len - 1;
  const int subject = 1 + rng.Int(std::min(3, body - 1));
  int rest = body - subject - 1;
  int object = 0;
  if (rest == 2) {
    object = 2;
  } else if (rest >= 2 && rng.Int(10) < 6) {
    int choices[2];
    int n = 0;
    for (int size : {2, 3}) {
      if (size <= rest && TailFillable(rest - size)) choices[n++] = size;
    }
    if (n > 0) object = choices[rng.Int(n)];
  }
  if (subject == 1) {
    out->push_back(rng.Pick(kPronouns));
  } else {
    AppendNounPhrase(rng, subject, out);
  }
  out->push_back(object > 0 ? rng.Pick(kTransitiveVerbs) : rng.Pick(kIntransitiveVerbs));
  if (object > 0) AppendNounPhrase(rng, object, out);
  rest -= object;
  bool adverb = false;
  while (rest > 0) {
    if (rest == 1) {
      adverb = true;
      break;
    }
    int choices[2];
    int n = 0;
    for (int size : {3, 4}) {
      if (size <= rest && TailFillable(rest - size)) choices[n++] = size;
    }
    const int size = choices[rng.Int(n)];  // n >= 1 for every rest >= 3
    out->push_back(rng.Pick(kPrepositions));
    AppendNounPhrase(rng, size - 1, out);
    rest -= size;
  }
  if (adverb) out->push_back(rng.Pick(kAdverbs));
  out->push_back(kPeriod);
}

// Exactly `words` filler words. Gaps of 1 or 2 words (between two needles) become an
// interjection, with a period when there is room.
void AppendFiller(Rng& rng, int words, Words* out) {
  if (words <= 0) return;
  if (words <= 2) {
    out->push_back(rng.Pick(kInterjections));
    if (words == 2) out->push_back(kPeriod);
    return;
  }
  while (words > 0) {
    const int len = words <= 14 ? words : std::min(5 + rng.Int(9), words - 3);
    AppendSentence(rng, len, out);
    words -= len;
  }
}

// ---- Split membership -------------------------------------------------------------------------

std::string Canonical(std::string_view prefix, const Words& words) {
  return absl::StrCat(AV(prefix), absl::StrJoin(words, " ", [](std::string* out, std::string_view w) {
                        out->append(w.data(), w.size());
                      }));
}

// Every value of `digits` digits in `split`, for digits <= 4 (cheap to enumerate; lets a small
// value space be sampled without replacement and checked for size up front).
const std::vector<Words>& SmallValues(int digits, Split split) {
  static const auto* const table = [] {
    auto* t = new std::vector<Words>[5][2];
    for (int d = 1; d <= 4; ++d) {
      int count = 1;
      for (int i = 0; i < d; ++i) count *= 10;
      for (int v = 0; v < count; ++v) {
        Words w(d);
        for (int i = d - 1, x = v; i >= 0; --i, x /= 10) w[i] = kDigits[x % 10];
        t[d][static_cast<int>(ValueSplit(w))].push_back(std::move(w));
      }
    }
    return t;
  }();
  return table[digits][static_cast<int>(split)];
}

struct Fact {
  std::string_view object, attribute, value;
};

const std::vector<Fact>& FactsOf(Split split) {
  static const auto* const table = [] {
    auto* t = new std::vector<Fact>[2];
    const Lexicon& lex = Lex();
    for (std::string_view object : kObjects) {
      for (size_t a = 0; a < std::size(kAttributes); ++a) {
        for (const std::string& value : lex.attribute_values[a]) {
          // Views into the lexicon's strings, which live for the program.
          Fact f{object, kAttributes[a], value};
          t[static_cast<int>(FactSplit(f.object, f.attribute, f.value))].push_back(f);
        }
      }
    }
    return t;
  }();
  return table[static_cast<int>(split)];
}

// Distinct values of one split. `used` holds canonical strings already taken in this example.
absl::StatusOr<Words> SampleValue(Rng& rng, Split split, int digits, std::set<std::string>* used) {
  if (digits <= 4) {
    const std::vector<Words>& all = SmallValues(digits, split);
    if (used->size() >= all.size()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "only %d %s values of %d digits exist; use more digits or fewer keys",
          static_cast<int>(all.size()), AV(SplitName(split)), digits));
    }
    // used->size() < all.size(), so this terminates; expected tries stay small because callers
    // ask for at most a few hundred values.
    for (;;) {
      const Words& w = all[rng.Below(all.size())];
      if (used->insert(Canonical("v:", w)).second) return w;
    }
  }
  for (int attempt = 0; attempt < 100000; ++attempt) {
    Words w(digits);
    for (auto& d : w) d = kDigits[rng.Below(10)];
    if (ValueSplit(w) != split) continue;
    if (used->insert(Canonical("v:", w)).second) return w;
  }
  return absl::ResourceExhaustedError("could not draw a distinct value");
}

// Distinct keys (or variable names). Multi-word keys follow the split rule; single words cannot
// (see the header) and are drawn from all names.
absl::StatusOr<std::vector<Words>> SampleKeys(Rng& rng, Split split, int key_words, int count) {
  std::vector<Words> keys;
  if (key_words == 1) {
    if (count > static_cast<int>(std::size(kNames))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%d single-word keys requested but only %d names exist; use key_words=2", count,
          static_cast<int>(std::size(kNames))));
    }
    std::vector<int> order(std::size(kNames));
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    rng.Shuffle(&order);
    for (int i = 0; i < count; ++i) keys.push_back({kNames[order[i]]});
    return keys;
  }
  std::set<std::string> used;
  for (int attempt = 0; static_cast<int>(keys.size()) < count; ++attempt) {
    if (attempt > 1000 * count) return absl::ResourceExhaustedError("could not draw distinct keys");
    Words w(key_words);
    for (auto& part : w) part = rng.Pick(kNames);
    if (KeySplit(w) != split) continue;
    if (used.insert(Canonical("k:", w)).second) keys.push_back(std::move(w));
  }
  return keys;
}

// ---- Task drafts ------------------------------------------------------------------------------

struct Resolved {
  TaskType task;
  Split split;
  uint64_t seed;
  int length, num_keys, num_hops, value_digits, key_words;
  std::optional<double> depth;
};

// What a task contributes before placement: its needles (one of them asked), question, answer.
struct Draft {
  std::vector<Words> needles;
  size_t asked = 0;
  int answer_offset = 0;              // within the asked needle
  Words question, answer;
  std::vector<Span> question_answers;  // mqar: earlier answers inside the question
};

void Append(Words* out, const Words& more) { out->insert(out->end(), more.begin(), more.end()); }

absl::StatusOr<Draft> DraftPasskey(Rng& rng, const Resolved& p) {
  std::set<std::string> used;
  absl::StatusOr<Words> value = SampleValue(rng, p.split, p.value_digits, &used);
  if (!value.ok()) return value.status();
  Draft d;
  Words needle = {M(kThe), M(kPass), M(kKeyWord), M(kIs)};
  d.answer_offset = static_cast<int>(needle.size());
  Append(&needle, *value);
  Append(&needle, {M(kDot), M(kRemember), M(kIt), M(kDot)});
  d.needles.push_back(std::move(needle));
  d.question = {M(kWhat), M(kIs), M(kThe), M(kPass), M(kKeyWord), M(kQuestionMark)};
  d.answer = *value;
  return d;
}

absl::StatusOr<Draft> DraftMultiKey(Rng& rng, const Resolved& p) {
  absl::StatusOr<std::vector<Words>> keys = SampleKeys(rng, p.split, p.key_words, p.num_keys);
  if (!keys.ok()) return keys.status();
  std::set<std::string> used;
  Draft d;
  for (const Words& key : *keys) {
    absl::StatusOr<Words> value = SampleValue(rng, p.split, p.value_digits, &used);
    if (!value.ok()) return value.status();
    Words needle = {M(kThe), M(kSpecial), M(kNumber), M(kFor)};
    Append(&needle, key);
    needle.push_back(M(kIs));
    if (d.needles.empty()) {
      d.answer_offset = static_cast<int>(needle.size());
      d.answer = *value;
    }
    Append(&needle, *value);
    needle.push_back(M(kDot));
    d.needles.push_back(std::move(needle));
  }
  d.asked = 0;  // placement shuffles the rest around it, so index 0 carries no position
  d.question = {M(kWhat), M(kIs), M(kThe), M(kSpecial), M(kNumber), M(kFor)};
  Append(&d.question, (*keys)[0]);
  d.question.push_back(M(kQuestionMark));
  return d;
}

// Variable tracking, "value of the last variable" form: chains
//   var N0 = V .   var N1 = N0 .   ...   var Nh = N(h-1) .
// are declarations, so their order in the context is free (placement scatters them); answering
// takes h hops back from the asked name to the digits. The answer digits occur once, in the asked
// chain's root, which is the needle placed at the requested depth.
absl::StatusOr<Draft> DraftVarTrack(Rng& rng, const Resolved& p) {
  const int chain_len = p.num_hops + 1;
  absl::StatusOr<std::vector<Words>> names =
      SampleKeys(rng, p.split, p.key_words, p.num_keys * chain_len);
  if (!names.ok()) return names.status();
  std::set<std::string> used;
  Draft d;
  for (int c = 0; c < p.num_keys; ++c) {
    absl::StatusOr<Words> value = SampleValue(rng, p.split, p.value_digits, &used);
    if (!value.ok()) return value.status();
    const Words* chain = &(*names)[static_cast<size_t>(c * chain_len)];
    Words root = {M(kVar)};
    Append(&root, chain[0]);
    root.push_back(M(kEquals));
    if (c == 0) {
      d.asked = d.needles.size();
      d.answer_offset = static_cast<int>(root.size());
      d.answer = *value;
    }
    Append(&root, *value);
    root.push_back(M(kDot));
    d.needles.push_back(std::move(root));
    for (int h = 1; h < chain_len; ++h) {
      Words hop = {M(kVar)};
      Append(&hop, chain[h]);
      hop.push_back(M(kEquals));
      Append(&hop, chain[h - 1]);
      hop.push_back(M(kDot));
      d.needles.push_back(std::move(hop));
    }
  }
  d.question = {M(kWhat), M(kIs), M(kThe), M(kValueWord), M(kOf), M(kVar)};
  Append(&d.question, (*names)[static_cast<size_t>(chain_len - 1)]);
  d.question.push_back(M(kQuestionMark));
  return d;
}

// Facts about distinct (object, attribute) pairs with pairwise distinct values, so the answer word
// occurs exactly once and the question has one answer.
absl::StatusOr<Draft> DraftQa(Rng& rng, const Resolved& p) {
  const std::vector<Fact>& pool = FactsOf(p.split);
  std::vector<Fact> facts;
  for (int attempt = 0; static_cast<int>(facts.size()) < p.num_keys; ++attempt) {
    if (attempt > 10000) return absl::ResourceExhaustedError("could not draw distinct facts");
    const Fact& f = pool[rng.Below(pool.size())];
    const bool clash = std::any_of(facts.begin(), facts.end(), [&](const Fact& g) {
      return g.value == f.value || (g.object == f.object && g.attribute == f.attribute);
    });
    if (!clash) facts.push_back(f);
  }
  Draft d;
  for (const Fact& f : facts) {
    d.needles.push_back({M(kThe), f.attribute, M(kOf), M(kThe), f.object, M(kIs), f.value, M(kDot)});
  }
  d.asked = 0;
  d.answer_offset = 6;
  d.answer = {facts[0].value};
  d.question = {M(kWhat), M(kIs), M(kThe), facts[0].attribute, M(kOf), M(kThe), facts[0].object,
                M(kQuestionMark)};
  return d;
}

// MQAR: "KEY VALUE ." pairs scattered in the filler; the question queries every key in random
// order, each earlier query answered in place ("what is KEY ? answer : VALUE ."), the last one
// left to the model. All answers are supervised positions of the training sequence.
absl::StatusOr<Draft> DraftMqar(Rng& rng, const Resolved& p) {
  absl::StatusOr<std::vector<Words>> keys = SampleKeys(rng, p.split, p.key_words, p.num_keys);
  if (!keys.ok()) return keys.status();
  std::set<std::string> used;
  std::vector<Words> values;
  Draft d;
  for (const Words& key : *keys) {
    absl::StatusOr<Words> value = SampleValue(rng, p.split, p.value_digits, &used);
    if (!value.ok()) return value.status();
    Words needle = key;
    Append(&needle, *value);
    needle.push_back(M(kDot));
    d.needles.push_back(std::move(needle));
    values.push_back(*std::move(value));
  }
  d.asked = 0;
  d.answer_offset = p.key_words;
  d.answer = values[0];
  std::vector<int> order;
  for (int i = 1; i < p.num_keys; ++i) order.push_back(i);
  rng.Shuffle(&order);
  for (int i : order) {
    d.question.push_back(M(kWhat));
    d.question.push_back(M(kIs));
    Append(&d.question, (*keys)[i]);
    Append(&d.question, {M(kQuestionMark), M(kAnswer), M(kColon)});
    d.question_answers.push_back(
        {static_cast<int>(d.question.size()), static_cast<int>(values[i].size())});
    Append(&d.question, values[i]);
    d.question.push_back(M(kDot));
  }
  Append(&d.question, {M(kWhat), M(kIs)});
  Append(&d.question, (*keys)[0]);
  d.question.push_back(M(kQuestionMark));
  return d;
}

// ---- Placement --------------------------------------------------------------------------------

// Lays `needles` into exactly `context_len` words: the asked needle starts at
// round(depth * (context_len - its length)); the others go, in random order, into the filler
// before or after it (each side chosen with probability proportional to its free room) at random
// offsets. Returns each needle's span, indexed like `needles`.
absl::StatusOr<std::vector<Span>> Place(Rng& rng, int context_len, const std::vector<Words>& needles,
                                        size_t asked, double depth, Words* context) {
  int total = 0;
  for (const Words& n : needles) total += static_cast<int>(n.size());
  if (total > context_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "length too short: the needles need %d context words, %d are left after the question",
        total, context_len));
  }
  const int asked_len = static_cast<int>(needles[asked].size());
  const int asked_start =
      static_cast<int>(std::llround(depth * static_cast<double>(context_len - asked_len)));
  const int room[2] = {asked_start, context_len - asked_start - asked_len};

  std::vector<int> others;
  for (size_t i = 0; i < needles.size(); ++i) {
    if (i != asked) others.push_back(static_cast<int>(i));
  }
  std::vector<int> side[2];
  bool placed = false;
  for (int attempt = 0; attempt < 32 && !placed; ++attempt) {
    rng.Shuffle(&others);
    side[0].clear();
    side[1].clear();
    int free_words[2] = {room[0], room[1]};
    placed = true;
    for (int i : others) {
      const int len = static_cast<int>(needles[i].size());
      const bool fits[2] = {len <= free_words[0], len <= free_words[1]};
      int s;
      if (fits[0] && fits[1]) {
        s = rng.Below(static_cast<uint64_t>(free_words[0] + free_words[1])) <
                    static_cast<uint64_t>(free_words[0])
                ? 0
                : 1;
      } else if (fits[0] || fits[1]) {
        s = fits[0] ? 0 : 1;
      } else {
        placed = false;
        break;
      }
      side[s].push_back(i);
      free_words[s] -= len;
    }
  }
  if (!placed) {
    return absl::ResourceExhaustedError(
        "the needles do not fit around the asked one at this depth; raise the length");
  }

  std::vector<Span> spans(needles.size());
  context->clear();
  context->reserve(static_cast<size_t>(context_len));
  auto emit_needle = [&](int i) {
    spans[i] = {static_cast<int>(context->size()), static_cast<int>(needles[i].size())};
    Append(context, needles[i]);
  };
  auto emit_side = [&](int s) {
    int filler = room[s];
    for (int i : side[s]) filler -= static_cast<int>(needles[i].size());
    std::vector<int> cuts;
    for (size_t k = 0; k < side[s].size(); ++k) cuts.push_back(rng.Int(filler + 1));
    std::sort(cuts.begin(), cuts.end());
    int at = 0;
    for (size_t k = 0; k < side[s].size(); ++k) {
      AppendFiller(rng, cuts[k] - at, context);
      at = cuts[k];
      emit_needle(side[s][k]);
    }
    AppendFiller(rng, filler - at, context);
  };
  emit_side(0);
  emit_needle(static_cast<int>(asked));
  emit_side(1);
  return spans;
}

absl::StatusOr<Resolved> Resolve(const TaskParams& params) {
  Resolved r{params.task, params.split,   params.seed,      params.length,
             params.num_keys, params.num_hops, params.value_digits, params.key_words,
             params.depth};
  if (r.length < kMinLength || r.length > kMaxLength) {
    return absl::InvalidArgumentError(
        absl::StrFormat("length %d outside [%d, %d]", r.length, kMinLength, kMaxLength));
  }
  if (r.depth.has_value() && !(*r.depth >= 0.0 && *r.depth <= 1.0)) {
    return absl::InvalidArgumentError("depth must be in [0, 1]");
  }
  int default_keys = 1, max_keys = 1;
  switch (r.task) {
    case TaskType::kPasskey: default_keys = 1; max_keys = 1; break;
    case TaskType::kMultiKey: default_keys = 8; max_keys = 1024; break;
    case TaskType::kVarTrack: default_keys = 3; max_keys = 64; break;
    case TaskType::kQa: default_keys = 4; max_keys = 12; break;
    case TaskType::kMqar: default_keys = 8; max_keys = 1024; break;
  }
  if (r.task == TaskType::kPasskey) r.num_keys = 1;
  if (r.num_keys == 0) r.num_keys = default_keys;
  if (r.num_keys < 1 || r.num_keys > max_keys) {
    return absl::InvalidArgumentError(absl::StrFormat("num_keys %d outside [1, %d] for %s",
                                                      r.num_keys, max_keys, AV(TaskName(r.task))));
  }
  if (r.num_hops == 0) r.num_hops = 4;
  if (r.num_hops < 1 || r.num_hops > 64) {
    return absl::InvalidArgumentError("num_hops outside [1, 64]");
  }
  if (r.value_digits == 0) r.value_digits = r.task == TaskType::kMqar ? 3 : 5;
  if (r.value_digits < 1 || r.value_digits > 9) {
    return absl::InvalidArgumentError("value_digits outside [1, 9]");
  }
  if (r.key_words == 0) r.key_words = r.task == TaskType::kMultiKey ? 2 : 1;
  if (r.key_words < 1 || r.key_words > 2) return absl::InvalidArgumentError("key_words must be 1 or 2");
  return r;
}

// Each example has its own stream, a hash of everything that defines it, so example i does not
// depend on which examples were generated before it.
uint64_t ExampleSeed(const Resolved& r, uint64_t index) {
  uint64_t h = SplitMix64(r.seed ^ 0x6b7677697265746bULL);
  for (uint64_t field :
       {static_cast<uint64_t>(r.task), static_cast<uint64_t>(r.split),
        static_cast<uint64_t>(r.length), static_cast<uint64_t>(r.num_keys),
        static_cast<uint64_t>(r.num_hops), static_cast<uint64_t>(r.value_digits),
        static_cast<uint64_t>(r.key_words),
        r.depth.has_value() ? std::bit_cast<uint64_t>(*r.depth) : uint64_t{0x7261646e6f6d}, index}) {
    h = SplitMix64(h ^ field);
  }
  return h;
}

void AppendJoined(const Words& words, std::string* out) {
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out->push_back(' ');
    out->append(words[i].data(), words[i].size());
  }
}

}  // namespace

// ---- Public API -------------------------------------------------------------------------------

std::string_view TaskName(TaskType task) {
  switch (task) {
    case TaskType::kPasskey: return "passkey";
    case TaskType::kMultiKey: return "multikey";
    case TaskType::kVarTrack: return "vartrack";
    case TaskType::kQa: return "qa";
    case TaskType::kMqar: return "mqar";
  }
  return "unknown";
}

absl::StatusOr<TaskType> ParseTaskType(std::string_view name) {
  for (TaskType t : kAllTasks) {
    if (TaskName(t) == name) return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown task '", AV(name), "' (passkey|multikey|vartrack|qa|mqar)"));
}

std::string_view SplitName(Split split) { return split == Split::kTrain ? "train" : "heldout"; }

absl::StatusOr<Split> ParseSplit(std::string_view name) {
  if (name == "train") return Split::kTrain;
  if (name == "heldout") return Split::kHeldOut;
  return absl::InvalidArgumentError(absl::StrCat("unknown split '", AV(name), "' (train|heldout)"));
}

const std::vector<std::string>& Vocabulary() { return Lex().vocabulary; }
const std::vector<std::string>& PoolWords(WordPool pool) {
  return Lex().pools[static_cast<int>(pool)];
}
std::optional<WordPool> PoolOf(std::string_view word) {
  const auto& map = Lex().pool_of;
  auto it = map.find(AV(word));
  if (it == map.end()) return std::nullopt;
  return it->second;
}
const std::vector<std::string>& NameWords() { return Lex().names; }
const std::vector<std::string>& DigitWords() { return Lex().digits; }
const std::vector<std::string>& QaObjectWords() { return Lex().objects; }
const std::vector<std::string>& QaAttributeWords() { return Lex().attributes; }
const std::vector<std::string>& QaAttributeValues(std::string_view attribute) {
  static const std::vector<std::string> kNone;
  for (size_t a = 0; a < std::size(kAttributes); ++a) {
    if (kAttributes[a] == attribute) return Lex().attribute_values[a];
  }
  return kNone;
}

// FNV-1a over the bytes with a fixed key folded into the offset basis, then the splitmix64
// finalizer so that the low digits (what % 10 looks at) depend on every byte.
uint64_t SplitHash(std::string_view canonical) {
  constexpr uint64_t kKey = 0x6b76776972652d31ULL;  // "kvwire-1": changing it reshuffles splits
  uint64_t h = 0xcbf29ce484222325ULL ^ kKey;
  for (unsigned char c : canonical) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return SplitMix64(h);
}

Split ValueSplit(const std::vector<std::string_view>& digits) {
  return SplitHash(Canonical("v:", digits)) % kHeldOutModulus == 0 ? Split::kHeldOut
                                                                  : Split::kTrain;
}

Split KeySplit(const std::vector<std::string_view>& words) {
  if (words.size() < 2) return Split::kTrain;
  return SplitHash(Canonical("k:", words)) % kHeldOutModulus == 0 ? Split::kHeldOut
                                                                 : Split::kTrain;
}

Split FactSplit(std::string_view object, std::string_view attribute, std::string_view value) {
  const std::string canonical =
      absl::StrCat("f:", AV(object), "|", AV(attribute), "|", AV(value));
  return SplitHash(canonical) % kHeldOutModulus == 0 ? Split::kHeldOut : Split::kTrain;
}

double Example::actual_depth() const {
  const int room = static_cast<int>(context.size()) - needle.length;
  return room > 0 ? static_cast<double>(needle.start) / room : 0.0;
}

absl::StatusOr<Example> GenerateExample(const TaskParams& params, uint64_t index) {
  absl::StatusOr<Resolved> resolved = Resolve(params);
  if (!resolved.ok()) return resolved.status();
  const Resolved& r = *resolved;
  Rng rng(ExampleSeed(r, index));
  // Drawn on a 1e-4 grid so the value prints short and exactly in JSON.
  const double depth = r.depth.has_value() ? *r.depth : static_cast<double>(rng.Below(10001)) / 1e4;

  absl::StatusOr<Draft> draft;
  switch (r.task) {
    case TaskType::kPasskey: draft = DraftPasskey(rng, r); break;
    case TaskType::kMultiKey: draft = DraftMultiKey(rng, r); break;
    case TaskType::kVarTrack: draft = DraftVarTrack(rng, r); break;
    case TaskType::kQa: draft = DraftQa(rng, r); break;
    case TaskType::kMqar: draft = DraftMqar(rng, r); break;
  }
  if (!draft.ok()) return draft.status();

  Example ex;
  ex.task = r.task;
  ex.split = r.split;
  ex.depth = depth;
  ex.question = std::move(draft->question);
  ex.answer = std::move(draft->answer);
  const int context_len = r.length - static_cast<int>(ex.question.size()) - 2;
  absl::StatusOr<std::vector<Span>> spans =
      Place(rng, context_len, draft->needles, draft->asked, depth, &ex.context);
  if (!spans.ok()) return spans.status();
  ex.needle = (*spans)[draft->asked];
  ex.answer_position = ex.needle.start + draft->answer_offset;
  ex.needles = *spans;
  std::sort(ex.needles.begin(), ex.needles.end(),
            [](const Span& a, const Span& b) { return a.start < b.start; });

  const int question_start = static_cast<int>(ex.context.size());
  for (const Span& s : draft->question_answers) {
    ex.supervised.push_back({question_start + s.start, s.length});
  }
  ex.supervised.push_back({ex.length(), static_cast<int>(ex.answer.size())});

  const std::string depth_tag =
      r.depth.has_value() ? absl::StrFormat("d%.4f", *r.depth) : std::string("drand");
  ex.id = absl::StrFormat("%s-%s-s%u-L%d-%s-%06u", AV(TaskName(r.task)), AV(SplitName(r.split)),
                          r.seed, r.length, depth_tag, index);
  return ex;
}

Prompt FormatPrompt(const Example& example) {
  Prompt p;
  AppendJoined(example.context, &p.context_text);
  AppendJoined(example.question, &p.question_text);
  p.question_text.push_back(' ');
  p.question_text.append(kAnswerPrefix);
  AppendJoined(example.answer, &p.answer_text);
  return p;
}

std::vector<std::string_view> TrainingSequence(const Example& example) {
  Words seq = example.context;
  Append(&seq, example.question);
  Append(&seq, {M(kAnswer), M(kColon)});
  Append(&seq, example.answer);
  return seq;
}

std::string ToJsonLine(const Example& example) {
  const Prompt p = FormatPrompt(example);
  nlohmann::ordered_json j;
  j["id"] = example.id;
  j["task"] = std::string(TaskName(example.task));
  j["split"] = std::string(SplitName(example.split));
  j["context"] = p.context_text;
  j["question"] = p.question_text;
  j["answers"] = nlohmann::ordered_json::array({p.answer_text});
  j["depth"] = example.depth;
  j["length"] = example.length();
  j["needle_position"] = example.needle.start;
  nlohmann::ordered_json spans = nlohmann::ordered_json::array();
  for (const Span& s : example.supervised) spans.push_back({s.start, s.length});
  j["answer_spans"] = std::move(spans);
  return j.dump();
}

}  // namespace kvwire::tasks
