// Token selection: which positions of the KV cache survive, per layer and KV head.
//
// Every method reduces to the same two steps per layer:
//   1. a "mandatory" mask of positions that are kept whatever their score (the protected span,
//      plus the method's own: SnapKV's window, H2O's recent tokens, StreamingLLM's sinks and
//      recent tokens, the anchor rule's sinks, recent tokens and anchor ids);
//   2. the remaining budget goes to the best-scoring non-mandatory positions, per head, shared
//      or pooled across heads (AdaKV), ranked by (score descending, token ascending).
// Budgets count mandatory tokens. When the mandatory tokens alone exceed the budget they are all
// kept anyway: they are what the method promises to keep (the question for Q2C, the observation
// window for SnapKV), and dropping some of them arbitrarily would be worse than going over.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kvcodec/kvcodec.h"

namespace kvcodec {
namespace {

// Indexed by the SelectionMethod value.
constexpr std::string_view kMethodNames[] = {"keepall",   "snapkv", "q2c",   "h2o",
                                             "streaming", "anchor", "random"};
constexpr int kNumMethods = sizeof(kMethodNames) / sizeof(kMethodNames[0]);

// Average pooling sums each kernel window directly up to this kernel size, so that equal inputs
// always give bit-identical averages (and hence ties that resolve by token index). Larger
// kernels use prefix sums to stay O(T); their averages may differ in the last bits between
// positions whose windows hold equal values, which is still deterministic.
constexpr int kMaxDirectAvgKernel = 64;

bool NeedsScores(SelectionMethod m) {
  return m == SelectionMethod::kSnapKV || m == SelectionMethod::kQ2C ||
         m == SelectionMethod::kH2O || m == SelectionMethod::kAnchorRule;
}

// keep_ratio * num_tokens rounded up. keep_ratio usually comes from decimal text ("0.1") that
// has no exact binary value, so 0.07 * 100 evaluates to 7.000000000000001; a small tolerance
// keeps that at 7 tokens rather than 8.
int64_t CeilRatio(double ratio, int num_tokens) {
  if (!(ratio > 0)) return 0;  // also NaN; the caller clamps to at least one token
  if (ratio > 1) ratio = 1;
  const double x = ratio * num_tokens;
  return static_cast<int64_t>(std::ceil(x - 1e-9 * std::max(1, num_tokens)));
}

// Tokens per head per layer before PyramidKV redistributes them.
int BaseBudget(const SelectionConfig& config, int num_tokens) {
  if (num_tokens <= 0) return 0;
  const int64_t b =
      config.budget_tokens > 0 ? config.budget_tokens : CeilRatio(config.keep_ratio, num_tokens);
  return static_cast<int>(std::clamp<int64_t>(b, 1, num_tokens));
}

constexpr int kAnchorRuleRecentTokens = 64;

// The newest tokens H2O and the anchor rule keep in a layer of `budget` tokens per head. H2O's
// paper splits the cache evenly between heavy hitters and recent tokens; a fixed count would
// exceed small budgets (64 recent tokens of a 53-token budget) and starve large ones.
int RecentTokens(const SelectionConfig& config, int budget) {
  if (config.recent_tokens != SelectionConfig::kRecentAuto) return config.recent_tokens;
  return config.method == SelectionMethod::kH2O ? budget / 2 : kAnchorRuleRecentTokens;
}

absl::Status ValidateConfig(const SelectionConfig& config, const CacheShape& shape) {
  if (shape.num_layers < 0 || shape.num_kv_heads < 0 || shape.num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection: negative cache shape (layers=", shape.num_layers,
        ", kv_heads=", shape.num_kv_heads, ", tokens=", shape.num_tokens, ")"));
  }
  const int method = static_cast<int>(config.method);
  if (method < 0 || method >= kNumMethods) {
    return absl::InvalidArgumentError(absl::StrCat("selection: unknown method value ", method));
  }
  if (!(config.keep_ratio > 0 && config.keep_ratio <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: keep_ratio must be in (0, 1], got ", config.keep_ratio));
  }
  if (config.budget_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: budget_tokens must be >= 0, got ", config.budget_tokens));
  }
  // beta < 1 would make the "pyramid" grow towards the last layer, the opposite of PyramidKV.
  if (config.pyramid && !(config.pyramid_beta >= 1 && std::isfinite(config.pyramid_beta))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection: pyramid_beta must be finite and >= 1, got ", config.pyramid_beta));
  }
  if (config.protect_begin < 0 || config.protect_end < config.protect_begin ||
      config.protect_end > shape.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection: protected span [", config.protect_begin, ", ", config.protect_end,
        ") is not a range inside [0, ", shape.num_tokens, ")"));
  }
  // Method-specific parameters are checked only for the method that reads them, so a config
  // carrying e.g. an even kernel_size is still usable with a method that ignores it.
  const SelectionMethod m = config.method;
  if (m == SelectionMethod::kSnapKV) {
    if (config.window < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("selection: window must be >= 0, got ", config.window));
    }
    if (config.kernel_size < 1 || config.kernel_size % 2 == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "selection: kernel_size must be odd and >= 1, got ", config.kernel_size));
    }
    if (config.pooling != Pooling::kMax && config.pooling != Pooling::kAvg) {
      return absl::InvalidArgumentError("selection: unknown pooling kind");
    }
  }
  if ((m == SelectionMethod::kStreamingLLM || m == SelectionMethod::kAnchorRule) &&
      config.sink_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: sink_tokens must be >= 0, got ", config.sink_tokens));
  }
  if ((m == SelectionMethod::kStreamingLLM || m == SelectionMethod::kAnchorRule ||
       m == SelectionMethod::kH2O) &&
      config.recent_tokens < 0 && config.recent_tokens != SelectionConfig::kRecentAuto) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: recent_tokens must be >= 0 or auto, got ", config.recent_tokens));
  }
  if (m != SelectionMethod::kKeepAll && config.head_mode != HeadMode::kShared &&
      config.head_mode != HeadMode::kPerHead && config.head_mode != HeadMode::kAdaptive) {
    return absl::InvalidArgumentError("selection: unknown head mode");
  }
  return absl::OkStatus();
}

