#include "models/train/model_card.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/engine/generate.h"
#include "server/nodes/model.h"
#include "server/nodes/prefill_service.h"

namespace kvwire::train {
namespace {

namespace fs = std::filesystem;

std::string ReadOr(const fs::path& path, const std::string& fallback) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fallback;
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct Attention {
  double sinks = 0, recent = 0, needle = 0, n = 0;
};

}  // namespace

CardOptions FixedCheckOptions(const std::string& model_dir) {
  return CardOptions{.model_dir = model_dir,
                     .tasks = {tasks::TaskType::kPasskey, tasks::TaskType::kMultiKey},
                     .lengths = {512},
                     .depths = {0.0, 0.5, 1.0},
                     .examples = 2,
                     .seed = 4242,
                     .threads = 1};
}

absl::StatusOr<nlohmann::json> MeasureModel(const CardOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  auto model = nodes::NodeModel::Load({.model_dir = o.model_dir, .threads = o.threads});
  if (!model.ok()) return model.status();
  const nodes::NodeModel& m = **model;
  nlohmann::json accuracy = nlohmann::json::object();
  Attention att;
  for (tasks::TaskType task : o.tasks) {
    const std::string task_name(tasks::TaskName(task));
    for (int length : o.lengths) {
      for (double depth : o.depths) {
        int correct = 0;
        for (int i = 0; i < o.examples; ++i) {
          tasks::TaskParams params{.task = task, .split = tasks::Split::kHeldOut, .seed = o.seed,
                                   .length = length, .depth = depth};
          auto ex = tasks::GenerateExample(params, i);
          if (!ex.ok()) return ex.status();
          const tasks::Prompt p = tasks::FormatPrompt(*ex);
          kvwire::v1::GenerateRequest request;
          request.set_context(p.context_text);
          request.set_question(p.question_text);
          auto prompt = nodes::BuildPrompt(m, request);
          if (!prompt.ok()) return prompt.status();
          const int T = static_cast<int>(prompt->token_ids.size());
          const int q_len = prompt->question_end - prompt->question_begin;
          auto prefill = m.engine->Prefill(prompt->token_ids, {.snapkv_window = q_len});
          if (!prefill.ok()) return prefill.status();
          auto session = engine::DecodeSession::FromPrefill(*m.engine, *prefill);
          if (!session.ok()) return session.status();
          engine::GenerateOptions gen{.max_new_tokens = static_cast<int>(ex->answer.size()) + 2,
                                      .eos_ids = m.eos_ids};
          auto out = engine::Generate(**session, prefill->last_logits, gen);
          if (!out.ok()) return out.status();
          std::vector<int32_t> ids = out->tokens;
          if (!ids.empty() && std::count(m.eos_ids.begin(), m.eos_ids.end(), ids.back())) ids.pop_back();
          auto text = m.tokenizer->Decode(ids, /*skip_special=*/true);
          if (!text.ok()) return text.status();
          correct += absl::StripAsciiWhitespace(*text) == p.answer_text;

          // Token t + 1 of the prompt is context word t (BOS first; one token per word).
          const kvcodec::ImportanceScores& s = *prefill->window_scores;
          const int context_end = prompt->question_begin;
          double total = 0, sinks = 0, recent = 0, needle = 0;
          for (int l = 0; l < s.num_layers; ++l) {
            for (int h = 0; h < s.num_kv_heads; ++h) {
              for (int t = 0; t < T; ++t) {
                const double v = s.at(l, h, t);
                total += v;
                if (t < o.sink_tokens) sinks += v;
                if (t < context_end && t >= context_end - o.recent_tokens) recent += v;
                if (t >= ex->needle.start + 1 && t < ex->needle.start + 1 + ex->needle.length) needle += v;
              }
            }
          }
          if (total > 0) {
            att.sinks += sinks / total;
            att.recent += recent / total;
            att.needle += needle / total;
            att.n += 1;
          }
        }
        accuracy[task_name][std::to_string(length)][absl::StrFormat("%.2f", depth)] = {correct,
                                                                                      o.examples};
      }
    }
  }
  nlohmann::json attention = {{"sink_tokens", o.sink_tokens},
                              {"recent_tokens", o.recent_tokens},
                              {"share_on_sinks", att.n ? att.sinks / att.n : 0},
                              {"share_on_recent", att.n ? att.recent / att.n : 0},
                              {"share_on_needle", att.n ? att.needle / att.n : 0}};
  return nlohmann::json{
      {"accuracy", accuracy},
      {"attention", attention},
      {"seed", o.seed},
      {"examples_per_cell", o.examples},
      {"elapsed_s", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
}

bool Retrieves(const nlohmann::json& measured, double min_accuracy) {
  for (const char* task : {"passkey", "multikey"}) {
    if (!measured["accuracy"].contains(task)) return false;
    for (const auto& [length, by_depth] : measured["accuracy"][task].items()) {
      int correct = 0, total = 0;
      for (const auto& [depth, ct] : by_depth.items()) {
        correct += ct[0].get<int>();
        total += ct[1].get<int>();
      }
      if (total == 0 || correct < min_accuracy * total) return false;
    }
  }
  return true;
}

namespace {

// The cells (task, depth) of one length below `bar`, described.
std::vector<std::string> CellsBelowBar(const nlohmann::json& acc, const std::string& length,
                                       double bar) {
  std::vector<std::string> short_cells;
  for (const char* task : {"passkey", "multikey"}) {
    if (!acc.contains(task) || !acc[task].contains(length)) {
      short_cells.push_back(absl::StrCat(task, " not measured"));
      continue;
    }
    for (const auto& [depth, ct] : acc[task][length].items()) {
      const int correct = ct[0].get<int>(), total = ct[1].get<int>();
      if (total == 0 || correct < bar * total) {
        short_cells.push_back(absl::StrFormat("%s %.0f%% at depth %s (%d/%d)", task,
                                              total ? 100.0 * correct / total : 0.0, depth,
                                              correct, total));
      }
    }
  }
  return short_cells;
}

}  // namespace

std::vector<std::string> LengthsMeetingBar(const nlohmann::json& measured, double bar) {
  std::vector<std::string> lengths;
  const nlohmann::json& acc = measured["accuracy"];
  if (!acc.contains("passkey")) return lengths;
  for (const auto& [length, unused] : acc["passkey"].items()) {
    if (CellsBelowBar(acc, length, bar).empty()) lengths.push_back(length);
  }
  return lengths;
}

std::string AcceptanceText(const nlohmann::json& measured, double bar) {
  std::string text = absl::StrFormat(
      "Bar: at least %.0f%% exact match on passkey and multikey at every needle depth (issue 4 "
      "asks for it at 1024 tokens, or at a context shortened to no less than 512 where a 2-core "
      "CPU cannot train that).",
      100 * bar);
  const nlohmann::json& acc = measured["accuracy"];
  if (!acc.contains("passkey") || !acc.contains("multikey")) {
    return text + " Not measured: the card needs both tasks.\n";
  }
  for (const auto& [length, unused] : acc["passkey"].items()) {
    const std::vector<std::string> short_cells = CellsBelowBar(acc, length, bar);
    absl::StrAppend(&text, "\n- ", length, " words: ",
                    short_cells.empty() ? std::string("met")
                                        : absl::StrCat("not met: ", absl::StrJoin(short_cells, ", ")));
  }
  return text + "\n";
}

absl::StatusOr<std::string> RenderModelCard(const std::string& model_dir, const std::string& name,
                                            const nlohmann::json& measured) {
  const fs::path dir(model_dir);
  auto config = nlohmann::json::parse(ReadOr(dir / "config.json", "{}"), nullptr, false);
  if (config.is_discarded() || !config.contains("hidden_size")) {
    return absl::NotFoundError(absl::StrCat(model_dir, "/config.json is missing or malformed"));
  }
  auto state = nlohmann::json::parse(ReadOr(dir / "train_state.json", "{}"), nullptr, false);
  const double train_s = state.is_discarded() ? 0.0 : state.value("train_seconds", 0.0);
  const int steps = state.is_discarded() ? 0 : state.value("step", 0);
  std::string md = absl::StrCat("# kvwire bundled model: ", name, "\n\n");
  if (!measured.value("retrieves", false)) {
    absl::StrAppend(&md,
        "**Status: still training.** It does not yet reach 90% exact match on passkey and "
        "multikey at every measured length (the numbers below), so compression results measured "
        "on it say little about retrieval; resume training with the last command below plus "
        "`--resume`.\n\n");
  }
  absl::StrAppend(&md,
      "A Llama-architecture decoder trained by this project (models/train, `kvwire_train`) on the "
      "synthetic long-context retrieval tasks of models/tasks, in the Hugging Face layout the "
      "engine loads for Qwen2.5 or Llama-3. It exists so that the demo, the tests and the "
      "evaluation have a model that uses its context; model hubs cannot be reached here.\n\n");
  absl::StrAppendFormat(&md,
      "## Architecture\n\n| field | value |\n|---|---|\n| layers | %d |\n| hidden | %d |\n"
      "| attention heads / KV heads | %d / %d |\n| head_dim | %d |\n| intermediate (SwiGLU) | %d |\n"
      "| vocab | %d (byte-level BPE, one token per task word) |\n| rope_theta | %g |\n"
      "| max positions | %d |\n| weights | float32 safetensors |\n\n",
      config.value("num_hidden_layers", 0), config.value("hidden_size", 0),
      config.value("num_attention_heads", 0), config.value("num_key_value_heads", 0),
      config.value("head_dim", config.value("hidden_size", 0) / std::max(1, config.value("num_attention_heads", 1))),
      config.value("intermediate_size", 0), config.value("vocab_size", 0),
      config.value("rope_theta", 0.0), config.value("max_position_embeddings", 0));
  absl::StrAppendFormat(&md,
      "## Training\n\nData: the task generator's train split (fresh examples every step; held-out "
      "needles, keys and facts never appear in it). Loss on the answer tokens and the end-of-text "
      "after them. %d steps, %.0f s of training on a 2-core CPU (no GPU).\n\nExact commands "
      "(a resumed run appends its own line):\n\n```\n%s```\n\n",
      steps, train_s, ReadOr(dir / "train_command.txt", "(not recorded)\n"));
  // The curve: held-out exact match under teacher forcing at the training length, as logged.
  std::ifstream log(dir / "train_log.jsonl");
  std::string curve;
  for (std::string line; std::getline(log, line);) {
    auto rec = nlohmann::json::parse(line, nullptr, false);
    if (rec.is_discarded() || !rec.contains("heldout_exact_match")) continue;
    std::vector<std::string> cells;
    for (const auto& [task, em] : rec["heldout_exact_match"].items()) {
      cells.push_back(absl::StrFormat("%s %.0f%%", task, 100 * em.get<double>()));
    }
    absl::StrAppendFormat(&curve, "| %d | %d | %s |\n", rec.value("step", 0),
                          rec.value("eval_length", 0), absl::StrJoin(cells, ", "));
  }
  if (!curve.empty()) {
    absl::StrAppend(&md,
        "Held-out exact match during training (teacher-forced, 32 examples per task at the "
        "length trained then; train_log.jsonl has the loss every 20 steps):\n\n| step | length | "
        "exact match |\n|---|---|---|\n", curve, "\n");
  }
  absl::StrAppend(&md,
      "## Held-out accuracy (full KV cache)\n\nExact match of the greedy answer, prompted as the "
      "prefill node prompts. Cells: correct / examples, by context length (words) and needle depth.\n\n");
  for (const auto& [task, by_length] : measured["accuracy"].items()) {
    for (const auto& [length, by_depth] : by_length.items()) {
      std::vector<std::string> cells;
      int correct = 0, total = 0;
      for (const auto& [depth, ct] : by_depth.items()) {
        cells.push_back(absl::StrCat("depth ", depth, ": ", ct[0].get<int>(), "/", ct[1].get<int>()));
        correct += ct[0].get<int>();
        total += ct[1].get<int>();
      }
      absl::StrAppendFormat(&md, "- **%s**, %s words: %.1f%% (%s)\n", task, length,
                            total ? 100.0 * correct / total : 0.0, absl::StrJoin(cells, ", "));
    }
  }
  if (measured.contains("acceptance_bar")) {
    absl::StrAppend(&md, "\n## Acceptance\n\n",
                    AcceptanceText(measured, measured["acceptance_bar"].get<double>()));
  }
  const nlohmann::json& a = measured["attention"];
  absl::StrAppendFormat(&md,
      "\n## Where the full-KV attention goes\n\nShare of the attention the question's tokens give, "
      "averaged over layers, KV heads and the examples above: first %d tokens (sinks) %.1f%%, the "
      "last %d context tokens (recent) %.1f%%, the asked needle %.1f%%.\n\n",
      a["sink_tokens"].get<int>(), 100 * a["share_on_sinks"].get<double>(),
      a["recent_tokens"].get<int>(), 100 * a["share_on_recent"].get<double>(),
      100 * a["share_on_needle"].get<double>());
  const std::string command = measured.value(
      "card_command", absl::StrCat("kvwire_train card --model ", model_dir, " --name ", name));
  absl::StrAppend(&md, "Measured with `", command, "` (",
                  absl::StrFormat("%.0f", measured.value("elapsed_s", 0.0)),
                  " s); the numbers are in eval.json beside this card.\n");
  return md;
}

}  // namespace kvwire::train
