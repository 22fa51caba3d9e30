// `kvwire bench e2e`: time to first token through real nodes on loopback, per path and preset,
// over an emulated link (the prefill node's --link-mbps pacer on its cache upload; the scout
// node's on its token upload for the text path), beside the floor bytes / link rate + prefill.
//
// In one process it starts a decode node (which also serves PromptNode, the text path's big
// node), and per link rate a prefill node and a scout node with that rate, then sends each
// request max_new_tokens = 1 so the call's wall time is the time to first token as a client
// sees it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire {

struct E2eBenchOptions {
  // Hugging Face model directory; when it has no config.json, a random checkpoint of the shape
  // below with a byte-level tokenizer is written to a temporary directory instead.
  std::string model_dir = "models/target";
  int tokens = 1024;  // prompt tokens
  std::vector<double> link_mbps = {100, 1000};
  // "text" is the text path (only token ids travel); anything else a preset of the prefill path.
  std::vector<std::string> presets = {"text", "bf16", "int8", "int4-rans", "snapkv25-int4"};
  int reps = 3;      // best of, after one warm-up request
  int threads = 0;   // torch threads per node (0: all cores)
  bool json = false;
  // Random model shape (Qwen2-style).
  int hidden = 256, layers = 8, heads = 8, kv_heads = 2, intermediate = 704;
  uint64_t seed = 1;
};

struct E2eRow {
  std::string preset;      // "text" or the preset name
  double link_mbps = 0;
  uint64_t wire_bytes = 0;  // cache frame (prefill path) or coded token upload (text path)
  uint64_t raw_bytes = 0;   // the cache at 16 bits per element
  double prefill_seconds = 0;
  double link_seconds = 0;     // wire_bytes / link rate
  double floor_seconds = 0;    // link_seconds + prefill_seconds
  double ttft_seconds = 0;     // best client-side wall time of a 1-token request
  double server_ttft_seconds = 0;  // the nodes' first_token_seconds of that request
  double overlap_seconds = 0;  // prefill path: what streaming layers saved
  int prompt_tokens = 0;
};

struct E2eReport {
  std::string model;  // directory, or "random (...)" with the shape
  std::string fingerprint;
  int tokens = 0;
  int reps = 0;
  std::vector<E2eRow> rows;
};

absl::StatusOr<E2eReport> MeasureE2e(const E2eBenchOptions& options);

// Prints MeasureE2e's report as a table (or JSON with options.json). Returns the exit code.
int RunE2eBench(const E2eBenchOptions& options);

}  // namespace kvwire
