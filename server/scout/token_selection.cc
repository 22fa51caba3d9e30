#include "server/scout/token_selection.h"

#include <algorithm>

namespace kvwire::scout {
namespace {

using kvcodec::SelectionMethod;

// The question clipped to the cached tokens; {0, 0} when there is none.
std::pair<int, int> ClippedQuestion(int num_tokens, int begin, int end) {
  if (begin < 0 || end <= begin) return {0, 0};
  begin = std::min(begin, num_tokens);
  end = std::min(end, num_tokens);
  return begin < end ? std::make_pair(begin, end) : std::make_pair(0, 0);
}

// kvcodec's selection among T tokens from `summed` (one layer and head; null: no scores).
absl::StatusOr<std::vector<int32_t>> SelectSummed(const kvcodec::SelectionConfig& config,
                                                  const kvcodec::ImportanceScores* summed, int T,
                                                  int head_dim, kvcodec::DType dtype,
                                                  int question_begin, int question_end,
                                                  std::span<const int32_t> token_ids) {
  kvcodec::SelectionConfig one = config;
  one.pyramid = false;  // a single layer: the budget is the mean anyway
  one.head_mode = kvcodec::HeadMode::kShared;
  if (config.method == SelectionMethod::kQ2C) {
    auto [b, e] = ClippedQuestion(T, question_begin, question_end);
    if (b == e) return absl::InvalidArgumentError("q2c selection needs a question");
    if (b == 0) {
      // The whole prompt would be the protected question: Q2C would keep every token.
      return absl::InvalidArgumentError("q2c selection needs context before the question");
    }
    one.protect_begin = b;
    one.protect_end = e;
  }
  const kvcodec::CacheShape shape{1, 1, head_dim, T, dtype};
  auto selection = kvcodec::Select(one, shape, summed, token_ids);
  if (!selection.ok()) return selection.status();
  return selection->kept[0][0];
}

}  // namespace

engine::PrefillOptions ScoringPrefillOptions(const kvcodec::SelectionConfig& config,
                                             int num_tokens, int question_begin, int question_end) {
  engine::PrefillOptions options;
  switch (config.method) {
    case SelectionMethod::kSnapKV:
      options.snapkv_window = config.window;
      break;
    case SelectionMethod::kQ2C: {
      auto [b, e] = ClippedQuestion(num_tokens, question_begin, question_end);
      if (b < e) {
        options.question_begin = b;
        options.question_end = e;
      }
      break;
    }
    case SelectionMethod::kH2O:
    case SelectionMethod::kAnchorRule:
      options.accumulated_scores = true;
      break;
    default:
      break;
  }
  return options;
}

absl::StatusOr<std::vector<int32_t>> SelectPositions(const kvcodec::SelectionConfig& config,
                                                     const engine::PrefillResult& prefill,
                                                     int question_begin, int question_end,
                                                     std::span<const int32_t> token_ids) {
  const int T = prefill.shape.num_tokens;
  const kvcodec::ImportanceScores* source = nullptr;
  if (prefill.window_scores) source = &*prefill.window_scores;
  if (prefill.question_scores) source = &*prefill.question_scores;
  if (prefill.accumulated_scores) source = &*prefill.accumulated_scores;
  kvcodec::ImportanceScores summed{1, 1, T, std::vector<float>(T, 0.0f)};
  if (source != nullptr) {
    for (int l = 0; l < source->num_layers; ++l) {
      for (int h = 0; h < source->num_kv_heads; ++h) {
        for (int t = 0; t < T; ++t) summed.values[t] += source->at(l, h, t);
      }
    }
  }
  return SelectSummed(config, source != nullptr ? &summed : nullptr, T, prefill.shape.head_dim,
                      prefill.shape.dtype, question_begin, question_end,
                      token_ids.first(std::min<size_t>(token_ids.size(), T)));
}

absl::Status CheckSelection(const kvcodec::SelectionConfig& config, int question_begin,
                            int question_end, std::span<const int32_t> token_ids) {
  const int T = static_cast<int>(token_ids.size());
  // Scores exist where the prefill will compute them (what SelectPositions sees).
  const engine::PrefillOptions scoring =
      ScoringPrefillOptions(config, T, question_begin, question_end);
  const bool scored = scoring.snapkv_window > 0 || scoring.question_begin >= 0 ||
                      scoring.accumulated_scores;
  const kvcodec::ImportanceScores zeros{1, 1, T, std::vector<float>(T, 0.0f)};
  return SelectSummed(config, scored ? &zeros : nullptr, T, /*head_dim=*/1,
                      kvcodec::DType::kFloat32, question_begin, question_end, token_ids)
      .status();
}

double Overlap(std::span<const int32_t> a, std::span<const int32_t> b) {
  if (b.empty()) return 1.0;
  size_t i = 0, j = 0, common = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] == b[j]) {
      ++common, ++i, ++j;
    } else if (a[i] < b[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return static_cast<double>(common) / b.size();
}

}  // namespace kvwire::scout
