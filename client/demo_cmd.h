// `kvwire demo`: asks running nodes needle questions from the task generator's held-out split at
// several presets, and prints per preset the answer, whether it is right, the bytes that crossed
// the link and the time to the first token. scripts/demo.sh starts the nodes and runs it.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace kvwire::cli {

struct DemoOptions {
  std::string prefill_address;  // the cache path (PrefillNode)
  std::string scout_address;    // the scout and text paths (ScoutNode); optional
  std::vector<std::string> presets = {"bf16", "int8", "int4-rans", "snapkv25-int4",
                                      "scout-snapkv25", "text"};
  std::vector<std::string> tasks = {"passkey", "multikey"};
  int length = 512;
  std::vector<double> depths = {0.1, 0.5, 0.9};
  uint64_t seed = 7;
  double timeout_seconds = 120;
  bool json = false;
};

CLI::App* AddDemoCommand(CLI::App& app, DemoOptions& opts);
// 0 when every request completed (right or wrong), 1 when one failed, 2 for bad options.
int RunDemo(const DemoOptions& opts);

}  // namespace kvwire::cli
