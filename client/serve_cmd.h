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
  int max_queued = 64;  // requests that may wait for a worker (0: no limit)
  int max_new_tokens = 128;
  std::string decode_address;    // prefill only
  std::string target_address;    // scout only: the big model's (decode) node
  std::string codec = "int4-rans";  // prefill only: default preset or config text
  double grace_seconds = 5;
  int metrics_port = 0;              // -1: no /metrics; 0: the OS chooses
  std::vector<std::string> preset_files;
  std::string log_level = "info";
  double link_mbps = 0;          // prefill and scout: emulated upload link, Mbit/s (0: none)
  std::string ladder_file;       // prefill: quality ladder for rate-controlled requests
  double assumed_link_mbps = 0;  // prefill: link rate TTFT targets assume (0: none)
  uint64_t max_cache_mib = 0;    // decode: cache memory limit over all requests (0: none)
  std::string config_file;       // TOML/INI file of these options (the command line wins)
  // Optional security (server/transport/security.h); off by default.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string upstream_ca;       // prefill and scout
  std::string auth_token_file;
  double shadow_rate = 0;  // prefill only
  int shadow_tokens = 16;  // decode only
  double upload_idle_timeout_s = 60;  // decode only: cancel uploads silent this long (0: never)
};

// Every option can also come from `--config FILE` (TOML or INI: `name = value` lines, names
// without the leading dashes, lists as ["a", "b"]); options given on the command line win.
// Unknown names are a command-line error (exit code 2).
//
// Adds `serve` with its `decode`, `prefill` and `scout` subcommands to `app`; `opts.role` is set by the
// one that is parsed. Returns the `serve` subcommand.
CLI::App* AddServeCommand(CLI::App& app, ServeOptions& opts);

// Starts the node, prints "kvwire <role> node listening on ADDR:PORT model=<fingerprint>" and,
// when /metrics is served, "kvwire <role> node metrics on http://HOST:PORT/metrics", blocks
// until SIGINT/SIGTERM, shuts down with the grace period. Events (start, each request, stop)
// are logged to stderr as one JSON object per line. 0 on a clean shutdown, 1 on errors.
int RunServe(const ServeOptions& opts);

}  // namespace kvwire::cli
