// `kvwire serve decode|prefill|scout`: runs one node until SIGINT or SIGTERM.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace kvwire::cli {

struct ServeOptions {
  std::string role;  // "decode", "prefill" or "scout"
  std::string listen;
  std::string model_dir;
  std::string tokenizer_path;
  std::string dtype = "float32";
  std::string device = "cpu";
  int threads = 0;
  int workers = 2;
  int max_new_tokens = 128;
  std::string decode_address;    // prefill only
  std::string target_address;    // scout only: the big model's (decode) node
  std::string codec = "int4-rans";  // prefill only: default preset or config text
  double grace_seconds = 5;
  int metrics_port = 0;              // -1: no /metrics; 0: the OS chooses
  std::vector<std::string> preset_files;
  std::string log_level = "info";
  double shadow_rate = 0;  // prefill only
  int shadow_tokens = 16;  // decode only
};

// Adds `serve` with its `decode`, `prefill` and `scout` subcommands to `app`; `opts.role` is set by the
// one that is parsed. Returns the `serve` subcommand.
CLI::App* AddServeCommand(CLI::App& app, ServeOptions& opts);

// Starts the node, prints "kvwire <role> node listening on ADDR:PORT model=<fingerprint>" and,
// when /metrics is served, "kvwire <role> node metrics on http://HOST:PORT/metrics", blocks
// until SIGINT/SIGTERM, shuts down with the grace period. Events (start, each request, stop)
// are logged to stderr as one JSON object per line. 0 on a clean shutdown, 1 on errors.
int RunServe(const ServeOptions& opts);

}  // namespace kvwire::cli
