// Per-example scorers of the evaluation harness, re-implemented in C++ so that kvwire can score
// generations without a Python toolchain. Each function states which reference behaviour it
// reproduces; scores are in [0, 1] (multiply by 100 for the usual report scale).
//
// All text is UTF-8 and is processed as Unicode code points, because the reference scorers are
// Python code over `str`. Invalid UTF-8 in a prediction is decoded as U+FFFD per bad byte.
#pragma once

#include <string>
#include <string_view>

#include "absl/types/span.h"

namespace kvwire::eval {

// ---- English QA (SQuAD evaluate-v2.0 / LongBench normalize_answer) ---------------------------

// Lower-cases, deletes ASCII punctuation (Python string.punctuation), replaces the whole words
// "a", "an", "the" by a space, then collapses whitespace runs to single spaces and trims. Steps run
// in that order, so "the-end" loses its hyphen first and stays one word ("theend").
std::string NormalizeAnswer(std::string_view s);

// 1 if NormalizeAnswer(prediction) == NormalizeAnswer(ground_truth), else 0 (SQuAD compute_exact).
double ExactMatch(std::string_view prediction, std::string_view ground_truth);

// LongBench qa_f1_score: bag-of-tokens F1 over NormalizeAnswer(...) split on whitespace.
// 0 when no token is shared, including when both sides normalise to nothing.
double QaF1(std::string_view prediction, std::string_view ground_truth);

// SQuAD v2 compute_f1: like QaF1, except that if either side has no tokens the score is 1 when
// both are empty and 0 otherwise (this is how unanswerable questions are credited).
double SquadF1(std::string_view prediction, std::string_view ground_truth);

// ---- Chinese QA / summarisation (approximations) ---------------------------------------------
// LongBench's zh metrics segment text with jieba, which has no C++ equivalent here. These
// variants use character tokens instead, so they do NOT reproduce official zh numbers; the task
// dispatcher (scoring.h) therefore refuses zh tasks and these are offered for ad-hoc use only.

// LongBench normalize_zh_answer: lower-case, delete ASCII punctuation and LongBench's list of
// CJK/fullwidth punctuation, delete all whitespace.
std::string NormalizeZhAnswer(std::string_view s);

// Token F1 where every code point that survives NormalizeZhAnswer is one token.
double QaF1ZhChars(std::string_view prediction, std::string_view ground_truth);

// RougeL over a pseudo-segmentation: every CJK ideograph / kana / hangul / fullwidth code point is
// one word, other non-space runs are one word each.
double RougeZhChars(std::string_view prediction, std::string_view ground_truth);

// ---- Summarisation ---------------------------------------------------------------------------

// ROUGE-L F as LongBench computes it (Rouge().get_scores(...)["rouge-l"]["f"] of the PyPI `rouge`
// package 1.0.1, whose rouge-l is the *summary-level* union LCS). Tokenisation, reproduced
// exactly: each text is split into "sentences" on every '.', empty pieces are dropped, each piece
// has its whitespace runs collapsed to one space and is split on ' ' (a whitespace-only piece
// therefore contributes one empty-string word). No lower-casing, no stemming. Words are then
// treated as SETS (the package's default exclusive=True):
//   m = #distinct words of the reference, n = #distinct words of the prediction,
//   llcs = #distinct words lying on the reconstructed LCS of any (reference sentence,
//          prediction sentence) pair (LCS back-tracking prefers the diagonal on a match, then
//          moving up in the reference when that cell is strictly larger, else left),
//   F = 2 * P * R / (P + R + 1e-8) with P = llcs / n, R = llcs / m.
// Returns 0 where the package raises (a side with no sentence, e.g. "" or "..."), as LongBench's
// try/except does. Not reproduced: Python's recursion limit, which makes the package throw (and
// LongBench score 0) for a sentence pair whose LCS back-track exceeds ~1000 steps.
double RougeL(std::string_view prediction, std::string_view reference);

// ---- LongBench classification / synthetic / code ---------------------------------------------

// LongBench classification_score (trec). Classes that occur as substrings of `prediction` are
// collected in all_classes order; then, walking that list, a class that is a proper substring of
// `ground_truth` is removed. The walk reproduces the reference's removal during iteration: the
// element that slides into the removed slot is skipped, so with adjacent removable classes only
// every other one is dropped. Score = 1 / |list| if ground_truth is in the list, else 0.
double ClassificationScore(std::string_view prediction, std::string_view ground_truth,
                           absl::Span<const std::string> all_classes);

// LongBench retrieval_score (passage_retrieval_en). The id is the digits of the first
// "Paragraph <digits>" in `ground_truth`; the score is the fraction of the maximal digit runs in
// `prediction` that equal it as strings ("03" != "3"). 0 if the prediction has no digits, and 0
// if `ground_truth` has no paragraph id (the reference raises there; ScoreExample reports it as an
// error instead).
double RetrievalScore(std::string_view prediction, std::string_view ground_truth);

// LongBench count_score (passage_count): fraction of the digit runs in `prediction` equal to
// `ground_truth` as strings; 0 if there are none.
double CountScore(std::string_view prediction, std::string_view ground_truth);

// Which similarity FuzzRatio uses. fuzzywuzzy's fuzz.ratio picks python-Levenshtein's ratio when
// that package is installed and difflib.SequenceMatcher otherwise. LongBench's requirements list
// fuzzywuzzy without python-Levenshtein, so difflib is the default.
enum class FuzzBackend {
  kDifflib,      // 2*M/T, M = characters in difflib's matching blocks (autojunk on)
  kLevenshtein,  // (T - D)/T, D = insert/delete-only edit distance = T - 2*LCS
};

// difflib.SequenceMatcher(None, a, b).ratio() on code points, including its heuristics: greedy
// longest-block recursion with difflib's tie-breaking, and autojunk (when len(b) >= 200, a
// character occurring more than len(b)/100 + 1 times in b cannot seed a match).
double SequenceMatcherRatio(std::string_view a, std::string_view b);

// python-Levenshtein ratio(a, b) on code points: 2*LCS/(len(a)+len(b)); 1 if both are empty.
double LevenshteinRatio(std::string_view a, std::string_view b);

// fuzzywuzzy fuzz.ratio: 100 if a == b; 0 if either is empty; else round(100 * ratio) with
// Python's round-half-to-even.
int FuzzRatio(std::string_view a, std::string_view b, FuzzBackend backend = FuzzBackend::kDifflib);

// LongBench code_sim_score (lcc, repobench-p): leading '\n's are dropped, and the first line
// containing none of "`", "#", "//" (or "" if every line does) is compared with
// FuzzRatio(line, ground_truth) / 100.
double CodeSimScore(std::string_view prediction, std::string_view ground_truth,
                    FuzzBackend backend = FuzzBackend::kDifflib);

// LongBench's post-processing for trec, triviaqa and samsum (and lsht): strip leading '\n'
// characters only, then keep everything before the next '\n'.
std::string FirstLine(std::string_view prediction);

// ---- RULER -----------------------------------------------------------------------------------

// RULER postprocess_pred: strip whitespace, turn every control character U+0000..U+001F into
// '\n', strip again. Containment below is unaffected by it unless references have edge spaces.
std::string RulerPostprocess(std::string_view prediction);

// RULER string_match_all for one example: fraction of `refs` contained in `prediction`, both
// lower-cased (text.h's Lower). 0 if refs is empty (the reference divides by zero).
double StringMatchAll(std::string_view prediction, absl::Span<const std::string> refs);

// RULER string_match_part for one example: 1 if any ref is contained (case-insensitively), else 0.
double StringMatchPart(std::string_view prediction, absl::Span<const std::string> refs);

// ---- kvwire synthetic tasks -------------------------------------------------------------------

// 1 if the prediction, after RulerPostprocess and whitespace collapsing, starts with the
// reference processed the same way and what follows it (past spaces) is the end or a non-word
// character, else 0: exact match of the answer at the start of the generation, tolerant of
// punctuation and text after it ("1 0 2 7 9. remember" matches "1 0 2 7 9"), but not of more
// answer ("1 0 2 7 90" and "1 0 2 7 9 4" do not). 0 for an empty reference.
double PrefixMatch(std::string_view prediction, std::string_view reference);

}  // namespace kvwire::eval
