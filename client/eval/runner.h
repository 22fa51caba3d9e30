// The in-process evaluation: runs the engine on an example or a text sample once, then every
// codec configuration on the same prefill, and reports a record per configuration with its
// task score, bytes, time and fidelity to the full cache.
//
// Per example:
//   1. the prompt (the prefill node's BuildPrompt: context + "\n" + question) is split like the
//      service splits it: the cache covers the first T-1 tokens, the last token is stepped on
//      the decode side and its logits start generation;
//   2. one prefill computes the cache and every importance score the configurations need
//      (SnapKV window, Q2C question span, H2O accumulation) and, for the attention error, the
//      post-RoPE queries;
//   3. the reference is the full cache rebuilt without the codec, decoded by the same
//      DecodeSession path, so a lossless configuration reproduces its logits bit for bit;
//   4. each configuration selects, encodes a frame, decodes it, rebuilds a session and
//      generates greedily; fidelity compares its next-token distributions with the reference's
//      along the reference's own greedy tokens (teacher forcing), and text samples also score
//      the held-out continuation (perplexity).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/eval/matrix.h"
#include "client/eval/records.h"
#include "client/eval/tasks.h"
#include "server/nodes/model.h"

namespace kvwire::eval {

struct RunnerOptions {
  // Tokens generated for task examples; 0 = TaskMaxNewTokens(task).
  int max_new_tokens = 0;
  // Next-token distributions compared with the full cache's per example (teacher-forced on
  // the full cache's greedy tokens). 0 disables agreement/KL.
  int fidelity_tokens = 16;
  // Measure the attention output error at the observation window (the last
  // `observation_window` cached positions). Costs one extra query buffer per layer.
  bool attention_error = true;
  int observation_window = 32;
  // The small model of SelectionSource::kScout configurations (not owned). It must tokenize
  // prompts exactly like the evaluated model.
  const nodes::NodeModel* scout = nullptr;
};

// The generation limit of LongBench's dataset2maxlen and RULER's task configs; 32 for kvwire's
// tasks and anything unknown.
int TaskMaxNewTokens(std::string_view task);

// A held-out piece of plain text: the model reads `context` (the cache) and is scored on
// predicting `continuation`.
struct TextSample {
  std::string id;
  std::vector<int32_t> context;       // at least 2 tokens
  std::vector<int32_t> continuation;  // at least 1 token
};

// Cuts `tokens` into consecutive, non-overlapping samples of context_tokens + continuation_tokens
// (each context starting with `bos` when given), at most max_samples of them (0 = as many as
// fit). If not even one full sample fits, one shorter sample is made with the last
// continuation_tokens as its continuation, provided at least 2 context tokens remain.
// InvalidArgument when the text is too short for that, or for non-positive sizes.
absl::StatusOr<std::vector<TextSample>> CutText(std::span<const int32_t> tokens, int context_tokens,
                                                int continuation_tokens, int max_samples,
                                                std::optional<int32_t> bos, std::string_view source);

// Called once per (configuration, example) that was not skipped; an error stops the run.
using RecordSink = std::function<absl::Status(EvalRecord)>;
// True to skip a configuration for an example (already in the resume log).
using SkipFn = std::function<bool(const EvalConfig&, const std::string& example_id)>;

class Evaluator {
 public:
  // `model` must outlive the evaluator.
  Evaluator(const nodes::NodeModel& model, RunnerOptions options);

  // InvalidArgument for a prompt of fewer than 2 tokens or one that leaves no room to generate,
  // a Q2C configuration without a question span, an example whose task has no scorer
  // (scoring.h's FindTask), a kScout configuration without a scout or with a scout that
  // tokenizes the prompt differently, or a kGlobal/kScout configuration whose method is not
  // Q2C, SnapKV or H2O.
  absl::Status RunExample(const TaskExample& example, std::span<const EvalConfig> configs,
                          const SkipFn& skip, const RecordSink& sink);

  // Fidelity only (no task score). Q2C treats the last observation_window context tokens as
  // the question, since plain text has none.
  absl::Status RunText(const TextSample& sample, std::span<const EvalConfig> configs,
                       const SkipFn& skip, const RecordSink& sink);

 private:
  struct Work;
  absl::Status Run(Work& work, std::span<const EvalConfig> configs, const SkipFn& skip,
                   const RecordSink& sink);
  const nodes::NodeModel& model_;
  RunnerOptions options_;
};

}  // namespace kvwire::eval
