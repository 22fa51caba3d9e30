#include "server/engine/generate.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace kvwire::engine {
namespace {

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int32_t Argmax(std::span<const float> logits) {
  // Ties go to the lower id, as torch.argmax does on CPU.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace

absl::Status ValidateSampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0 && o.temperature <= 100)) {
    return absl::InvalidArgumentError("temperature must be in [0, 100]");
  }
  if (!(o.top_p > 0 && o.top_p <= 1)) return absl::InvalidArgumentError("top_p must be in (0, 1]");
  if (o.top_k < 0) return absl::InvalidArgumentError("top_k must be >= 0");
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), state_(options.seed) {}

absl::StatusOr<int32_t> Sampler::Sample(std::span<const float> logits) {
  if (logits.empty()) return absl::InvalidArgumentError("empty logits");
  for (float l : logits) {
    if (std::isnan(l)) return absl::InvalidArgumentError("NaN in logits");
  }
  if (options_.temperature == 0 || options_.top_k == 1) return Argmax(logits);
  // Sorted candidates, best first; ties by lower id so the draw is reproducible.
  scratch_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) scratch_[i] = {logits[i], static_cast<int32_t>(i)};
  size_t n = scratch_.size();
  auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    n = options_.top_k;
    std::partial_sort(scratch_.begin(), scratch_.begin() + n, scratch_.end(), better);
  } else {
    std::sort(scratch_.begin(), scratch_.end(), better);
  }
  const double max_logit = scratch_[0].first;
  std::vector<double> probs(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    probs[i] = std::exp((scratch_[i].first - max_logit) / options_.temperature);
    total += probs[i];
  }
  // Nucleus: keep the smallest prefix whose mass reaches top_p (at least one token).
  size_t keep = n;
  if (options_.top_p < 1) {
    double mass = 0;
    for (size_t i = 0; i < n; ++i) {
      mass += probs[i] / total;
      if (mass >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_total = 0;
  for (size_t i = 0; i < keep; ++i) kept_total += probs[i];
  const double u = (SplitMix(state_) >> 11) * (1.0 / 9007199254740992.0) * kept_total;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs[i];
    if (u < acc) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

absl::StatusOr<GenerateResult> Generate(DecodeSession& session, std::span<const float> prompt_logits,
                                        const GenerateOptions& options) {
  if (absl::Status s = ValidateSampling(options.sampling); !s.ok()) return s;
  if (options.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens must be >= 0");
  if (!options.stop_strings.empty() && !options.detokenize) {
    return absl::InvalidArgumentError("stop strings need a detokenizer");
  }
  for (const std::string& s : options.stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError("empty stop string");
  }
  GenerateResult result;
  result.finish_reason = "length";
  Sampler sampler(options.sampling);
  std::vector<float> logits(prompt_logits.begin(), prompt_logits.end());
  for (int i = 0; i < options.max_new_tokens; ++i) {
    auto token = sampler.Sample(logits);
    if (!token.ok()) return token.status();
    result.tokens.push_back(*token);
    if (options.detokenize) {
      result.text += options.detokenize(*token);
      size_t cut = std::string::npos;
      for (const std::string& stop : options.stop_strings) cut = std::min(cut, result.text.find(stop));
      if (cut != std::string::npos) {
        result.text.resize(cut);
        result.finish_reason = "stop";
        return result;
      }
    }
    if (std::find(options.eos_ids.begin(), options.eos_ids.end(), *token) != options.eos_ids.end()) {
      result.finish_reason = "eos";
      return result;
    }
    if (i + 1 == options.max_new_tokens) break;  // the last token needs no forward pass
    if (options.interrupt) {
      if (absl::Status s = options.interrupt(); !s.ok()) return s;
    }
    auto next = session.Step(*token);
    if (!next.ok()) return next.status();
    logits = *std::move(next);
  }
  return result;
}

}  // namespace kvwire::engine
