// One set of kept positions for a whole prompt, from any model's attention: what the scout
// chooses with its small model, and what the big node chooses with its own to measure overlap
// (seed 003's scout transfer). Scores are summed over layers and KV heads before kvcodec's
// selection runs, because the two models have different layer and head counts and only token
// positions can be shared between them.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcodec/kvcodec.h"
#include "server/engine/engine.h"

namespace kvwire::scout {

// What the prefill must compute for `config` over `num_tokens` cached tokens, with the question
// at [question_begin, question_end) of the prompt (-1 when none; clipped to the cache).
engine::PrefillOptions ScoringPrefillOptions(const kvcodec::SelectionConfig& config,
                                             int num_tokens, int question_begin, int question_end);

// Kept positions (sorted) among prefill.shape.num_tokens tokens. The question span is
// protected for Q2C. InvalidArgument when the method needs scores the prefill lacks (e.g.
// Q2C without a question).
absl::StatusOr<std::vector<int32_t>> SelectPositions(const kvcodec::SelectionConfig& config,
                                                     const engine::PrefillResult& prefill,
                                                     int question_begin, int question_end,
                                                     std::span<const int32_t> token_ids);

// OK when SelectPositions can apply `config` to a prefill of `token_ids` made with
// ScoringPrefillOptions (same question span): the same selection runs on zero scores, so a
// bad rule (Q2C without a question, parameters kvcodec refuses) fails before a prefill instead
// of after it. Cheap: one score per token.
absl::Status CheckSelection(const kvcodec::SelectionConfig& config, int question_begin,
                            int question_end, std::span<const int32_t> token_ids);

// |a ∩ b| / |b| for sorted sets (1 when b is empty).
double Overlap(std::span<const int32_t> a, std::span<const int32_t> b);

}  // namespace kvwire::scout