absl::Status ValidateScores(const SelectionConfig& config, const CacheShape& shape,
                            const ImportanceScores* scores) {
  if (scores == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection: method ", std::string(SelectionMethodName(config.method)),
        " needs importance scores"));
  }
  if (scores->num_layers != shape.num_layers || scores->num_kv_heads != shape.num_kv_heads ||
      scores->num_tokens != shape.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "selection: scores shape (", scores->num_layers, ", ", scores->num_kv_heads, ", ",
        scores->num_tokens, ") does not match the cache (", shape.num_layers, ", ",
        shape.num_kv_heads, ", ", shape.num_tokens, ")"));
  }
  const size_t expected = static_cast<size_t>(shape.num_layers) * shape.num_kv_heads *
                          static_cast<size_t>(shape.num_tokens);
  if (scores->values.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("selection: scores hold ",
                                                   scores->values.size(), " values, expected ",
                                                   expected));
  }
  // Infinities are rejected with NaN: attention mass is finite, and +inf next to -inf would
  // turn into NaN under average pooling and break the ordering the ranking relies on.
  for (size_t i = 0; i < expected; ++i) {
    if (!std::isfinite(scores->values[i])) {
      const size_t per_layer = static_cast<size_t>(shape.num_kv_heads) * shape.num_tokens;
      return absl::InvalidArgumentError(absl::StrCat(
          "selection: non-finite score ", scores->values[i], " at layer ", i / per_layer,
          ", head ", (i % per_layer) / shape.num_tokens, ", token ", i % shape.num_tokens));
    }
  }
  return absl::OkStatus();
}

