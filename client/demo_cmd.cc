#include "client/demo_cmd.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "client/generate_cmd.h"
#include "models/tasks/task_generator.h"
#include "nlohmann/json.hpp"

namespace kvwire::cli {
namespace {

// Presets that need no cache transfer go to the scout node.
bool ScoutPath(const std::string& preset) { return preset == "text" || preset.rfind("scout", 0) == 0; }

struct Totals {
  int right = 0, asked = 0;
  double wire_bytes = 0, raw_bytes = 0, first_token_s = 0;
};

}  // namespace

CLI::App* AddDemoCommand(CLI::App& app, DemoOptions& opts) {
  auto* cmd = app.add_subcommand(
      "demo", "Ask running nodes held-out needle questions at several presets; print answers, "
              "correctness, bytes on the wire and time to first token");
  cmd->add_option("--prefill", opts.prefill_address, "The prefill node's host:port")->required();
  cmd->add_option("--scout", opts.scout_address, "A scout node's host:port (for scout-* and text)");
  cmd->add_option("--preset", opts.presets, "Presets to compare (repeatable)")->capture_default_str();
  cmd->add_option("--task", opts.tasks, "passkey|multikey|vartrack|qa (repeatable)")->capture_default_str();
  cmd->add_option("--length", opts.length, "Prompt length in words")->capture_default_str()->check(CLI::Range(64, 1 << 16));
  cmd->add_option("--depth", opts.depths, "Needle depths in [0,1] (repeatable)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", opts.seed, "Seed of the held-out examples")->capture_default_str();
  cmd->add_option("--timeout", opts.timeout_seconds, "Deadline per request, seconds")->capture_default_str()->check(CLI::Range(0.1, 3600.0));
  cmd->add_flag("--json", opts.json, "One JSON object per request, then a summary object");
  return cmd;
}

int RunDemo(const DemoOptions& opts) {
  if (opts.scout_address.empty() &&
      std::all_of(opts.presets.begin(), opts.presets.end(), [](const std::string& p) { return ScoutPath(p); })) {
    std::cerr << "kvwire demo: the presets asked for (" << absl::StrJoin(opts.presets, ", ")
              << ") run on the scout path: give --scout\n";
    return 2;
  }
  std::vector<tasks::Example> examples;
  for (const std::string& name : opts.tasks) {
    auto task = tasks::ParseTaskType(name);
    if (!task.ok()) {
      std::cerr << "kvwire demo: " << task.status().message() << "\n";
      return 2;
    }
    for (size_t i = 0; i < opts.depths.size(); ++i) {
      tasks::TaskParams params{.task = *task, .split = tasks::Split::kHeldOut, .seed = opts.seed,
                               .length = opts.length, .depth = opts.depths[i]};
      auto ex = tasks::GenerateExample(params, i);
      if (!ex.ok()) {
        std::cerr << "kvwire demo: " << ex.status().message() << "\n";
        return 2;
      }
      examples.push_back(*std::move(ex));
    }
  }
  std::map<std::string, Totals> totals;
  bool failed = false;
  if (!opts.json) {
    std::printf("%-14s %-9s %5s  %-16s %-16s %-5s %10s %10s %9s\n", "preset", "task", "depth",
                "expected", "answer", "ok", "wire B", "raw B", "ttft s");
  }
  for (const std::string& preset : opts.presets) {
    if (ScoutPath(preset) && opts.scout_address.empty()) continue;
    for (const tasks::Example& ex : examples) {
      const tasks::Prompt prompt = tasks::FormatPrompt(ex);
      kvwire::v1::GenerateRequest request;
      request.set_context(prompt.context_text);
      request.set_question(prompt.question_text);
      request.set_codec_preset(preset);
      request.mutable_options()->set_max_new_tokens(static_cast<int>(ex.answer.size()) + 4);
      GenerateOptions call{.timeout_seconds = opts.timeout_seconds};
      (ScoutPath(preset) ? call.scout_address : call.prefill_address) =
          ScoutPath(preset) ? opts.scout_address : opts.prefill_address;
      kvwire::v1::GenerateReply reply;
      const grpc::Status status = CallGenerate(call, request, &reply);
      if (!status.ok()) {
        std::cerr << "kvwire demo: " << preset << " " << ex.id << ": " << status.error_message() << "\n";
        failed = true;
        continue;
      }
      const std::string answer(absl::StripAsciiWhitespace(reply.text()));
      const bool right = answer == prompt.answer_text;
      const auto& s = reply.stats();
      Totals& t = totals[preset];
      t.right += right;
      t.asked += 1;
      t.wire_bytes += s.wire_bytes();
      t.raw_bytes += s.raw_bytes();
      t.first_token_s += s.first_token_seconds();
      if (opts.json) {
        std::cout << nlohmann::json({{"preset", preset}, {"id", ex.id},
                                     {"task", tasks::TaskName(ex.task)}, {"depth", ex.depth},
                                     {"expected", prompt.answer_text}, {"answer", answer},
                                     {"correct", right}, {"wire_bytes", s.wire_bytes()},
                                     {"raw_bytes", s.raw_bytes()},
                                     {"bits_per_element", s.bits_per_element()},
                                     {"first_token_seconds", s.first_token_seconds()},
                                     {"selection_overlap", s.selection_overlap()}})
                         .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                  << "\n";
      } else {
        std::printf("%-14s %-9s %5.2f  %-16.16s %-16.16s %-5s %10llu %10llu %9.3f\n", preset.c_str(),
                    std::string(tasks::TaskName(ex.task)).c_str(), ex.depth,
                    prompt.answer_text.c_str(), answer.c_str(), right ? "yes" : "NO",
                    static_cast<unsigned long long>(s.wire_bytes()),
                    static_cast<unsigned long long>(s.raw_bytes()), s.first_token_seconds());
      }
    }
  }
  if (opts.json) {
    nlohmann::json summary = nlohmann::json::object();
    for (const auto& [preset, t] : totals) {
      summary[preset] = {{"correct", t.right}, {"asked", t.asked},
                         {"mean_wire_bytes", t.wire_bytes / t.asked},
                         {"bandwidth_fraction", t.raw_bytes > 0 ? t.wire_bytes / t.raw_bytes : 0},
                         {"mean_first_token_seconds", t.first_token_s / t.asked}};
    }
    std::cout << nlohmann::json({{"summary", summary}}).dump() << "\n";
  } else {
    std::printf("\n%-14s %8s %12s %10s %10s\n", "preset", "correct", "mean wire B", "bandwidth",
                "ttft s");
    for (const std::string& preset : opts.presets) {
      auto it = totals.find(preset);
      if (it == totals.end()) continue;
      const Totals& t = it->second;
      std::printf("%-14s %4d/%-3d %12.0f %9.2f%% %10.3f\n", preset.c_str(), t.right, t.asked,
                  t.wire_bytes / t.asked, t.raw_bytes > 0 ? 100 * t.wire_bytes / t.raw_bytes : 0.0,
                  t.first_token_s / t.asked);
    }
  }
  return failed ? 1 : 0;
}

}  // namespace kvwire::cli
