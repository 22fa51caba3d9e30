// kvwire_train: trains a bundled model (target or scout) on the retrieval tasks and writes a
// Hugging Face checkpoint; `kvwire_train eval` scores a checkpoint on held-out examples.
//
//   kvwire_train --out models/target --layers 4 --hidden 128 --heads 4 --kv-heads 2
//                --tasks passkey:1,multikey:2,mqar:1 --schedule 128:2000,256:4000,512 --steps 8000
//   kvwire_train --out models/target --resume ...       (continues from the last checkpoint)
//   kvwire_train eval --model models/target --tasks passkey,multikey --length 512
//   kvwire_train card --model models/target --name target     (eval.json + README.md)
//
// Exit codes: 0 success, 1 the job failed, 2 bad command line.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

#include "models/train/model_card.h"
#include "models/train/trainer.h"
#include "server/engine/blas_kernels.h"

int main(int argc, char** argv) {
  kvwire::engine::MaybeRestartWithBetterBlasKernels(argv);
  using namespace kvwire::train;
  CLI::App app{"Train the bundled retrieval models (Llama architecture, HF format)"};
  app.require_subcommand(0, 1);
  TrainOptions o;
  std::string task_mix = "passkey:1,multikey:1,mqar:1";
  std::string schedule = "512";
  app.add_option("--out", o.out_dir, "checkpoint directory")->required();
  app.add_option("--layers", o.layers)->check(CLI::Range(1, 64));
  app.add_option("--hidden", o.hidden)->check(CLI::Range(8, 8192));
  app.add_option("--heads", o.heads)->check(CLI::Range(1, 128));
  app.add_option("--kv-heads", o.kv_heads)->check(CLI::Range(1, 128));
  app.add_option("--intermediate", o.intermediate)->check(CLI::Range(8, 65536));
  app.add_option("--rope-theta", o.rope_theta)->check(CLI::PositiveNumber);
  app.add_option("--tasks", task_mix, "task:weight,... (passkey|multikey|vartrack|qa|mqar)");
  app.add_option("--schedule", schedule,
                 "length:until_step,...,length (prompt words; a/b alternates a and b)");
  app.add_option("--batch", o.batch)->check(CLI::Range(1, 4096));
  app.add_option("--steps", o.steps)->check(CLI::NonNegativeNumber);
  app.add_option("--lr", o.lr)->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup)->check(CLI::NonNegativeNumber);
  app.add_option("--weight-decay", o.weight_decay)->check(CLI::NonNegativeNumber);
  app.add_option("--log-every", o.log_every)->check(CLI::PositiveNumber);
  app.add_option("--eval-every", o.eval_every)->check(CLI::PositiveNumber);
  app.add_option("--eval-examples", o.eval_examples)->check(CLI::PositiveNumber);
  app.add_option("--save-every", o.save_every)->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed);
  app.add_option("--threads", o.threads, "torch threads (0: all cores)");
  app.add_flag("--resume", o.resume, "continue from the checkpoint in --out");

  CLI::App* eval = app.add_subcommand("eval", "held-out exact match of a checkpoint");
  std::string model_dir, eval_tasks = "passkey,multikey";
  int length = 512, examples = 64;
  uint64_t eval_seed = 12345;
  eval->add_option("--model", model_dir)->required();
  eval->add_option("--tasks", eval_tasks);
  eval->add_option("--length", length)->check(CLI::Range(32, 1 << 20));
  eval->add_option("--examples", examples)->check(CLI::PositiveNumber);
  eval->add_option("--seed", eval_seed);
  CLI::App* card = app.add_subcommand("card", "measure a checkpoint through the engine and write its model card");
  std::string card_name = "target", card_tasks = "passkey,multikey";
  CardOptions card_options;
  card->add_option("--model", card_options.model_dir)->required();
  card->add_option("--name", card_name);
  card->add_option("--tasks", card_tasks);
  card->add_option("--lengths", card_options.lengths)->delimiter(',');
  card->add_option("--depths", card_options.depths)->delimiter(',')->check(CLI::Range(0.0, 1.0));
  card->add_option("--examples", card_options.examples)->check(CLI::PositiveNumber);
  double card_bar = 0;
  bool card_from_eval = false;
  card->add_flag("--from-eval", card_from_eval,
                 "render the card from the model's eval.json instead of measuring again");
  card->add_option("--bar", card_bar, "acceptance bar to report (0.95: 95% at every depth)")
      ->check(CLI::Range(0.0, 1.0));
  // --out is required for training only.
  app.get_option("--out")->required(false);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto mix = ParseTaskMix(eval->parsed() ? eval_tasks : card->parsed() ? card_tasks : task_mix);
  if (!mix.ok()) {
    std::cerr << "kvwire_train: " << mix.status().message() << "\n";
    return 2;
  }
  if (eval->parsed()) {
    auto acc = EvaluateCheckpoint(model_dir, TaskTypes(*mix), length, examples, eval_seed, o.threads);
    if (!acc.ok()) {
      std::cerr << "kvwire_train eval: " << acc.status() << "\n";
      return 1;
    }
    for (const TaskAccuracy& a : *acc) {
      std::cout << kvwire::tasks::TaskName(a.task) << " " << a.correct << "/" << a.total << "\n";
    }
    return 0;
  }
  if (card->parsed()) {
    card_options.tasks = TaskTypes(*mix);
    card_options.threads = o.threads;
    absl::StatusOr<nlohmann::json> measured;
    if (card_from_eval) {
      std::ifstream f(card_options.model_dir + "/eval.json");
      measured = nlohmann::json::parse(f, nullptr, false);
      if (!f || measured->is_discarded() || !measured->contains("accuracy")) {
        std::cerr << "kvwire_train card: " << card_options.model_dir << "/eval.json is missing or malformed\n";
        return 1;
      }
      card_options.examples = measured->value("examples_per_cell", card_options.examples);
      card_options.lengths.clear();
      for (const auto& [length, unused] : (*measured)["accuracy"]["passkey"].items()) {
        card_options.lengths.push_back(std::stoi(length));
      }
      std::sort(card_options.lengths.begin(), card_options.lengths.end());
    } else {
      measured = MeasureModel(card_options);
      if (!measured.ok()) {
        std::cerr << "kvwire_train card: " << measured.status() << "\n";
        return 1;
      }
      auto fixed = MeasureModel(FixedCheckOptions(card_options.model_dir));
      if (!fixed.ok()) {
        std::cerr << "kvwire_train card: " << fixed.status() << "\n";
        return 1;
      }
      (*measured)["fixed_check"] = (*fixed)["accuracy"];
    }
    // "Still training" unless retrieval is solid at every length (90%), or the acceptance bar
    // given is met at some length.
    (*measured)["retrieves"] =
        Retrieves(*measured, 0.9) || (card_bar > 0 && !LengthsMeetingBar(*measured, card_bar).empty());
    measured->erase("acceptance_bar");
    if (card_bar > 0) (*measured)["acceptance_bar"] = card_bar;
    // The card quotes the command that measured it.
    std::string command = "kvwire_train card --model " + card_options.model_dir + " --name " +
                          card_name + " --lengths " + absl::StrJoin(card_options.lengths, ",") +
                          " --examples " + std::to_string(card_options.examples);
    if (card_bar > 0) command += " --bar " + absl::StrFormat("%g", card_bar);
    (*measured)["card_command"] = command;
    auto text = RenderModelCard(card_options.model_dir, card_name, *measured);
    if (!text.ok()) {
      std::cerr << "kvwire_train card: " << text.status() << "\n";
      return 1;
    }
    std::ofstream(card_options.model_dir + "/eval.json") << measured->dump(2) << "\n";
    std::ofstream(card_options.model_dir + "/README.md") << *text;
    std::cout << *text;
    return 0;
  }
  if (o.out_dir.empty()) {
    std::cerr << "kvwire_train: --out is required\n";
    return 2;
  }
  auto stages = ParseSchedule(schedule);
  if (!stages.ok()) {
    std::cerr << "kvwire_train: " << stages.status().message() << "\n";
    return 2;
  }
  o.tasks = *mix;
  o.schedule = *stages;
  // The model card quotes the exact commands that made the checkpoint.
  std::filesystem::create_directories(o.out_dir);
  {
    std::ofstream record(o.out_dir + "/train_command.txt", std::ios::app);
    for (int i = 0; i < argc; ++i) record << (i ? " " : "") << argv[i];
    record << "\n";
  }
  absl::Status s = Train(o, std::cout);
  if (!s.ok()) {
    std::cerr << "kvwire_train: " << s << "\n";
    return 1;
  }
  return 0;
}
