// Measures a bundled model the way the service runs it, and writes its model card.
//
// Accuracy: held-out examples of the task generator, prompted exactly as the prefill node
// prompts (nodes::BuildPrompt: BOS, context, "\n", question), answered by greedy decoding
// through the engine's KV cache, scored by exact match of the answer words. Attention
// concentration: with the full cache, the share of the attention that the question's tokens
// give to the first tokens (sinks), to the last context tokens before the question (recent) and
// to the asked needle, averaged over layers and KV heads.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/tasks/task_generator.h"
#include "nlohmann/json.hpp"

namespace kvwire::train {

struct CardOptions {
  std::string model_dir;
  std::vector<tasks::TaskType> tasks;
  std::vector<int> lengths = {512, 1024};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int examples = 4;     // per task, length and depth
  uint64_t seed = 20261129;
  int threads = 0;
  int sink_tokens = 4;
  int recent_tokens = 32;
};

// The small fixed held-out set the test suite re-measures each shipped checkpoint on
// (models/train/bundled_models_test.cc): passkey and multikey at 512 words, three depths, two
// examples each. The card records its result as "fixed_check".
CardOptions FixedCheckOptions(const std::string& model_dir);

// {"accuracy": {task: {length: {depth: [correct, total]}}}, "attention": {...}, "elapsed_s"}.
absl::StatusOr<nlohmann::json> MeasureModel(const CardOptions& options);

// Whether passkey and multikey reach `min_accuracy` exact match at every measured length: the
// bar a checkpoint must clear before tests that need a retrieving model are registered.
bool Retrieves(const nlohmann::json& measured, double min_accuracy);

// The measured lengths at which passkey and multikey reach `bar` exact match at every depth.
std::vector<std::string> LengthsMeetingBar(const nlohmann::json& measured, double bar);

// The card's acceptance paragraph: for each measured length, whether passkey and multikey
// reach `bar` exact match at every needle depth, naming the cells that fall short.
std::string AcceptanceText(const nlohmann::json& measured, double bar);

// The model card (Markdown) for `measured` (with an acceptance section when measured has an
// "acceptance_bar"), with the architecture read from config.json and
// the training record (train_command.txt, train_state.json) of model_dir.
absl::StatusOr<std::string> RenderModelCard(const std::string& model_dir, const std::string& name,
                                            const nlohmann::json& measured);

}  // namespace kvwire::train
