#include "client/eval/metrics.h"

#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvwire::eval {
namespace {

// rouge's F = 2PR/(P+R+1e-8) sits a hair below the exact F; compare loosely.
constexpr double kRougeTol = 1e-7;

TEST(NormalizeAnswerTest, LowercasesAndDropsPunctuation) {
  EXPECT_EQ(NormalizeAnswer("Hello, World!"), "hello world");
  EXPECT_EQ(NormalizeAnswer("U.S.A."), "usa");
  // Punctuation goes before articles are matched, without leaving a space.
  EXPECT_EQ(NormalizeAnswer("the-end"), "theend");
  EXPECT_EQ(NormalizeAnswer("snake_case"), "snakecase");  // '_' is in string.punctuation
}

TEST(NormalizeAnswerTest, RemovesWholeWordArticlesOnly) {
  EXPECT_EQ(NormalizeAnswer("The Cat sat on a mat"), "cat sat on mat");
  EXPECT_EQ(NormalizeAnswer("An apple, an idea"), "apple idea");
  EXPECT_EQ(NormalizeAnswer("theater another a1 thé"), "theater another a1 thé");
  // Curly quotes are not word characters, so "the" before one is a whole word.
  EXPECT_EQ(NormalizeAnswer("the\u201cquote\u201d"), "\u201cquote\u201d");
}

TEST(NormalizeAnswerTest, CollapsesWhitespace) {
  EXPECT_EQ(NormalizeAnswer("  Hello\t\n  World \u00A0 "), "hello world");
  EXPECT_EQ(NormalizeAnswer(" the  a an "), "");
}

TEST(ExactMatchTest, ComparesNormalizedText) {
  EXPECT_EQ(ExactMatch("The Cat.", "cat"), 1.0);
  EXPECT_EQ(ExactMatch("ZÜRICH", "Zürich"), 1.0);
  EXPECT_EQ(ExactMatch("cats", "cat"), 0.0);
  EXPECT_EQ(ExactMatch("", "the"), 1.0);
}

TEST(QaF1Test, PartialOverlapByHand) {
  // pred tokens {cat, sat}, gold {cat, sat, down}: P = 2/2, R = 2/3, F1 = 2*1*(2/3)/(5/3) = 0.8.
  EXPECT_NEAR(QaF1("the cat sat", "a cat sat down"), 0.8, 1e-12);
  // Repeated tokens count once per gold occurrence: P = 1/3, R = 1, F1 = 0.5.
  EXPECT_NEAR(QaF1("cat cat cat", "cat"), 0.5, 1e-12);
  EXPECT_EQ(QaF1("Paris", "paris."), 1.0);
  EXPECT_EQ(QaF1("London", "Paris"), 0.0);
  // LongBench gives 0 when both sides normalise to nothing; SQuAD v2 gives 1.
  EXPECT_EQ(QaF1("the", ""), 0.0);
  EXPECT_EQ(SquadF1("the", ""), 1.0);
  EXPECT_EQ(SquadF1("cat", ""), 0.0);
  EXPECT_NEAR(SquadF1("the cat sat", "a cat sat down"), 0.8, 1e-12);
}

TEST(RougeLTest, SingleSentenceByHand) {
  // LCS("a b c d", "a c e") = "a c": P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7.
  EXPECT_NEAR(RougeL("a b c d", "a c e"), 4.0 / 7.0, kRougeTol);
  EXPECT_NEAR(RougeL("same words here", "same words here"), 1.0, kRougeTol);
  EXPECT_EQ(RougeL("x y", "z"), 0.0);
}

TEST(RougeLTest, WordsAreCountedAsSets) {
  // The sequence LCS "the cat on the mat" has 5 tokens but only 4 distinct words, and each side
  // has 5 distinct words: F = 4/5 (a token-count ROUGE-L would give 5/6).
  EXPECT_NEAR(RougeL("the cat sat on the mat", "the cat lay on the mat"), 0.8, kRougeTol);
}

TEST(RougeLTest, SummaryLevelUnionOverSentences) {
  // Sentences split on '.': ref [a b][c d], pred [c a][b d]. Each ref sentence shares one word
  // with each pred sentence; the union covers all 4 words, so F = 1.
  EXPECT_NEAR(RougeL("c a. b d", "a b. c d"), 1.0, kRougeTol);
  // Pred [x y][z] vs ref [x][y z w]: union of LCS words {x, y, z}; P = 3/3, R = 3/4, F = 6/7.
  EXPECT_NEAR(RougeL("x y. z", "x. y z w"), 6.0 / 7.0, kRougeTol);
  // A trailing ". " leaves a whitespace-only sentence, i.e. an extra empty word on that side:
  // P = 2/3, R = 2/2, F = 0.8.
  EXPECT_NEAR(RougeL("Hello world. ", "Hello world"), 0.8, kRougeTol);
}

TEST(RougeLTest, CaseSensitiveAndEmptyIsZero) {
  EXPECT_EQ(RougeL("The", "the"), 0.0);
  EXPECT_EQ(RougeL("", "abc"), 0.0);
  EXPECT_EQ(RougeL("...", "abc"), 0.0);
  EXPECT_EQ(RougeL("abc", "."), 0.0);
}

TEST(ClassificationScoreTest, SubstringClassesAreDropped) {
  const std::vector<std::string> classes = {"city", "other city", "country"};
  // "city" is matched too but is a proper substring of the gold label, so it is dropped.
  EXPECT_EQ(ClassificationScore("other city", "other city", classes), 1.0);
  // Two labels remain: 1/2.
  EXPECT_EQ(ClassificationScore("other city or country", "other city", classes), 0.5);
  // Gold "city": "other city" is not a substring of "city", so nothing is dropped; 1/2.
  EXPECT_EQ(ClassificationScore("other city", "city", classes), 0.5);
  EXPECT_EQ(ClassificationScore("country", "city", classes), 0.0);
  EXPECT_EQ(ClassificationScore("nothing", "city", classes), 0.0);
}

TEST(ClassificationScoreTest, ReproducesRemovalDuringIteration) {
  // Matched [a, b, ab]; removing "a" slides "b" into its slot and the walk skips it, so
  // [b, ab] remain and the score is 1/2 rather than 1.
  EXPECT_EQ(ClassificationScore("ab", "ab", {"a", "b", "ab"}), 0.5);
  // Matched [a, ab, b]: "a" goes, "b" slides to index 1 and is examined and dropped: 1.
  EXPECT_EQ(ClassificationScore("ab", "ab", {"a", "ab", "b"}), 1.0);
  // Matched [ab, a, b]: "a" goes and "b" slides past the cursor: 1/2.
  EXPECT_EQ(ClassificationScore("ab", "ab", {"ab", "a", "b"}), 0.5);
}

TEST(RetrievalScoreTest, FractionOfNumbersEqualToParagraphId) {
  EXPECT_EQ(RetrievalScore("The answer is Paragraph 3 and 5", "Paragraph 3"), 0.5);
  EXPECT_EQ(RetrievalScore("Paragraph 12", "Paragraph 12"), 1.0);
  EXPECT_EQ(RetrievalScore("Paragraph 1", "Paragraph 12"), 0.0);
  EXPECT_EQ(RetrievalScore("Paragraph 03", "Paragraph 3"), 0.0);  // compared as strings
  EXPECT_EQ(RetrievalScore("no digits", "Paragraph 3"), 0.0);
  EXPECT_EQ(RetrievalScore("3", "Paragraph x then Paragraph 3"), 1.0);
  EXPECT_EQ(RetrievalScore("3", "no id here"), 0.0);
}

TEST(CountScoreTest, FractionOfNumbersEqualToCount) {
  EXPECT_NEAR(CountScore("I count 4 unique paragraphs, not 5, so 4.", "4"), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(CountScore("12", "12"), 1.0);
  EXPECT_EQ(CountScore("112", "12"), 0.0);  // maximal digit runs
  EXPECT_EQ(CountScore("none", "4"), 0.0);
}

TEST(FuzzRatioTest, DifflibBlocksByHand) {
  // Longest block "ab", then "d" to its right: M = 3, ratio = 6/8.
  EXPECT_EQ(FuzzRatio("abcd", "abxd"), 75);
  EXPECT_DOUBLE_EQ(SequenceMatcherRatio("abcd", "abxd"), 0.75);
  // The first longest block "ab" sits at the start of a and the end of b, leaving nothing else
  // matchable: M = 2 -> 25; the LCS "cdef" gives the Levenshtein ratio 8/16 -> 50.
  EXPECT_EQ(FuzzRatio("ab1cd2ef", "cd3ef4ab"), 25);
  EXPECT_EQ(FuzzRatio("ab1cd2ef", "cd3ef4ab", FuzzBackend::kLevenshtein), 50);
  EXPECT_DOUBLE_EQ(LevenshteinRatio("ab1cd2ef", "cd3ef4ab"), 0.5);
}

TEST(FuzzRatioTest, EdgeCasesAndRounding) {
  EXPECT_EQ(FuzzRatio("", ""), 100);
  EXPECT_EQ(FuzzRatio("", "x"), 0);
  EXPECT_EQ(FuzzRatio("same", "same"), 100);
  EXPECT_EQ(FuzzRatio("abbbbbbb", "accccccc"), 12);  // 12.5 rounds half to even
  EXPECT_EQ(FuzzRatio("abcddddd", "abceeeee"), 38);  // 37.5 rounds half to even
  EXPECT_EQ(FuzzRatio("    return x + 1", "    return x+1"), 93);
  EXPECT_EQ(FuzzRatio("d\u00e9f", "def"), 67);  // code points, not bytes: 2*2/6
}

TEST(FuzzRatioTest, AutojunkOnLongSecondString) {
  // len(b) >= 200 makes ' ' (250 occurrences) "popular": it cannot seed a match, so only the
  // extension of the empty match at (0, 0) can pick spaces up.
  const std::string b = std::string(250, ' ') + "z";
  EXPECT_EQ(FuzzRatio(std::string(5, ' '), b), 4);   // extends over 5 leading spaces: 10/256
  const std::string q5 = "q     ";
  EXPECT_EQ(FuzzRatio(q5, b), 0);  // nothing can start a match
  EXPECT_EQ(FuzzRatio(q5, b, FuzzBackend::kLevenshtein), 4);
}

TEST(CodeSimScoreTest, SkipsCommentAndFenceLines) {
  EXPECT_EQ(CodeSimScore("\n\n# comment\n```python\n    return x + 1\nmore", "    return x + 1"),
            1.0);
  EXPECT_EQ(CodeSimScore("// c\nabcd\n", "abxd"), 0.75);
  EXPECT_EQ(CodeSimScore("int a = b; // note\nabcd", "abxd"), 0.75);  // '//' anywhere skips
  EXPECT_EQ(CodeSimScore("# only comments\n", "x"), 0.0);  // falls to the empty last line
  EXPECT_EQ(CodeSimScore("#a\n#b", "x"), 0.0);            // no line qualifies -> ""
}

TEST(FirstLineTest, StripsLeadingNewlinesOnly) {
  EXPECT_EQ(FirstLine("\n\nLocation\nQuestion: next"), "Location");
  EXPECT_EQ(FirstLine(" \nX"), " ");
  EXPECT_EQ(FirstLine("single"), "single");
  EXPECT_EQ(FirstLine("\n\n"), "");
}

TEST(RulerTest, StringMatchAllAndPart) {
  const std::vector<std::string> refs = {"123", "456", "789"};
  EXPECT_NEAR(StringMatchAll("The numbers are 123 and 456.", refs), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(StringMatchPart("The numbers are 123 and 456.", refs), 1.0);
  EXPECT_EQ(StringMatchAll("none", refs), 0.0);
  EXPECT_EQ(StringMatchPart("none", refs), 0.0);
  EXPECT_EQ(StringMatchAll("xAbCx", {"abc"}), 1.0);  // case-insensitive
  EXPECT_EQ(StringMatchAll("anything", {}), 0.0);
  EXPECT_EQ(RulerPostprocess("  a\x01" "b\tc  "), "a\nb\nc");
}

TEST(ZhApproximationTest, CharacterTokens) {
  EXPECT_EQ(NormalizeZhAnswer("北京，《中国》！ A b"), "北京《中国ab");
  // pred chars {北, 京, 市}, gold {北, 京}: P = 2/3, R = 1, F1 = 0.8.
  EXPECT_NEAR(QaF1ZhChars("北京市", "北京。"), 0.8, 1e-12);
  EXPECT_NEAR(RougeZhChars("北京 市", "北京"), 0.8, kRougeTol);
}

// testdata/reference_scores.jsonl holds randomised inputs (mixed case, punctuation, '.', newlines,
// non-ASCII, strings over difflib's 200-character autojunk threshold) with the scores produced by
// the Python reference stack: LongBench's metric definitions, rouge 1.0.1, difflib. Every C++
// scorer must reproduce them.
TEST(ReferenceParityTest, MatchesPythonReferenceOutputs) {
  std::ifstream in(std::string(KVWIRE_EVAL_TESTDATA) + "/reference_scores.jsonl");
  ASSERT_TRUE(in) << "missing reference_scores.jsonl";
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::string m = j.at("m"), p = j.at("p"), g = j.at("g");
    const double want = j.at("want");
    double got = -1;
    if (m == "f1") got = QaF1(p, g);
    if (m == "sqf1") got = SquadF1(p, g);
    if (m == "em") got = ExactMatch(p, g);
    if (m == "rouge") got = RougeL(p, g);
    if (m == "cls") got = ClassificationScore(p, g, j.at("c").get<std::vector<std::string>>());
    if (m == "ret") got = RetrievalScore(p, g);
    if (m == "cnt") got = CountScore(p, g);
    if (m == "code") got = CodeSimScore(p, g);
    if (m == "fuzz") got = FuzzRatio(p, g);
    if (m == "lev") got = LevenshteinRatio(p, g);
    EXPECT_DOUBLE_EQ(got, want) << m << " pred=" << j.at("p").dump() << " gold=" << j.at("g").dump();
    ++checked;
  }
  EXPECT_GT(checked, 200);
}

TEST(PrefixMatchTest, AnswerMustStartTheGeneration) {
  EXPECT_EQ(PrefixMatch("1 0 2 7 9", "1 0 2 7 9"), 1.0);
  EXPECT_EQ(PrefixMatch("  1 0  2 7 9 . remember it", "1 0 2 7 9"), 1.0);
  EXPECT_EQ(PrefixMatch("1 0 2 7 9.", "1 0 2 7 9"), 1.0);
  EXPECT_EQ(PrefixMatch("\n1\t0 2 7 9", "1 0 2 7 9"), 1.0);
  // A longer last number is a different answer; a later occurrence is not the answer.
  EXPECT_EQ(PrefixMatch("1 0 2 7 90", "1 0 2 7 9"), 0.0);
  // Regression: one digit too many after a space counted as a match.
  EXPECT_EQ(PrefixMatch("1 0 2 7 9 4", "1 0 2 7 9"), 0.0);
  EXPECT_EQ(PrefixMatch("1 3 4 4 8", "1 3 4 4"), 0.0);
  EXPECT_EQ(PrefixMatch("1 0 2 7 9\n\n", "1 0 2 7 9"), 1.0);
  EXPECT_EQ(PrefixMatch("the key is 1 0 2 7 9", "1 0 2 7 9"), 0.0);
  EXPECT_EQ(PrefixMatch("1 0 2", "1 0 2 7 9"), 0.0);
  EXPECT_EQ(PrefixMatch("green", "green"), 1.0);
  EXPECT_EQ(PrefixMatch("greenish", "green"), 0.0);
  EXPECT_EQ(PrefixMatch("anything", ""), 0.0);
  EXPECT_EQ(PrefixMatch("", "x"), 0.0);
}

}  // namespace
}  // namespace kvwire::eval
