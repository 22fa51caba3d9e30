// `kvwire bench engine`: prefill and decode speed, time to first token and memory of the
// libtorch model engine, on a given checkpoint or on a random-weight Llama-shaped one.
#pragma once

#include <cstdint>
#include <string>

namespace kvwire {

struct EngineBenchOptions {
  // A Hugging Face checkpoint directory. Empty: a random-weight checkpoint of the shape
  // below is written to a temporary directory (and removed afterwards).
  std::string model_dir;
  int tokens = 4096;        // prompt length
  int decode_tokens = 32;   // greedy steps after the prefill
  std::string dtype = "float32";  // engine dtype: float32 or bfloat16
  int threads = 0;          // torch intra-op threads; 0 = all cores
  std::string device = "cpu";
  bool json = false;
  uint64_t seed = 1;
  // Shape of the random checkpoint (ignored with model_dir): a small Llama (~56M
  // parameters, ~24M of them in the layers) whose 4096-token prefill takes seconds on two
  // cores. head_dim = hidden / heads.
  int hidden = 512;
  int layers = 8;
  int heads = 8;
  int kv_heads = 4;
  int intermediate = 1408;
  int vocab = 32000;
};

// Prints prefill tokens/s, decode tokens/s, time to first token and peak resident memory
// (text table, or JSON with options.json). Returns 0 on success, 1 on failure (message on
// stderr), 2 for bad options.
int RunEngineBench(const EngineBenchOptions& options);

}  // namespace kvwire
