#include "models/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "models/train/llama_model.h"
#include "models/train/word_tokenizer.h"
#include "server/engine/blas_kernels.h"
#include "server/tokenizer/tokenizer.h"

namespace kvwire::train {
namespace {

namespace fs = std::filesystem;
using tasks::TaskType;

#define TRAIN_RETURN_IF_ERROR(expr)       \
  do {                                    \
    absl::Status status_ = (expr);        \
    if (!status_.ok()) return status_;    \
  } while (0)

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) return absl::UnavailableError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadText(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Word -> token id through the real tokenizer, so the trainer feeds exactly the ids the
// prefill node's tokenizer produces for the same text.
struct Vocab {
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  std::unordered_map<std::string, int64_t> id_of_word;
  int64_t eot = 0;

  static absl::StatusOr<Vocab> Load(const std::string& json) {
    Vocab v;
    auto tok = tokenizer::Tokenizer::FromJson(json);
    if (!tok.ok()) return tok.status();
    v.tokenizer = *std::move(tok);
    for (const std::string& w : tasks::Vocabulary()) {
      std::optional<int32_t> id = v.tokenizer->TokenId("\xC4\xA0" + w);  // "Ġ" + word
      if (!id) return absl::InternalError(absl::StrCat("tokenizer lacks the word '", w, "'"));
      v.id_of_word[w] = *id;
    }
    std::optional<int32_t> eot = v.tokenizer->TokenId(kEndOfText);
    if (!eot) return absl::InternalError("tokenizer lacks the end-of-text token");
    v.eot = *eot;
    return v;
  }
};

// One training or evaluation sequence: BOS, the words, EOS, with per-target weights.
// targets[t] is the token at t + 1; weight[t] > 0 where it is supervised.
struct Sequence {
  std::vector<int64_t> tokens;
  std::vector<float> weight;
  std::vector<int> answer_targets;  // positions t whose target is the final answer or its EOS
};

Sequence MakeSequence(const Vocab& vocab, const tasks::Example& ex) {
  Sequence s;
  const std::vector<std::string_view> words = tasks::TrainingSequence(ex);
  s.tokens.reserve(words.size() + 2);
  s.tokens.push_back(vocab.eot);
  for (std::string_view w : words) s.tokens.push_back(vocab.id_of_word.at(std::string(w)));
  s.tokens.push_back(vocab.eot);
  s.weight.assign(s.tokens.size() - 1, 0.0f);
  // Word i of the training sequence is token i + 1, predicted at position i.
  for (const tasks::Span& span : ex.supervised) {
    for (int i = span.start; i < span.start + span.length; ++i) s.weight[i] = 1.0f;
  }
  const tasks::Span& answer = ex.supervised.back();
  for (int i = answer.start; i < answer.start + answer.length; ++i) s.answer_targets.push_back(i);
  const int eos_position = static_cast<int>(s.tokens.size()) - 2;
  s.weight[eos_position] = 1.0f;
  s.answer_targets.push_back(eos_position);
  return s;
}

struct Batch {
  torch::Tensor inputs;   // int64 [B, T]
  torch::Tensor targets;  // int64 [B, T]
  torch::Tensor weights;  // float [B, T]
};

Batch Collate(const std::vector<Sequence>& seqs, int64_t pad) {
  int64_t T = 0;
  for (const Sequence& s : seqs) T = std::max<int64_t>(T, s.tokens.size() - 1);
  const int64_t B = seqs.size();
  Batch b{torch::full({B, T}, pad, torch::kLong), torch::full({B, T}, pad, torch::kLong),
          torch::zeros({B, T})};
  auto in = b.inputs.accessor<int64_t, 2>();
  auto tg = b.targets.accessor<int64_t, 2>();
  auto w = b.weights.accessor<float, 2>();
  for (int64_t i = 0; i < B; ++i) {
    const Sequence& s = seqs[i];
    for (size_t t = 0; t + 1 < s.tokens.size(); ++t) {
      in[i][t] = s.tokens[t];
      tg[i][t] = s.tokens[t + 1];
      w[i][t] = s.weight[t];
    }
  }
  return b;
}

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

const TaskChoice& PickTask(const std::vector<TaskChoice>& mix, uint64_t seed, uint64_t index) {
  double total = 0;
  for (const TaskChoice& c : mix) total += c.weight;
  const double u = static_cast<double>(Mix(seed * 0x100000001b3ULL ^ index) >> 11) * 0x1.0p-53;
  double acc = 0;
  for (const TaskChoice& c : mix) {
    acc += c.weight / total;
    if (u < acc) return c;
  }
  return mix.back();
}


modelio::ModelConfig MakeConfig(const TrainOptions& o, int vocab_size, int eot) {
  modelio::ModelConfig c;
  c.architecture = modelio::Architecture::kLlama;
  c.vocab_size = vocab_size;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.intermediate;
  c.num_hidden_layers = o.layers;
  c.num_attention_heads = o.heads;
  c.num_key_value_heads = o.kv_heads;
  c.head_dim = o.hidden / o.heads;
  c.rope_theta = o.rope_theta;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = o.max_positions;
  c.bos_token_ids = {eot};
  c.eos_token_ids = {eot};
  return c;
}

absl::Status WriteTokenizerFiles(const fs::path& dir, const WordTokenizer& tok) {
  TRAIN_RETURN_IF_ERROR(WriteText(dir / "tokenizer.json", tok.json));
  nlohmann::ordered_json tc = {{"add_bos_token", true},
                               {"add_eos_token", false},
                               {"bos_token", kEndOfText},
                               {"eos_token", kEndOfText},
                               {"pad_token", kEndOfText},
                               {"model_max_length", 4096},
                               {"tokenizer_class", "PreTrainedTokenizerFast"}};
  TRAIN_RETURN_IF_ERROR(WriteText(dir / "tokenizer_config.json", tc.dump(2) + "\n"));
  nlohmann::ordered_json gc = {{"bos_token_id", tok.end_of_text_id},
                               {"eos_token_id", tok.end_of_text_id},
                               {"pad_token_id", tok.end_of_text_id},
                               {"do_sample", false}};
  return WriteText(dir / "generation_config.json", gc.dump(2) + "\n");
}

// Teacher-forced exact match of the final answer (and its EOS) for each sequence.
std::vector<bool> ExactMatch(const LlamaModel& model, const std::vector<Sequence>& seqs,
                             int64_t pad) {
  torch::NoGradGuard no_grad;
  std::vector<bool> out;
  constexpr size_t kChunk = 8;
  for (size_t begin = 0; begin < seqs.size(); begin += kChunk) {
    std::vector<Sequence> part(seqs.begin() + begin,
                               seqs.begin() + std::min(seqs.size(), begin + kChunk));
    Batch b = Collate(part, pad);
    torch::Tensor pred = model.Forward(b.inputs).argmax(-1);
    auto p = pred.accessor<int64_t, 2>();
    auto tg = b.targets.accessor<int64_t, 2>();
    for (size_t i = 0; i < part.size(); ++i) {
      bool ok = true;
      for (int t : part[i].answer_targets) ok = ok && p[i][t] == tg[i][t];
      out.push_back(ok);
    }
  }
  return out;
}

absl::StatusOr<std::vector<TaskAccuracy>> Evaluate(const LlamaModel& model, const Vocab& vocab,
                                                   const std::vector<TaskType>& task_list,
                                                   int length, int examples, uint64_t seed) {
  std::vector<TaskAccuracy> result;
  for (TaskType task : task_list) {
    tasks::TaskParams params{.task = task, .split = tasks::Split::kHeldOut, .seed = seed,
                             .length = length};
    std::vector<Sequence> seqs;
    for (int i = 0; i < examples; ++i) {
      auto ex = tasks::GenerateExample(params, i);
      if (!ex.ok()) return ex.status();
      seqs.push_back(MakeSequence(vocab, *ex));
    }
    std::vector<bool> em = ExactMatch(model, seqs, vocab.eot);
    TaskAccuracy acc{task, 0, examples};
    for (bool b : em) acc.correct += b;
    result.push_back(acc);
  }
  return result;
}

// Optimizer state and progress, beside the HF checkpoint so a run can resume.
constexpr char kStateFile[] = "train_state.pt";
constexpr char kProgressFile[] = "train_state.json";

absl::Status SaveAll(const fs::path& dir, const LlamaModel& model, torch::optim::AdamW& opt,
                     int step, double seconds) {
  TRAIN_RETURN_IF_ERROR(model.SaveHf(dir.string()));
  torch::save(opt, (dir / kStateFile).string());
  nlohmann::json progress = {{"step", step}, {"train_seconds", seconds}};
  return WriteText(dir / kProgressFile, progress.dump() + "\n");
}

absl::Status TrainImpl(const TrainOptions& o, std::ostream& log) {
  if (o.tasks.empty()) return absl::InvalidArgumentError("no tasks to train on");
  if (o.hidden % o.heads != 0 || o.heads % o.kv_heads != 0) {
    return absl::InvalidArgumentError("hidden must divide by heads, heads by kv_heads");
  }
  if (o.threads > 0) {
    torch::set_num_threads(o.threads);
    engine::SetBlasThreads(o.threads);  // OpenBLAS's own pool, too (8% faster per step here)
  }
  const fs::path dir(o.out_dir);
  fs::create_directories(dir);

  absl::StatusOr<WordTokenizer> tok = BuildWordTokenizer(tasks::Vocabulary());
  if (!tok.ok()) return tok.status();
  absl::StatusOr<Vocab> vocab = Vocab::Load(tok->json);
  if (!vocab.ok()) return vocab.status();
  const modelio::ModelConfig cfg = MakeConfig(o, tok->vocab_size, tok->end_of_text_id);
  TRAIN_RETURN_IF_ERROR(modelio::ValidateModelConfig(cfg));
  LlamaModel model(cfg, o.seed);

  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [name, t] : model.parameters()) {
    (t.dim() >= 2 && name.find("embed") == std::string::npos ? decay : no_decay).push_back(t);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).weight_decay(0.0)));
  torch::optim::AdamW opt(std::move(groups), torch::optim::AdamWOptions(o.lr));

  int step = 0;
  double trained_seconds = 0;
  if (o.resume && fs::exists(dir / kProgressFile)) {
    TRAIN_RETURN_IF_ERROR(model.LoadHf(dir.string()));
    torch::load(opt, (dir / kStateFile).string());
    auto text = ReadText(dir / kProgressFile);
    if (!text.ok()) return text.status();
    auto progress = nlohmann::json::parse(*text, nullptr, false);
    if (progress.is_discarded() || !progress.contains("step")) {
      return absl::DataLossError("train_state.json is malformed");
    }
    step = progress["step"].get<int>();
    trained_seconds = progress.value("train_seconds", 0.0);
    log << "resumed at step " << step << "\n";
  }
  TRAIN_RETURN_IF_ERROR(WriteTokenizerFiles(dir, *tok));
  std::ofstream jsonl(dir / "train_log.jsonl", std::ios::app);
  log << absl::StrFormat("model: %d layers, hidden %d, %d heads (%d kv), %d parameters, vocab %d\n",
                         o.layers, o.hidden, o.heads, o.kv_heads, model.parameter_count(),
                         tok->vocab_size);

  const std::vector<TaskType> task_list = TaskTypes(o.tasks);
  double loss_sum = 0, weight_sum = 0, hit_sum = 0;
  auto window_start = std::chrono::steady_clock::now();
  int window_steps = 0;
  while (step < o.steps) {
    const int length = LengthAt(o.schedule, step);
    std::vector<Sequence> seqs;
    for (int i = 0; i < o.batch; ++i) {
      const uint64_t index = static_cast<uint64_t>(step) * o.batch + i;
      const TaskChoice& choice = PickTask(o.tasks, o.seed, index);
      tasks::TaskParams params{.task = choice.task, .split = tasks::Split::kTrain,
                               .seed = o.seed, .length = length,
                               .value_digits = choice.value_digits,
                               .key_words = choice.key_words};
      auto ex = tasks::GenerateExample(params, index);
      if (!ex.ok()) return ex.status();
      seqs.push_back(MakeSequence(*vocab, *ex));
    }
    Batch b = Collate(seqs, vocab->eot);
    const double lr = o.lr * std::min(1.0, (step + 1.0) / std::max(1, o.warmup));
    for (auto& group : opt.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    // Logits only where a target is supervised: the LM head over every position would
    // cost as much as a layer.
    torch::Tensor w_all = b.weights.view({-1});
    torch::Tensor where = w_all.nonzero().squeeze(1);
    torch::Tensor hidden = model.Hidden(b.inputs);
    torch::Tensor logits = model.Logits(hidden.view({-1, hidden.size(-1)}).index_select(0, where));
    torch::Tensor targets = b.targets.view({-1}).index_select(0, where);
    torch::Tensor w = w_all.index_select(0, where);
    torch::Tensor ce = torch::nn::functional::cross_entropy(
        logits, targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    torch::Tensor loss = (ce * w).sum() / w.sum();
    opt.zero_grad();
    loss.backward();
    std::vector<torch::Tensor> all;
    for (const auto& [name, t] : model.parameters()) all.push_back(t);
    torch::nn::utils::clip_grad_norm_(all, o.grad_clip);
    opt.step();
    {
      torch::NoGradGuard ng;
      torch::Tensor hit = (logits.argmax(-1) == targets).to(torch::kFloat);
      loss_sum += (ce * w).sum().item<double>();
      hit_sum += (hit * w).sum().item<double>();
      weight_sum += w.sum().item<double>();
    }
    ++step;
    ++window_steps;

    if (step % o.log_every == 0 || step == o.steps) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      trained_seconds += secs;
      log << absl::StrFormat("step %6d  len %4d  lr %.2e  answer loss %.4f  token acc %.3f  %.2f s/step\n",
                             step, length, lr, loss_sum / weight_sum, hit_sum / weight_sum,
                             secs / window_steps)
          << std::flush;
      jsonl << nlohmann::json({{"step", step}, {"length", length}, {"lr", lr},
                               {"loss", loss_sum / weight_sum},
                               {"token_accuracy", hit_sum / weight_sum},
                               {"seconds_per_step", secs / window_steps},
                               {"train_seconds", trained_seconds}})
                   .dump()
            << "\n" << std::flush;
      loss_sum = weight_sum = hit_sum = 0;
      window_steps = 0;
      window_start = std::chrono::steady_clock::now();
    }
    if (step % o.eval_every == 0 || step == o.steps) {
      const int eval_length = EvalLengthAt(o.schedule, step - 1);
      auto acc = Evaluate(model, *vocab, task_list, eval_length, o.eval_examples, o.seed + 7919);
      if (!acc.ok()) return acc.status();
      nlohmann::json rec = {{"step", step}, {"eval_length", eval_length}};
      std::string line = absl::StrFormat("eval  step %6d  len %4d ", step, eval_length);
      for (const TaskAccuracy& a : *acc) {
        absl::StrAppendFormat(&line, " %s %d/%d", tasks::TaskName(a.task), a.correct, a.total);
        rec["heldout_exact_match"][std::string(tasks::TaskName(a.task))] =
            static_cast<double>(a.correct) / a.total;
      }
      log << line << "\n" << std::flush;
      jsonl << rec.dump() << "\n" << std::flush;
      window_start = std::chrono::steady_clock::now();
    }
    if (step % o.save_every == 0 || step == o.steps) {
      TRAIN_RETURN_IF_ERROR(SaveAll(dir, model, opt, step, trained_seconds));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TaskChoice>> ParseTaskMix(const std::string& s) {
  std::vector<TaskChoice> mix;
  for (absl::string_view item : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> kv = absl::StrSplit(item, ':');
    TaskChoice c;
    if (kv.size() > 2 || (kv.size() == 2 && (!absl::SimpleAtod(kv[1], &c.weight) || !(c.weight > 0)))) {
      return absl::InvalidArgumentError(absl::StrCat("bad task weight '", item, "'"));
    }
    std::vector<absl::string_view> parts = absl::StrSplit(kv[0], '/');
    auto task = tasks::ParseTaskType(std::string(parts[0]));
    if (!task.ok()) return task.status();
    c.task = *task;
    for (size_t i = 1; i < parts.size(); ++i) {
      int v = 0;
      const absl::string_view opt = parts[i];
      if (opt.size() < 2 || !absl::SimpleAtoi(opt.substr(1), &v) || v < 1 ||
          (opt[0] != 'k' && opt[0] != 'd')) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad task option '", opt, "' in '", item, "' (kN: key words, dN: value digits)"));
      }
      (opt[0] == 'k' ? c.key_words : c.value_digits) = v;
    }
    mix.push_back(c);
  }
  if (mix.empty()) return absl::InvalidArgumentError("empty task mix");
  return mix;
}

std::vector<TaskType> TaskTypes(const std::vector<TaskChoice>& mix) {
  std::vector<TaskType> types;
  for (const TaskChoice& c : mix) {
    if (std::find(types.begin(), types.end(), c.task) == types.end()) types.push_back(c.task);
  }
  return types;
}

absl::StatusOr<std::vector<ScheduleStage>> ParseSchedule(const std::string& s) {
  std::vector<ScheduleStage> stages;
  std::vector<absl::string_view> items = absl::StrSplit(s, ',', absl::SkipEmpty());
  for (size_t i = 0; i < items.size(); ++i) {
    std::vector<absl::string_view> kv = absl::StrSplit(items[i], ':');
    ScheduleStage stage;
    bool ok = kv.size() <= 2;
    for (absl::string_view item : absl::StrSplit(kv[0], '/')) {
      int length = 0;
      ok = ok && absl::SimpleAtoi(item, &length) && length >= tasks::kMinLength &&
           length <= tasks::kMaxLength;
      stage.lengths.push_back(length);
    }
    const bool last = i + 1 == items.size();
    if (!ok || (kv.size() == 2 && !absl::SimpleAtoi(kv[1], &stage.until)) ||
        (kv.size() == 1 && !last) ||
        (!stages.empty() && kv.size() == 2 && stage.until <= stages.back().until)) {
      return absl::InvalidArgumentError(absl::StrCat("bad schedule stage '", items[i], "'"));
    }
    if (kv.size() == 1) stage.until = std::numeric_limits<int>::max();
    stages.push_back(std::move(stage));
  }
  if (stages.empty()) return absl::InvalidArgumentError("empty schedule");
  return stages;
}

namespace {
const ScheduleStage& StageAt(const std::vector<ScheduleStage>& schedule, int step) {
  for (const ScheduleStage& stage : schedule) {
    if (step < stage.until) return stage;
  }
  return schedule.back();
}
}  // namespace

int LengthAt(const std::vector<ScheduleStage>& schedule, int step) {
  const std::vector<int>& lengths = StageAt(schedule, step).lengths;
  return lengths[static_cast<size_t>(step) % lengths.size()];
}

int EvalLengthAt(const std::vector<ScheduleStage>& schedule, int step) {
  const std::vector<int>& lengths = StageAt(schedule, step).lengths;
  return *std::max_element(lengths.begin(), lengths.end());
}

absl::Status Train(const TrainOptions& options, std::ostream& log) {
  try {
    return TrainImpl(options, log);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
}

absl::StatusOr<std::vector<TaskAccuracy>> EvaluateCheckpoint(
    const std::string& model_dir, const std::vector<TaskType>& task_list, int length,
    int examples, uint64_t seed, int threads) {
  try {
    if (threads > 0) {
      torch::set_num_threads(threads);
      engine::SetBlasThreads(threads);
    }
    auto json = ReadText(fs::path(model_dir) / "tokenizer.json");
    if (!json.ok()) return json.status();
    auto vocab = Vocab::Load(*json);
    if (!vocab.ok()) return vocab.status();
    auto cfg = modelio::LoadModelConfig(model_dir);
    if (!cfg.ok()) return cfg.status();
    LlamaModel model(*cfg, 0);
    TRAIN_RETURN_IF_ERROR(model.LoadHf(model_dir));
    return Evaluate(model, *vocab, task_list, length, examples, seed);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("libtorch: ", e.what()));
  }
}

}  // namespace kvwire::train