// 1-D pooling with 'same' output size: out[t] pools in[t - k/2 .. t + k/2] clipped to [0, n).
// Clipping (rather than zero padding) means the borders average over the elements that exist,
// so a border token is not penalised for sitting next to the start of the prompt or the window.
void Pool1D(const float* in, int n, int kernel_size, Pooling kind, double* out) {
  const int r = kernel_size / 2;
  if (r == 0) {
    for (int t = 0; t < n; ++t) out[t] = in[t];
    return;
  }
  if (kind == Pooling::kMax) {
    // Monotonic deque of indices whose values decrease: O(n) for any kernel size.
    std::vector<int> dq(n);
    int head = 0, tail = 0, next = 0;
    for (int t = 0; t < n; ++t) {
      const int hi = std::min<int64_t>(n - 1, static_cast<int64_t>(t) + r);
      for (; next <= hi; ++next) {
        while (tail > head && in[dq[tail - 1]] <= in[next]) --tail;
        dq[tail++] = next;
      }
      while (dq[head] < t - r) ++head;
      out[t] = in[dq[head]];
    }
    return;
  }
  if (kernel_size <= kMaxDirectAvgKernel) {
    for (int t = 0; t < n; ++t) {
      const int lo = std::max(0, t - r);
      const int hi = std::min(n - 1, t + r);
      double sum = 0;
      for (int j = lo; j <= hi; ++j) sum += in[j];
      out[t] = sum / (hi - lo + 1);
    }
    return;
  }
  std::vector<double> prefix(static_cast<size_t>(n) + 1, 0.0);
  for (int t = 0; t < n; ++t) prefix[t + 1] = prefix[t] + in[t];
  for (int t = 0; t < n; ++t) {
    const int lo = std::max(0, t - r);
    const int hi = std::min<int64_t>(n - 1, static_cast<int64_t>(t) + r);
    out[t] = (prefix[hi + 1] - prefix[lo]) / (hi - lo + 1);
  }
}

// Seeds one layer's random stream. Each layer gets its own mt19937_64 so that a layer's draw
// does not depend on how many tokens or heads other layers have. The mix is SplitMix64's
// finaliser, fully specified here, and mt19937_64's output sequence is fixed by the C++
// standard, so the stream is the same on every platform and standard library.
uint64_t LayerSeed(uint64_t seed, int layer) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(layer) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform double in [0, 1) from the top 53 bits of one engine output. Done by hand because
// std::uniform_*_distribution are implementation-defined and differ between standard libraries.
double Uniform01(std::mt19937_64& engine) {
  return static_cast<double>(engine() >> 11) * 0x1.0p-53;
}

struct Candidate {
  double score;
  int32_t token;
  int32_t head;
};

// Strict total order: higher score first, then lower token index, then lower head index, so
// ties resolve deterministically regardless of the partitioning algorithm.
bool Better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.token != b.token) return a.token < b.token;
  return a.head < b.head;
}

// AdaKV's safeguard (alpha): the share of its own budget every head keeps whatever the other
// heads score, the value AdaKV's authors use.
constexpr double kAdaKVSafeguard = 0.2;

// Leaves the k best candidates (in no particular order) in `c`. Average O(n).
void KeepBest(std::vector<Candidate>& c, size_t k) {
  if (k >= c.size()) return;
  std::nth_element(c.begin(), c.begin() + k, c.end(), Better);
  c.resize(k);
}

// Everything Select needs about one call, prepared once.
class Selector {
 public:
  Selector(const SelectionConfig& config, const CacheShape& shape,
           const ImportanceScores* scores, std::span<const int32_t> token_ids)
      : config_(config),
        num_heads_(shape.num_kv_heads),
        num_tokens_(shape.num_tokens),
        scores_(scores),
        token_ids_(token_ids) {
    if (config.method == SelectionMethod::kAnchorRule) {
      anchor_ids_ = config.anchor_token_ids;
      std::sort(anchor_ids_.begin(), anchor_ids_.end());
    }
  }

