#include "client/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "client/eval/text.h"

namespace kvwire::eval {
namespace {

using text::Decode;
using text::Encode;

// Python's string.punctuation.
bool IsAsciiPunct(char32_t c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
         (c >= 0x7B && c <= 0x7E);
}

// LongBench's extra punctuation for Chinese normalisation (besides string.punctuation). Note that
// the list has the closing 》 but not the opening 《, and no fullwidth full stop U+FF0E.
bool IsZhPunct(char32_t c) {
  if (IsAsciiPunct(c)) return true;
  if ((c >= 0xFF01 && c <= 0xFF0D) || c == 0xFF0F || (c >= 0xFF1A && c <= 0xFF20) ||
      (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF64)) {
    return true;
  }
  if ((c >= 0x3001 && c <= 0x3003) || c == 0x300B || (c >= 0x300C && c <= 0x3011) ||
      (c >= 0x3014 && c <= 0x301F) || c == 0x3030 || c == 0x303E || c == 0x303F) {
    return true;
  }
  return c == 0x2013 || c == 0x2014 || c == 0x2018 || c == 0x2019 || c == 0x201B ||
         (c >= 0x201C && c <= 0x201F) || c == 0x2026 || c == 0x2027 || c == 0xFE4F;
}

bool IsArticle(std::u32string_view w) { return w == U"a" || w == U"an" || w == U"the"; }

std::u32string NormalizeU32(std::u32string_view s) {
  std::u32string lowered = text::Lower(s);
  std::u32string no_punct;
  no_punct.reserve(lowered.size());
  for (char32_t c : lowered) {
    if (!IsAsciiPunct(c)) no_punct.push_back(c);
  }
  // `\b(a|an|the)\b` only matches a complete run of word characters, so replacing whole runs
  // equal to an article is the same substitution.
  std::u32string no_articles;
  no_articles.reserve(no_punct.size());
  size_t i = 0;
  while (i < no_punct.size()) {
    if (!text::IsWordChar(no_punct[i])) {
      no_articles.push_back(no_punct[i++]);
      continue;
    }
    size_t j = i;
    while (j < no_punct.size() && text::IsWordChar(no_punct[j])) ++j;
    std::u32string_view run(no_punct.data() + i, j - i);
    if (IsArticle(run)) {
      no_articles.push_back(U' ');
    } else {
      no_articles.append(run);
    }
    i = j;
  }
  return text::CollapseWhitespace(no_articles);
}

std::u32string NormalizeZhU32(std::u32string_view s) {
  std::u32string out;
  for (char32_t c : text::Lower(s)) {
    if (!IsZhPunct(c) && !text::IsSpace(c)) out.push_back(c);
  }
  return out;
}

// LongBench f1_score over token lists: multiset intersection; 0 when nothing is shared.
template <typename Tok>
double TokenF1(const std::vector<Tok>& pred, const std::vector<Tok>& gold) {
  std::unordered_map<Tok, int64_t> gold_counts;
  for (const Tok& t : gold) ++gold_counts[t];
  int64_t same = 0;
  for (const Tok& t : pred) {
    auto it = gold_counts.find(t);
    if (it != gold_counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  // Same operation order as the reference so results agree to the last bit.
  const double precision = 1.0 * static_cast<double>(same) / static_cast<double>(pred.size());
  const double recall = 1.0 * static_cast<double>(same) / static_cast<double>(gold.size());
  return (2 * precision * recall) / (precision + recall);
}

std::vector<std::u32string> NormalizedTokens(std::string_view s) {
  const std::u32string norm = NormalizeU32(Decode(s));
  std::vector<std::u32string> out;
  for (std::u32string_view t : text::SplitWhitespace(norm)) out.emplace_back(t);
  return out;
}

// ---- ROUGE-L (rouge 1.0.1 semantics, see metrics.h) ----

class WordIds {
 public:
  int Id(std::u32string_view w) {
    auto [it, inserted] = ids_.try_emplace(std::u32string(w), static_cast<int>(ids_.size()));
    return it->second;
  }

 private:
  std::unordered_map<std::u32string, int> ids_;
};

using Sentence = std::vector<int>;

std::vector<Sentence> RougeSentences(std::u32string_view s, WordIds* ids) {
  std::vector<Sentence> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t dot = s.find(U'.', start);
    if (dot == std::u32string_view::npos) dot = s.size();
    std::u32string_view piece = s.substr(start, dot - start);
    if (!piece.empty()) {
      // " ".join(piece.split()).split(" "): the tokens, or [""] for a whitespace-only piece.
      std::vector<std::u32string_view> words = text::SplitWhitespace(piece);
      Sentence sent;
      if (words.empty()) {
        sent.push_back(ids->Id(U""));
      } else {
        for (std::u32string_view w : words) sent.push_back(ids->Id(w));
      }
      out.push_back(std::move(sent));
    }
    start = dot + 1;
  }
  return out;
}

size_t DistinctWords(const std::vector<Sentence>& sents) {
  std::unordered_set<int> seen;
  for (const Sentence& s : sents) seen.insert(s.begin(), s.end());
  return seen.size();
}

// Adds the words on the LCS of x (reference) and y (prediction) to `out`, back-tracking the same
// way as the reference so ties pick the same words.
void AddLcsWords(const Sentence& x, const Sentence& y, std::unordered_set<int>* out) {
  const size_t n = x.size(), m = y.size();
  std::vector<uint32_t> t((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> uint32_t& { return t[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
    }
  }
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      out->insert(x[i - 1]);
      --i;
      --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
}

double RougeLU32(std::u32string_view pred, std::u32string_view ref) {
  WordIds ids;
  const std::vector<Sentence> hyp = RougeSentences(pred, &ids);
  const std::vector<Sentence> refs = RougeSentences(ref, &ids);
  if (hyp.empty() || refs.empty()) return 0.0;  // the package raises; LongBench scores 0
  const double m = static_cast<double>(DistinctWords(refs));
  const double n = static_cast<double>(DistinctWords(hyp));
  // Summing the per-reference-sentence growth of the running union equals the final union size.
  std::unordered_set<int> uni;
  for (const Sentence& r : refs) {
    for (const Sentence& h : hyp) AddLcsWords(r, h, &uni);
  }
  const double llcs = static_cast<double>(uni.size());
  const double r_lcs = llcs / m;
  const double p_lcs = llcs / n;
  return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8));
}

// Stand-in for jieba: CJK-ish code points are single words, anything else splits on whitespace.
bool IsCjkLike(char32_t c) {
  return (c >= 0x2E80 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7AF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFF00 && c <= 0xFFEF) ||
         (c >= 0x20000 && c <= 0x3FFFF);
}

std::u32string PseudoSegment(std::u32string_view s) {
  std::u32string out;
  auto sep = [&out] {
    if (!out.empty() && out.back() != U' ') out.push_back(U' ');
  };
  for (char32_t c : s) {
    if (text::IsSpace(c)) {
      sep();
    } else if (IsCjkLike(c)) {
      sep();
      out.push_back(c);
      out.push_back(U' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// ---- difflib.SequenceMatcher ----

class SequenceMatcher {
 public:
  SequenceMatcher(const std::u32string& a, const std::u32string& b) : a_(a), b_(b) {
    for (size_t j = 0; j < b_.size(); ++j) b2j_[b_[j]].push_back(static_cast<int>(j));
    const size_t n = b_.size();
    if (n >= 200) {  // autojunk: drop "popular" characters from the index
      const size_t ntest = n / 100 + 1;
      for (auto it = b2j_.begin(); it != b2j_.end();) {
        it = it->second.size() > ntest ? b2j_.erase(it) : std::next(it);
      }
    }
    len_prev_.assign(n + 1, 0);
    len_cur_.assign(n + 1, 0);
  }

  // Total size of get_matching_blocks(). Sub-ranges are independent, so the order in which the
  // work list is processed does not change the sum.
  int64_t MatchingCharacters() {
    int64_t total = 0;
    struct Box {
      int alo, ahi, blo, bhi;
    };
    std::vector<Box> todo{{0, static_cast<int>(a_.size()), 0, static_cast<int>(b_.size())}};
    while (!todo.empty()) {
      const Box q = todo.back();
      todo.pop_back();
      int i, j, k;
      FindLongestMatch(q.alo, q.ahi, q.blo, q.bhi, &i, &j, &k);
      if (k == 0) continue;
      total += k;
      if (q.alo < i && q.blo < j) todo.push_back({q.alo, i, q.blo, j});
      if (i + k < q.ahi && j + k < q.bhi) todo.push_back({i + k, q.ahi, j + k, q.bhi});
    }
    return total;
  }

 private:
  void FindLongestMatch(int alo, int ahi, int blo, int bhi, int* bi, int* bj, int* bk) {
    int besti = alo, bestj = blo, bestsize = 0;
    // len_prev_[j + 1] = length of the match ending at (i - 1, j); entries not touched in the
    // previous row must read as 0, so touched slots are cleared after each row.
    for (int i = alo; i < ahi; ++i) {
      touched_cur_.clear();
      auto it = b2j_.find(a_[i]);
      if (it != b2j_.end()) {
        for (int j : it->second) {
          if (j < blo) continue;
          if (j >= bhi) break;
          const int k = len_prev_[j] + 1;  // len_prev_[j] is the match ending at (i-1, j-1)
          len_cur_[j + 1] = k;
          touched_cur_.push_back(j + 1);
          if (k > bestsize) {
            besti = i - k + 1;
            bestj = j - k + 1;
            bestsize = k;
          }
        }
      }
      for (int t : touched_prev_) len_prev_[t] = 0;
      std::swap(len_prev_, len_cur_);
      std::swap(touched_prev_, touched_cur_);
    }
    for (int t : touched_prev_) len_prev_[t] = 0;
    touched_prev_.clear();
    // With no isjunk function nothing is "junk" (popular characters are merely unindexed), so
    // difflib's extension loops reduce to growing the block over equal neighbours.
    while (besti > alo && bestj > blo && a_[besti - 1] == b_[bestj - 1]) {
      --besti;
      --bestj;
      ++bestsize;
    }
    while (besti + bestsize < ahi && bestj + bestsize < bhi &&
           a_[besti + bestsize] == b_[bestj + bestsize]) {
      ++bestsize;
    }
    *bi = besti;
    *bj = bestj;
    *bk = bestsize;
  }

  const std::u32string& a_;
  const std::u32string& b_;
  std::unordered_map<char32_t, std::vector<int>> b2j_;
  std::vector<int> len_prev_, len_cur_;
  std::vector<int> touched_prev_, touched_cur_;
};

double SequenceMatcherRatioU32(const std::u32string& a, const std::u32string& b) {
  const size_t total = a.size() + b.size();
  if (total == 0) return 1.0;
  SequenceMatcher sm(a, b);
  return 2.0 * static_cast<double>(sm.MatchingCharacters()) / static_cast<double>(total);
}

double LevenshteinRatioU32(const std::u32string& a, const std::u32string& b) {
  const size_t total = a.size() + b.size();
  if (total == 0) return 1.0;
  // Insert/delete-only distance is len(a) + len(b) - 2 * LCS; two-row LCS table.
  std::vector<uint32_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  const double dist = static_cast<double>(total - 2 * static_cast<size_t>(prev[b.size()]));
  return (static_cast<double>(total) - dist) / static_cast<double>(total);
}

// Maximal runs of decimal digits, as re.findall(r"\d+", s).
std::vector<std::u32string_view> DigitRuns(std::u32string_view s) {
  std::vector<std::u32string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    if (!text::IsDecimalDigit(s[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && text::IsDecimalDigit(s[j])) ++j;
    out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

double FractionEqual(std::u32string_view prediction, std::u32string_view target) {
  const std::vector<std::u32string_view> numbers = DigitRuns(prediction);
  if (numbers.empty()) return 0.0;
  int64_t right = 0;
  for (std::u32string_view n : numbers) right += (n == target) ? 1 : 0;
  return static_cast<double>(right) / static_cast<double>(numbers.size());
}

}  // namespace

std::string NormalizeAnswer(std::string_view s) { return Encode(NormalizeU32(Decode(s))); }

double ExactMatch(std::string_view prediction, std::string_view ground_truth) {
  return NormalizeU32(Decode(prediction)) == NormalizeU32(Decode(ground_truth)) ? 1.0 : 0.0;
}

double QaF1(std::string_view prediction, std::string_view ground_truth) {
  return TokenF1(NormalizedTokens(prediction), NormalizedTokens(ground_truth));
}

double SquadF1(std::string_view prediction, std::string_view ground_truth) {
  const auto pred = NormalizedTokens(prediction);
  const auto gold = NormalizedTokens(ground_truth);
  if (pred.empty() || gold.empty()) return pred == gold ? 1.0 : 0.0;
  return TokenF1(pred, gold);
}

std::string NormalizeZhAnswer(std::string_view s) { return Encode(NormalizeZhU32(Decode(s))); }

double QaF1ZhChars(std::string_view prediction, std::string_view ground_truth) {
  const std::u32string p = NormalizeZhU32(Decode(prediction));
  const std::u32string g = NormalizeZhU32(Decode(ground_truth));
  return TokenF1(std::vector<char32_t>(p.begin(), p.end()),
                 std::vector<char32_t>(g.begin(), g.end()));
}

double RougeL(std::string_view prediction, std::string_view reference) {
  return RougeLU32(Decode(prediction), Decode(reference));
}

double RougeZhChars(std::string_view prediction, std::string_view ground_truth) {
  return RougeLU32(PseudoSegment(Decode(prediction)), PseudoSegment(Decode(ground_truth)));
}

double ClassificationScore(std::string_view prediction, std::string_view ground_truth,
                           absl::Span<const std::string> all_classes) {
  // Byte-wise substring tests on UTF-8 agree with code-point ones.
  std::vector<std::string_view> matched;
  for (const std::string& c : all_classes) {
    if (prediction.find(c) != std::string_view::npos) matched.push_back(c);
  }
  // Mirror `for x in lst: ... lst.remove(x)`: the cursor advances even after a removal, so the
  // element that moved into the freed slot is never examined.
  for (size_t i = 0; i < matched.size(); ++i) {
    const std::string_view term = matched[i];
    if (ground_truth.find(term) != std::string_view::npos && term != ground_truth) {
      matched.erase(std::find(matched.begin(), matched.end(), term));  // first equal element
    }
  }
  if (std::find(matched.begin(), matched.end(), ground_truth) == matched.end()) return 0.0;
  return 1.0 / static_cast<double>(matched.size());
}

double RetrievalScore(std::string_view prediction, std::string_view ground_truth) {
  const std::u32string gt = Decode(ground_truth);
  static constexpr std::u32string_view kPrefix = U"Paragraph ";
  size_t pos = 0;
  while ((pos = gt.find(kPrefix, pos)) != std::u32string::npos) {
    const size_t start = pos + kPrefix.size();
    size_t end = start;
    while (end < gt.size() && text::IsDecimalDigit(gt[end])) ++end;
    if (end > start) {
      return FractionEqual(Decode(prediction), std::u32string_view(gt).substr(start, end - start));
    }
    ++pos;
  }
  return 0.0;
}

double CountScore(std::string_view prediction, std::string_view ground_truth) {
  return FractionEqual(Decode(prediction), Decode(ground_truth));
}

double SequenceMatcherRatio(std::string_view a, std::string_view b) {
  return SequenceMatcherRatioU32(Decode(a), Decode(b));
}

double LevenshteinRatio(std::string_view a, std::string_view b) {
  return LevenshteinRatioU32(Decode(a), Decode(b));
}

int FuzzRatio(std::string_view a, std::string_view b, FuzzBackend backend) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  const std::u32string ua = Decode(a), ub = Decode(b);
  const double r = backend == FuzzBackend::kDifflib ? SequenceMatcherRatioU32(ua, ub)
                                                    : LevenshteinRatioU32(ua, ub);
  // Python's round() is round-half-to-even, which is nearbyint in the default rounding mode.
  return static_cast<int>(std::nearbyint(100 * r));
}

double CodeSimScore(std::string_view prediction, std::string_view ground_truth,
                    FuzzBackend backend) {
  size_t pos = prediction.find_first_not_of('\n');
  if (pos == std::string_view::npos) pos = prediction.size();
  std::string_view chosen;  // "" when every line looks like a comment or a fence
  while (pos <= prediction.size()) {
    size_t end = prediction.find('\n', pos);
    if (end == std::string_view::npos) end = prediction.size();
    const std::string_view line = prediction.substr(pos, end - pos);
    if (line.find('`') == std::string_view::npos && line.find('#') == std::string_view::npos &&
        line.find("//") == std::string_view::npos) {
      chosen = line;
      break;
    }
    pos = end + 1;
  }
  return FuzzRatio(chosen, ground_truth, backend) / 100.0;
}

std::string FirstLine(std::string_view prediction) {
  const size_t start = prediction.find_first_not_of('\n');
  if (start == std::string_view::npos) return "";
  const size_t end = prediction.find('\n', start);
  return std::string(prediction.substr(start, end == std::string_view::npos ? end : end - start));
}

std::string RulerPostprocess(std::string_view prediction) {
  std::u32string s(text::StripWhitespace(Decode(prediction)));
  for (char32_t& c : s) {
    if (c <= 0x1F) c = U'\n';
  }
  return Encode(text::StripWhitespace(s));
}

double StringMatchAll(std::string_view prediction, absl::Span<const std::string> refs) {
  if (refs.empty()) return 0.0;
  const std::u32string pred = text::Lower(Decode(prediction));
  int64_t hits = 0;
  for (const std::string& r : refs) {
    hits += pred.find(text::Lower(Decode(r))) != std::u32string::npos ? 1 : 0;
  }
  return static_cast<double>(hits) / static_cast<double>(refs.size());
}

double StringMatchPart(std::string_view prediction, absl::Span<const std::string> refs) {
  const std::u32string pred = text::Lower(Decode(prediction));
  for (const std::string& r : refs) {
    if (pred.find(text::Lower(Decode(r))) != std::u32string::npos) return 1.0;
  }
  return 0.0;
}

double PrefixMatch(std::string_view prediction, std::string_view reference) {
  const std::u32string ref = text::CollapseWhitespace(Decode(RulerPostprocess(reference)));
  if (ref.empty()) return 0.0;
  const std::u32string pred = text::CollapseWhitespace(Decode(RulerPostprocess(prediction)));
  if (pred.compare(0, ref.size(), ref) != 0) return 0.0;
  // What follows must not go on with the answer: another word after a space ("1 3 4 4 8" for
  // "1 3 4 4", a key with one digit too many) is as wrong as a longer last word ("90" for "9").
  size_t next = ref.size();
  while (next < pred.size() && pred[next] == U' ') ++next;
  return next < pred.size() && text::IsWordChar(pred[next]) ? 0.0 : 1.0;
}

}  // namespace kvwire::eval
