#include "client/eval/fidelity_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>

namespace kvwire::eval {

int32_t Argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

std::vector<double> LogSoftmax(std::span<const float> logits) {
  std::vector<double> out(logits.size());
  if (logits.empty()) return out;
  double max = logits[0];
  for (float x : logits) max = std::max(max, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  const double log_z = max + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - log_z;
  return out;
}

double KlDivergence(std::span<const float> reference_logits, std::span<const float> candidate_logits) {
  const std::vector<double> lp = LogSoftmax(reference_logits);
  const std::vector<double> lq = LogSoftmax(candidate_logits);
  double kl = 0;
  for (size_t i = 0; i < lp.size() && i < lq.size(); ++i) {
    const double p = std::exp(lp[i]);
    if (p > 0) kl += p * (lp[i] - lq[i]);
  }
  return std::max(0.0, kl);
}

double NegLogLikelihood(std::span<const float> logits, int32_t token) {
  return -LogSoftmax(logits)[static_cast<size_t>(token)];
}

void FidelitySums::AddStep(std::span<const float> reference_logits,
                           std::span<const float> candidate_logits) {
  ++steps;
  if (Argmax(reference_logits) == Argmax(candidate_logits)) ++agreements;
  kl_sum += KlDivergence(reference_logits, candidate_logits);
}

void FidelitySums::AddToken(std::span<const float> reference_logits,
                            std::span<const float> candidate_logits, int32_t token) {
  ++nll_tokens;
  nll_reference += NegLogLikelihood(reference_logits, token);
  nll_candidate += NegLogLikelihood(candidate_logits, token);
}

void FidelitySums::Merge(const FidelitySums& o) {
  steps += o.steps;
  agreements += o.agreements;
  kl_sum += o.kl_sum;
  nll_tokens += o.nll_tokens;
  nll_candidate += o.nll_candidate;
  nll_reference += o.nll_reference;
}

double FidelitySums::agreement() const {
  return steps ? static_cast<double>(agreements) / static_cast<double>(steps)
               : std::numeric_limits<double>::quiet_NaN();
}

double FidelitySums::mean_kl() const {
  return steps ? kl_sum / static_cast<double>(steps) : std::numeric_limits<double>::quiet_NaN();
}

double FidelitySums::perplexity_candidate() const {
  return nll_tokens ? std::exp(nll_candidate / static_cast<double>(nll_tokens))
                    : std::numeric_limits<double>::quiet_NaN();
}

double FidelitySums::perplexity_reference() const {
  return nll_tokens ? std::exp(nll_reference / static_cast<double>(nll_tokens))
                    : std::numeric_limits<double>::quiet_NaN();
}

void ErrorSums::Add(std::span<const float> reference, std::span<const float> candidate) {
  for (size_t i = 0; i < reference.size() && i < candidate.size(); ++i) {
    const double r = reference[i];
    const double d = static_cast<double>(candidate[i]) - r;
    diff2 += d * d;
    ref2 += r * r;
  }
}

double ErrorSums::relative() const {
  if (ref2 == 0) return diff2 == 0 ? 0.0 : std::numeric_limits<double>::quiet_NaN();
  return std::sqrt(diff2 / ref2);
}

void AttentionOutput(std::span<const float> queries, std::span<const int32_t> query_positions,
                     std::span<const float> keys, std::span<const float> values,
                     std::span<const int32_t> key_positions, int head_dim,
                     std::optional<int64_t> sliding_window, std::span<float> out) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Index nq = static_cast<Eigen::Index>(query_positions.size());
  const Eigen::Index nk = static_cast<Eigen::Index>(key_positions.size());
  Eigen::Map<Matrix> o(out.data(), nq, head_dim);
  if (nk == 0) {
    o.setZero();
    return;
  }
  Eigen::Map<const Matrix> q(queries.data(), nq, head_dim);
  Eigen::Map<const Matrix> k(keys.data(), nk, head_dim);
  Eigen::Map<const Matrix> v(values.data(), nk, head_dim);
  Matrix scores = (q * k.transpose()) * (1.0f / std::sqrt(static_cast<float>(head_dim)));
  for (Eigen::Index i = 0; i < nq; ++i) {
    const int64_t p = query_positions[i];
    float max = -std::numeric_limits<float>::infinity();
    for (Eigen::Index j = 0; j < nk; ++j) {
      const int64_t kp = key_positions[j];
      const bool visible = kp <= p && (!sliding_window || p - kp < *sliding_window);
      if (!visible) scores(i, j) = -std::numeric_limits<float>::infinity();
      max = std::max(max, scores(i, j));
    }
    if (max == -std::numeric_limits<float>::infinity()) {
      scores.row(i).setZero();
      continue;
    }
    double sum = 0;
    for (Eigen::Index j = 0; j < nk; ++j) {
      const float e = std::exp(scores(i, j) - max);
      scores(i, j) = e;
      sum += e;
    }
    scores.row(i) /= static_cast<float>(sum);
  }
  o.noalias() = scores * v;
}

}  // namespace kvwire::eval