  // kept[h] for every head of `layer` under `budget` tokens per head.
  std::vector<std::vector<int32_t>> SelectLayer(int layer, int budget) {
    const int mandatory = BuildMandatory(budget);
    std::vector<std::vector<int32_t>> kept(num_heads_);
    if (num_heads_ == 0) return kept;
    const size_t extra = budget > mandatory ? static_cast<size_t>(budget - mandatory) : 0;
    // StreamingLLM keeps its mandatory tokens and nothing else. With nothing left to choose
    // from (or no room left), every head keeps exactly the mandatory set.
    if (config_.method == SelectionMethod::kStreamingLLM || mandatory >= num_tokens_ ||
        extra == 0) {
      std::vector<int32_t> indices = MaskToIndices(mandatory_);
      for (auto& k : kept) k = indices;
      return kept;
    }
    if (config_.method == SelectionMethod::kRandom) engine_.seed(LayerSeed(config_.seed, layer));

    switch (config_.head_mode) {
      case HeadMode::kShared: {
        // Sum of the (pooled) per-head scores; random draws one value per token instead.
        std::vector<double> total(num_tokens_, 0.0);
        if (config_.method == SelectionMethod::kRandom) {
          FillRandom(total);
        } else {
          for (int h = 0; h < num_heads_; ++h) {
            HeadScores(layer, h, head_scores_);
            for (int t = 0; t < num_tokens_; ++t) total[t] += head_scores_[t];
          }
        }
        CollectCandidates(total, 0, candidates_, /*append=*/false);
        KeepBest(candidates_, extra);
        std::vector<int32_t> indices = MarkAndCollect(candidates_, -1);
        for (auto& k : kept) k = indices;
        return kept;
      }
      case HeadMode::kPerHead: {
        for (int h = 0; h < num_heads_; ++h) {
          HeadScores(layer, h, head_scores_);
          CollectCandidates(head_scores_, h, candidates_, /*append=*/false);
          KeepBest(candidates_, extra);
          kept[h] = MarkAndCollect(candidates_, -1);
        }
        return kept;
      }
      case HeadMode::kAdaptive: {
        // AdaKV: the layer's whole non-mandatory budget, heads * (budget - mandatory), goes to
        // the best (head, token) pairs of the layer. Every head still keeps the mandatory set,
        // and a head can hold at most num_tokens because each (head, token) is one candidate.
        // As in AdaKV, each head is first guaranteed its own best kAdaKVSafeguard share of its
        // budget, so a head whose scores are flat is not left with the mandatory set alone.
        const size_t guaranteed = static_cast<size_t>(extra * kAdaKVSafeguard);
        guaranteed_.clear();
        candidates_.clear();  // the pool the layer-wide choice draws from
        for (int h = 0; h < num_heads_; ++h) {
          HeadScores(layer, h, head_scores_);
          CollectCandidates(head_scores_, h, head_candidates_, /*append=*/false);
          const size_t own = std::min(guaranteed, head_candidates_.size());
          std::nth_element(head_candidates_.begin(), head_candidates_.begin() + own,
                           head_candidates_.end(), Better);
          guaranteed_.insert(guaranteed_.end(), head_candidates_.begin(),
                             head_candidates_.begin() + own);
          candidates_.insert(candidates_.end(), head_candidates_.begin() + own,
                             head_candidates_.end());
        }
        KeepBest(candidates_, extra * num_heads_ - guaranteed_.size());
        candidates_.insert(candidates_.end(), guaranteed_.begin(), guaranteed_.end());
        for (int h = 0; h < num_heads_; ++h) kept[h] = MarkAndCollect(candidates_, h);
        return kept;
      }
    }
    return kept;
  }

