// The arithmetic of the fidelity measures (issue 9): how far a compressed KV cache moves a model
// from what its full cache produces, measured without labels. Plain C++ (Eigen for the small
// matrix products); the engine-driven part lives in runner.h.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace kvwire::eval {

// Index of the largest logit (the first one on ties).
int32_t Argmax(std::span<const float> logits);

// Natural-log softmax, computed in double.
std::vector<double> LogSoftmax(std::span<const float> logits);

// KL(P || Q) in nats, P = softmax(reference), Q = softmax(candidate): how much the candidate's
// next-token distribution loses against the reference's. Exactly 0 for identical logits (the
// same bits give the same log-probabilities, so every term is p * 0); never negative (rounding
// below zero is clamped). Sizes must match.
double KlDivergence(std::span<const float> reference_logits, std::span<const float> candidate_logits);

// -log softmax(logits)[token].
double NegLogLikelihood(std::span<const float> logits, int32_t token);

// Sums over teacher-forced steps; every field adds, so partial results merge.
struct FidelitySums {
  int64_t steps = 0;       // compared next-token distributions
  int64_t agreements = 0;  // steps where the candidate's argmax equals the reference's
  double kl_sum = 0;       // sum of KlDivergence(reference, candidate)
  // Perplexity of a held-out continuation: NLL of its tokens under each cache.
  int64_t nll_tokens = 0;
  double nll_candidate = 0;
  double nll_reference = 0;

  void AddStep(std::span<const float> reference_logits, std::span<const float> candidate_logits);
  void AddToken(std::span<const float> reference_logits, std::span<const float> candidate_logits,
                int32_t token);
  void Merge(const FidelitySums& other);
  double agreement() const;  // agreements / steps (NaN without steps)
  double mean_kl() const;
  double perplexity_candidate() const;  // exp(mean NLL), NaN without tokens
  double perplexity_reference() const;
};

// Sum of squares of (a - b) and of a, for relative errors ||a - b|| / ||a|| accumulated over
// many blocks. Sizes must match.
struct ErrorSums {
  double diff2 = 0;
  double ref2 = 0;
  void Add(std::span<const float> reference, std::span<const float> candidate);
  // sqrt(diff2 / ref2); 0 when both are 0, NaN when only the reference is 0 (undefined).
  double relative() const;
};

// One attention head's output for a block of queries, as the engine computes it: scores
// q . k / sqrt(head_dim), causal (a key is visible to a query at position p when its position is
// <= p, and, with a sliding window w, > p - w), softmax, weighted sum of values.
//   queries:   [num_queries, head_dim], positions query_positions (one each)
//   keys/vals: [num_keys, head_dim], positions key_positions (one each)
//   out:       [num_queries, head_dim]
// A query that sees no key gets a zero output.
void AttentionOutput(std::span<const float> queries, std::span<const int32_t> query_positions,
                     std::span<const float> keys, std::span<const float> values,
                     std::span<const int32_t> key_positions, int head_dim,
                     std::optional<int64_t> sliding_window, std::span<float> out);

}  // namespace kvwire::eval
