// Trains the bundled Llama-architecture models on the task generator's retrieval tasks
// (models/tasks) and writes them as Hugging Face checkpoints the engine loads.
//
// Deterministic for a seed: batch k always holds the same examples (the generator's
// example index is k * batch + i), weights start from torch's seeded generator, and a run
// resumed from its last checkpoint continues with the batches it had not seen yet.
// Torch headers stay out of this header; trainer.cc holds the libtorch code.
#pragma once

#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/tasks/task_generator.h"
#include "server/modelio/hf_config.h"

namespace kvwire::train {

// One entry of a training task mix. Variants of a task (e.g. MQAR with two-word keys and
// five-digit values: dense supervision of multi-key's lookup) are curricula for the tasks
// the models are judged on; held-out evaluation always uses each task's defaults.
struct TaskChoice {
  tasks::TaskType task = tasks::TaskType::kPasskey;
  double weight = 1.0;
  int key_words = 0;     // 0: the task's default
  int value_digits = 0;  // 0: the task's default
};

// One stage of the length curriculum. A stage with several lengths takes them in turn, one
// per step, so that a model keeps what it learned at one length while it trains at another.
struct ScheduleStage {
  std::vector<int> lengths;  // prompt words
  int until = 0;             // first step after the stage
  bool operator==(const ScheduleStage&) const = default;
};

struct TrainOptions {
  std::string out_dir;  // checkpoint directory: config.json, weights, tokenizer, train state
  // Architecture (Llama, untied head). vocab_size is set from the tokenizer.
  int layers = 4;
  int hidden = 128;
  int heads = 4;
  int kv_heads = 2;
  int intermediate = 384;
  double rope_theta = 10000.0;
  int max_positions = 4096;
  // Task mix; each example draws its task with these weights.
  std::vector<TaskChoice> tasks;
  // Length curriculum; the last stage runs to `steps`.
  std::vector<ScheduleStage> schedule = {{{512}, std::numeric_limits<int>::max()}};
  int batch = 16;
  int steps = 1000;
  double lr = 1e-3;  // constant after a linear warm-up (TRAINING-NOTES: beat one-cycle)
  int warmup = 200;
  double weight_decay = 0.1;
  double grad_clip = 1.0;
  int log_every = 20;
  int eval_every = 200;
  int eval_examples = 32;  // held-out examples per task at each evaluation
  int save_every = 200;
  uint64_t seed = 1;
  int threads = 0;  // torch intra-op threads; 0 = all cores
  bool resume = false;  // continue from out_dir's checkpoint and train state
};

// Parses "passkey:1,multikey:2,mqar/k2/d5:2" (weights > 0; /kN sets the task's key words,
// /dN its value digits) and "128:1500,256:3000,512/1024" (the last stage may omit its end
// step; "a/b" alternates lengths a and b step by step).
// InvalidArgument on anything else.
absl::StatusOr<std::vector<TaskChoice>> ParseTaskMix(const std::string& s);
// The distinct task types of a mix, in order (what held-out evaluation measures: each at its
// default parameters).
std::vector<tasks::TaskType> TaskTypes(const std::vector<TaskChoice>& mix);
absl::StatusOr<std::vector<ScheduleStage>> ParseSchedule(const std::string& s);
// The prompt length (words) that training step `step` uses.
int LengthAt(const std::vector<ScheduleStage>& schedule, int step);
// The length held-out evaluation uses at `step`: the longest of its stage.
int EvalLengthAt(const std::vector<ScheduleStage>& schedule, int step);

// Trains, logging progress to `log` (and as JSON lines to out_dir/train_log.jsonl), saving
// the checkpoint every save_every steps and at the end. Writes tokenizer.json,
// tokenizer_config.json and generation_config.json beside the weights.
absl::Status Train(const TrainOptions& options, std::ostream& log);

// Held-out exact match by task under teacher forcing: an example counts when the argmax
// at every answer position (and at the end-of-text after it) is the reference token, which
// is exactly when greedy decoding reproduces the answer and stops.
struct TaskAccuracy {
  tasks::TaskType task;
  int correct = 0;
  int total = 0;
};
absl::StatusOr<std::vector<TaskAccuracy>> EvaluateCheckpoint(
    const std::string& model_dir, const std::vector<tasks::TaskType>& task_list, int length,
    int examples, uint64_t seed, int threads);

}  // namespace kvwire::train