 private:
  // Fills mandatory_ for a layer with `budget` tokens per head; returns how many are set.
  int BuildMandatory(int budget) {
    const int n = num_tokens_;
    mandatory_.assign(n, 0);
    auto mark_range = [&](int64_t begin, int64_t end) {
      begin = std::clamp<int64_t>(begin, 0, n);
      end = std::clamp<int64_t>(end, 0, n);
      for (int64_t t = begin; t < end; ++t) mandatory_[t] = 1;
    };
    mark_range(config_.protect_begin, config_.protect_end);
    switch (config_.method) {
      case SelectionMethod::kKeepAll:
        mark_range(0, n);
        break;
      case SelectionMethod::kSnapKV:
        // The observation window itself; a window as long as the prompt keeps everything.
        mark_range(static_cast<int64_t>(n) - config_.window, n);
        break;
      case SelectionMethod::kH2O:
        mark_range(static_cast<int64_t>(n) - RecentTokens(config_, budget), n);
        break;
      case SelectionMethod::kStreamingLLM: {
        // StreamingLLM's cache is sinks plus a sliding window, and its size is the budget: the
        // sinks (and the protected span) are kept whatever the budget, then the window is filled
        // from the newest token backwards until the budget is spent. recent_tokens does not
        // apply (it is H2O's and the anchor rule's), so keep=0.25 means a quarter of the prompt.
        mark_range(0, config_.sink_tokens);
        int count = static_cast<int>(std::count(mandatory_.begin(), mandatory_.end(), 1));
        for (int64_t t = static_cast<int64_t>(n) - 1; t >= 0 && count < budget; --t) {
          if (!mandatory_[t]) {
            mandatory_[t] = 1;
            ++count;
          }
        }
        return count;
      }
      case SelectionMethod::kAnchorRule:
        mark_range(0, config_.sink_tokens);
        mark_range(static_cast<int64_t>(n) - RecentTokens(config_, budget), n);
        if (!anchor_ids_.empty()) {
          for (int t = 0; t < n; ++t) {
            if (std::binary_search(anchor_ids_.begin(), anchor_ids_.end(), token_ids_[t])) {
              mandatory_[t] = 1;
            }
          }
        }
        break;
      case SelectionMethod::kQ2C:
      case SelectionMethod::kRandom:
        break;
    }
    return static_cast<int>(std::count(mandatory_.begin(), mandatory_.end(), 1));
  }

  void FillRandom(std::vector<double>& out) {
    // One draw per token, mandatory ones included, so the protected span does not shift the
    // stream for the other tokens.
    out.resize(num_tokens_);
    for (int t = 0; t < num_tokens_; ++t) out[t] = Uniform01(engine_);
  }

  // Scores of head `head` in `layer` for ranking. Only non-mandatory positions are read later.
  void HeadScores(int layer, int head, std::vector<double>& out) {
    out.resize(num_tokens_);
    if (config_.method == SelectionMethod::kRandom) {
      // Heads are visited in order, so the layer stream is head-major, token-minor.
      FillRandom(out);
      return;
    }
    const float* raw = scores_->values.data() +
                       (static_cast<size_t>(layer) * num_heads_ + head) * num_tokens_;
    // SnapKV and Q2C pool the scores so that a kept token brings its neighbours: the question's
    // attention peaks on one token of a multi-token answer (the first digit of a pass key, say),
    // and the tokens next to it are what generation reads after it. The span whose queries gave
    // the scores (SnapKV's window, Q2C's question) is kept anyway and left out of the pooling,
    // so that its own scores (mostly attention to itself) do not spill onto its neighbours.
    if (config_.method == SelectionMethod::kSnapKV) {
      PoolAround(raw, std::max(0, num_tokens_ - std::max(0, config_.window)), num_tokens_, out);
      return;
    }
    if (config_.method == SelectionMethod::kQ2C) {
      const int begin = std::clamp(config_.protect_begin, 0, num_tokens_);
      PoolAround(raw, begin, std::clamp(config_.protect_end, begin, num_tokens_), out);
      return;
    }
    for (int t = 0; t < num_tokens_; ++t) out[t] = raw[t];
  }

  // Pools [0, begin) and [end, num_tokens) separately; [begin, end) scores 0.
  void PoolAround(const float* raw, int begin, int end, std::vector<double>& out) const {
    Pool1D(raw, begin, config_.kernel_size, config_.pooling, out.data());
    std::fill(out.begin() + begin, out.begin() + end, 0.0);
    Pool1D(raw + end, num_tokens_ - end, config_.kernel_size, config_.pooling, out.data() + end);
  }

  void CollectCandidates(const std::vector<double>& scores, int head, std::vector<Candidate>& out,
                         bool append) {
    if (!append) out.clear();
    for (int t = 0; t < num_tokens_; ++t) {
      if (!mandatory_[t]) out.push_back({scores[t], t, head});
    }
  }

  // Mandatory tokens plus the candidates of `head` (-1: all candidates), ascending and unique.
  std::vector<int32_t> MarkAndCollect(const std::vector<Candidate>& chosen, int head) {
    chosen_ = mandatory_;
    for (const Candidate& c : chosen) {
      if (head < 0 || c.head == head) chosen_[c.token] = 1;
    }
    return MaskToIndices(chosen_);
  }

