// Token generation on top of a DecodeSession: greedy or temperature / top-k / top-p sampling
// with a seed, stopping on EOS ids, stop strings or a token limit. No libtorch here.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/engine.h"

namespace kvwire::engine {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  float top_p = 1.0f;        // nucleus: smallest set of tokens whose probability reaches top_p
  int top_k = 0;             // 0 = no limit
  uint64_t seed = 0;
};

// Draws tokens from logits. Deterministic for a seed on every platform (own PRNG).
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // InvalidArgument for empty logits or NaN; options are checked by ValidateSampling.
  absl::StatusOr<int32_t> Sample(std::span<const float> logits);

 private:
  SamplingOptions options_;
  uint64_t state_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

absl::Status ValidateSampling(const SamplingOptions& options);

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<int32_t> eos_ids;
  // Generation stops when the text contains one of these; the text is cut before it.
  std::vector<std::string> stop_strings;
  // Text of each new token (e.g. tokenizer::StreamingDecoder::Push); needed for stop strings
  // and for GenerateResult::text. May be empty when neither is wanted.
  std::function<std::string(int32_t)> detokenize;
  // Asked before every forward pass; a non-OK status (the caller went away, its deadline passed)
  // ends generation at once and Generate returns that status. Unset: never interrupted.
  std::function<absl::Status()> interrupt;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the stopping EOS included)
  std::string text;             // detokenized, cut before a stop string
  std::string finish_reason;    // "eos", "stop" or "length"
};

// Samples the first token from `prompt_logits` (the prefill's last logits), then steps the
// session until a stop condition. InvalidArgument for bad options; `options.interrupt`'s status
// when it stops the loop.
absl::StatusOr<GenerateResult> Generate(DecodeSession& session, std::span<const float> prompt_logits,
                                        const GenerateOptions& options);

}  // namespace kvwire::engine