  static std::vector<int32_t> MaskToIndices(const std::vector<uint8_t>& mask) {
    std::vector<int32_t> out;
    out.reserve(std::count(mask.begin(), mask.end(), 1));
    for (size_t t = 0; t < mask.size(); ++t) {
      if (mask[t]) out.push_back(static_cast<int32_t>(t));
    }
    return out;
  }

  const SelectionConfig& config_;
  const int num_heads_;
  const int num_tokens_;
  const ImportanceScores* scores_;
  std::span<const int32_t> token_ids_;
  std::vector<int32_t> anchor_ids_;  // sorted
  std::mt19937_64 engine_;
  // Scratch, reused across heads and layers.
  std::vector<uint8_t> mandatory_;
  std::vector<uint8_t> chosen_;
  std::vector<double> head_scores_;
  std::vector<Candidate> candidates_;
  std::vector<Candidate> head_candidates_;  // AdaKV: one head's, before its guaranteed share
  std::vector<Candidate> guaranteed_;       // AdaKV: every head's guaranteed share
};

}  // namespace

std::string_view SelectionMethodName(SelectionMethod method) {
  const int i = static_cast<int>(method);
  return i >= 0 && i < kNumMethods ? kMethodNames[i] : std::string_view("unknown");
}

absl::StatusOr<SelectionMethod> ParseSelectionMethod(std::string_view name) {
  for (int i = 0; i < kNumMethods; ++i) {
    if (name == kMethodNames[i]) return static_cast<SelectionMethod>(i);
  }
  // std::string copies: this absl build's string_view is its own type, not std::string_view.
  std::vector<std::string> valid(std::begin(kMethodNames), std::end(kMethodNames));
  return absl::InvalidArgumentError(absl::StrCat("unknown selection method \"", std::string(name),
                                                 "\"; valid: ", absl::StrJoin(valid, ", ")));
}

Selection Selection::KeepAll(const CacheShape& shape) {
  std::vector<int32_t> all(std::max(0, shape.num_tokens));
  for (size_t t = 0; t < all.size(); ++t) all[t] = static_cast<int32_t>(t);
  Selection s;
  s.kept.assign(std::max(0, shape.num_layers),
                std::vector<std::vector<int32_t>>(std::max(0, shape.num_kv_heads), all));
  return s;
}

uint64_t Selection::kept_tokens() const {
  uint64_t total = 0;
  for (const auto& layer : kept) {
    for (const auto& head : layer) total += head.size();
  }
  return total;
}

// Tokens every layer keeps whatever the budget and the scores say: the protected span and the
// method's fixed ranges (SnapKV's window, H2O's recent tokens, the anchor rule's sinks and
// recent tokens), as a union. Anchor-id tokens depend on the prompt and are not counted.
static int FixedMandatoryTokens(const SelectionConfig& config, int num_tokens) {
  std::vector<std::pair<int64_t, int64_t>> ranges = {{config.protect_begin, config.protect_end}};
  const int64_t n = num_tokens;
  switch (config.method) {
    case SelectionMethod::kSnapKV:
      ranges.push_back({n - config.window, n});
      break;
    case SelectionMethod::kH2O:
      // Automatic recent tokens are a share of each layer's budget, not a fixed count.
      if (config.recent_tokens != SelectionConfig::kRecentAuto) {
        ranges.push_back({n - config.recent_tokens, n});
      }
      break;
    case SelectionMethod::kAnchorRule:
      ranges.push_back({0, config.sink_tokens});
      ranges.push_back({n - RecentTokens(config, 0), n});
      break;
    default:
      break;
  }
  for (auto& [b, e] : ranges) {
    b = std::clamp<int64_t>(b, 0, n);
    e = std::clamp<int64_t>(e, b, n);
  }
  std::sort(ranges.begin(), ranges.end());
  int64_t count = 0, covered_to = 0;
  for (const auto& [b, e] : ranges) {
    const int64_t from = std::max(b, covered_to);
    if (e > from) count += e - from;
    covered_to = std::max(covered_to, e);
  }
  return static_cast<int>(count);
}

// PyramidKV. As in the PyramidKV paper, the pyramid shapes only the selectable part of the
// budget: every layer keeps the method's fixed tokens (`reserved`: the observation window for
// SnapKV) plus a share of mean - reserved selected tokens on a line from `first` (layer 0) to
// `last` (the last layer), last = max(1, selectable / beta) and first = 2 * selectable - last, so
// the real-valued line has exactly the base budget as its mean. If the first layer's budget
// would exceed num_tokens, it is pinned to num_tokens and `last` raised to keep the mean: the
// slope flattens instead of the mean dropping (a keep-all budget therefore stays keep-all in
// every layer). The line is then rounded with the largest-remainder method (ties to the lower
// layer), which keeps the integer sum at exactly num_layers * mean and the budgets
// non-increasing. A budget no larger than the reserved tokens stays flat.
//
// LayerBudgets has no error channel: for a config Select would reject it returns the budgets of
// the nearest valid one (keep_ratio clamped into (0, 1], beta below 1 treated as 1).
std::vector<int> LayerBudgets(const SelectionConfig& config, const CacheShape& shape) {
  const int num_layers = std::max(0, shape.num_layers);
  const int num_tokens = std::max(0, shape.num_tokens);
  const int mean = BaseBudget(config, num_tokens);
  std::vector<int> budgets(num_layers, mean);
  if (!config.pyramid || num_layers <= 1 || num_tokens == 0) return budgets;
  const int reserved = FixedMandatoryTokens(config, num_tokens);
  const int selectable = mean - reserved;
  if (selectable <= 0) return budgets;

  const double beta = config.pyramid_beta >= 1 ? config.pyramid_beta : 1.0;  // NaN -> 1
  const int room = num_tokens - reserved;  // most tokens a layer can select
  double last = std::max(1.0, selectable / beta);
  double first = 2.0 * selectable - last;
  if (first > room) {
    first = room;
    last = 2.0 * selectable - room;
  }
  std::vector<int64_t> floors(num_layers);
  std::vector<double> fractions(num_layers);
  int64_t sum = 0;
  for (int l = 0; l < num_layers; ++l) {
    const double value = first + (last - first) * l / (num_layers - 1);
    floors[l] = static_cast<int64_t>(std::floor(value));
    fractions[l] = value - floors[l];
    sum += floors[l];
  }
  const int64_t remainder =
      std::clamp<int64_t>(static_cast<int64_t>(selectable) * num_layers - sum, 0, num_layers);
  std::vector<int> order(num_layers);
  for (int l = 0; l < num_layers; ++l) order[l] = l;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return fractions[a] > fractions[b]; });
  for (int64_t i = 0; i < remainder; ++i) ++floors[order[i]];
  for (int l = 0; l < num_layers; ++l) {
    // Only floating-point error could push a value out of range; clamp as a safety net.
    budgets[l] = reserved + static_cast<int>(std::clamp<int64_t>(floors[l], 1, room));
  }
  return budgets;
}

absl::StatusOr<Selection> Select(const SelectionConfig& config, const CacheShape& shape,
                                 const ImportanceScores* scores,
                                 std::span<const int32_t> token_ids) {
  if (absl::Status s = ValidateConfig(config, shape); !s.ok()) return s;
  if (NeedsScores(config.method)) {
    if (absl::Status s = ValidateScores(config, shape, scores); !s.ok()) return s;
  }
  if (config.method == SelectionMethod::kAnchorRule &&
      token_ids.size() != static_cast<size_t>(shape.num_tokens)) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: anchor rule needs one token id per token; got ",
                     token_ids.size(), " ids for ", shape.num_tokens, " tokens"));
  }
  if (config.method == SelectionMethod::kKeepAll) return Selection::KeepAll(shape);

  Selection selection;
  selection.kept.resize(shape.num_layers);
  if (shape.num_tokens == 0) {
    // An empty cache is not an error: every head keeps nothing.
    for (auto& layer : selection.kept) layer.resize(shape.num_kv_heads);
    return selection;
  }
  const std::vector<int> budgets = LayerBudgets(config, shape);
  Selector selector(config, shape, scores, token_ids);
  for (int l = 0; l < shape.num_layers; ++l) {
    selection.kept[l] = selector.SelectLayer(l, budgets[l]);
  }
  return selection;
}

}  // namespace kvcodec
