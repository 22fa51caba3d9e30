// The model engine: runs a Hugging Face decoder (Llama, Qwen2, Mistral) with libtorch on
// the CPU or a CUDA GPU, produces the KV cache a prefill node ships, and decodes from a
// cache imported on a decode node (possibly pruned by kvcodec's selection).
//
// Building with CUDA: the system libtorch (Debian/Ubuntu libtorch-dev) is CPU-only, and
// EngineOptions::device = "cuda" then fails with FailedPrecondition. To run on a GPU, build
// against the libtorch inside a CUDA-enabled PyTorch installation (a fresh build dir, since
// Torch_DIR is cached), as one command line:
//   cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release
//         -DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
// Check the wheel's C++ ABI first:
//   python3 -c 'import torch; print(torch._C._GLIBCXX_USE_CXX11_ABI)'
// If it prints False (older pip wheels), that libtorch cannot be linked with the system's
// abseil/gtest (built with the C++11 ABI); use a cxx11-ABI libtorch instead (the
// libtorch-cxx11-abi-*.zip downloads) and point CMAKE_PREFIX_PATH at its unpacked libtorch/.
//
// This header deliberately exposes no libtorch types: only engine.cc includes the torch
// headers, so the rest of the server compiles fast and does not depend on them.
// Every public method catches libtorch exceptions and returns them as absl::Status.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcodec/kvcodec.h"
#include "server/modelio/hf_config.h"

namespace kvwire::engine {

using modelio::ModelConfig;

struct EngineOptions {
  std::string model_dir;
  // Weights, activations and the exported cache: "float32" or "bfloat16".
  std::string dtype = "float32";
  // Torch intra-op threads; 0 = all cores. Applied (at::set_num_threads) on the thread of
  // every call. On machines shared with other work, run the process with
  // OMP_WAIT_POLICY=PASSIVE: spinning OpenMP workers otherwise steal the cores OpenBLAS's
  // own threads need (measured: float32 prefill 2.5x slower on 2 busy cores).
  int threads = 0;
  // Prefill processes the prompt in chunks of this many tokens, so the attention score
  // buffer is [heads, chunk, T] rather than [heads, T, T].
  int prefill_chunk = 512;
  // Where weights and activations live: "cpu", "cuda" (device 0) or "cuda:N". Exported
  // caches, scores and logits are always copied back to host buffers, and imported caches
  // are copied over. Load: InvalidArgument for any other string; FailedPrecondition("this
  // build of libtorch has no CUDA" / "no CUDA device") when CUDA is asked for and absent.
  std::string device = "cpu";
};

// One layer of a prefill's cache, complete (PrefillOptions::on_layer).
struct PrefillLayer {
  int layer = 0;
  // [kv_heads, tokens, head_dim] in the cache dtype. They point into the PrefillResult the call
  // fills and stay valid and unchanged as long as it lives (Engine::PrefillInto).
  std::span<const uint8_t> keys;
  std::span<const uint8_t> values;
  // This layer's rows of the requested scores, [kv_heads, tokens]; empty when not requested.
  std::vector<float> window_scores;
  std::vector<float> question_scores;
  std::vector<float> accumulated_scores;
};

struct PrefillOptions {
  // If set, called on the calling thread as soon as each layer's cache and scores are final
  // (during the last prompt chunk, layers in order), so a caller can encode and ship layer l
  // while the model computes layer l + 1. A non-OK status stops the prefill and is returned.
  std::function<absl::Status(const PrefillLayer&)> on_layer;
  // If set, asked before every layer of every prompt chunk; a non-OK status stops the prefill
  // and is returned (a cancelled or timed-out request stops within one layer, not after the
  // whole prompt).
  std::function<absl::Status()> interrupt;

  // If > 0, PrefillResult::window_scores holds the attention that the last
  // min(snapkv_window, T) query positions give to every key (SnapKV's observation window).
  int snapkv_window = 0;
  // If both are set (0 <= begin < end <= T), PrefillResult::question_scores holds the
  // attention that the queries in [question_begin, question_end) give to every key (Q2C).
  int question_begin = -1;
  int question_end = -1;
  // If true, PrefillResult::accumulated_scores holds the attention every query position gives
  // to every key, summed over all queries (H2O's accumulated attention).
  bool accumulated_scores = false;
  // If > 0, overrides EngineOptions::prefill_chunk for this call.
  int prefill_chunk_override = 0;
  // Tests only: also return the post-RoPE queries, so a reference attention can be
  // computed outside the engine.
  bool debug_return_queries = false;
};

struct PrefillResult {
  // layers, kv heads, head_dim, tokens = prompt length; dtype = the engine dtype (kFloat32
  // or kBFloat16).
  kvcodec::CacheShape shape;
  // Per layer, row-major [kv_heads, tokens, head_dim] in shape.dtype. Keys are stored after
  // RoPE, exactly as the attention uses them.
  std::vector<std::vector<uint8_t>> keys;
  std::vector<std::vector<uint8_t>> values;
  // Position of each cached token: 0..T-1.
  std::vector<int32_t> positions;
  // Logits of the last prompt position (predicting token T), vocab_size floats.
  std::vector<float> last_logits;
  // Importance scores, [layers, kv_heads, tokens] (see kvcodec::ImportanceScores). Each value
  // is a sum of softmax probabilities (causal, and windowed on sliding-window layers) over
  // the selected query positions AND over the query heads of the KV head's GQA group (the
  // group shares that K/V row, so its importance is the total attention it receives).
  // Summing rather than averaging keeps the scale additive across windows; selection only
  // compares scores, so either reduction picks the same tokens.
  std::optional<kvcodec::ImportanceScores> window_scores;
  std::optional<kvcodec::ImportanceScores> question_scores;
  std::optional<kvcodec::ImportanceScores> accumulated_scores;
  // Only with PrefillOptions::debug_return_queries: per layer, float32
  // [num_attention_heads, tokens, head_dim] post-RoPE queries.
  std::vector<std::vector<float>> debug_queries;

  // Views of keys/values for kvcodec::EncodeFrame.
  std::vector<kvcodec::LayerView> layer_views() const;
};

class DecodeSession;

class Engine {
 public:
  // Reads config.json and the safetensors weights in options.model_dir, checks them against
  // each other, and converts the weights to options.dtype. InvalidArgument for a bad option,
  // a bad config or a checkpoint that does not match it; NotFound for missing files.
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelConfig& config() const;
  // The dtype of exported caches (the engine dtype).
  kvcodec::DType cache_dtype() const;

  // Runs the prompt and returns its KV cache and last logits. InvalidArgument for an empty
  // prompt, a token id outside [0, vocab_size), a prompt longer than
  // max_position_embeddings, or an invalid score range. Thread-compatible: concurrent
  // calls on one engine are safe (weights are read-only).
  absl::StatusOr<PrefillResult> Prefill(std::span<const int32_t> token_ids,
                                        const PrefillOptions& options = {}) const;
  // The same into *out, which the caller owns. For on_layer consumers that read the layers on
  // another thread: the spans stay valid while *out lives, also when the call fails part-way
  // (with Prefill a failure frees them while that thread may still be reading).
  absl::Status PrefillInto(std::span<const int32_t> token_ids, const PrefillOptions& options,
                           PrefillResult* out) const;

 private:
  friend class DecodeSession;
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Generation from an imported cache. The cache may be pruned: per layer and KV head, any
// subset of the prompt positions, each head with its own count (the session pads heads to
// the longest and masks the padding). New tokens get positions prompt_length,
// prompt_length + 1, ...: RoPE continues from the original prompt length and surviving
// tokens keep their original positions (keys are stored post-RoPE, so the positions are
// used for the new tokens' RoPE and for sliding-window masks).
class DecodeSession {
 public:
  // `layers[l]` (with layers[l].layer == l) holds, for each KV head h, kept[h] = the
  // original positions of its rows (each in [0, prompt_length), strictly increasing) and
  // keys[h] / values[h] = kept[h].size() * head_dim elements in shape.dtype (float32,
  // float16 or bfloat16; converted to the engine dtype). InvalidArgument when shape or the
  // buffers disagree with the model. `engine` must outlive the session.
  //
  // With `positions` (kvcodec::FrameInfo::positions: the original position of each of the
  // frame's shape.num_tokens tokens), kept[h] entries are token indices in
  // [0, shape.num_tokens) instead, and kept index i has original position positions[i].
  // positions must hold exactly shape.num_tokens strictly increasing values in
  // [0, max_position_embeddings), else InvalidArgument. New tokens then start at
  // max(prompt_length, positions.back() + 1): pass prompt_length = 0 to continue right after
  // the last cached token, or the real prompt length if the frame dropped the prompt's tail.
  // positions = 0..T-1 with prompt_length T behaves exactly as the call without positions.
  static absl::StatusOr<std::unique_ptr<DecodeSession>> Create(
      const Engine& engine, const kvcodec::CacheShape& shape,
      std::span<const kvcodec::DecodedLayer> layers, int prompt_length,
      std::span<const int32_t> positions = {});
  // Keeps every position of a prefill result (no pruning, no codec round trip).
  static absl::StatusOr<std::unique_ptr<DecodeSession>> FromPrefill(const Engine& engine,
                                                                    const PrefillResult& prefill);
  ~DecodeSession();

  // Appends `token` at position() and returns the logits that predict the next token.
  // InvalidArgument for a token outside the vocabulary or a position past
  // max_position_embeddings.
  absl::StatusOr<std::vector<float>> Step(int32_t token);
  // Position the next Step's token gets.
  int position() const;

 private:
  struct Impl;
  explicit DecodeSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Greedy decoding: feeds first_token (usually the argmax of the prefill's last logits),
// then each argmax, until max_new_tokens tokens were produced or one of eos_ids was
// produced (that eos is included). Returns the produced tokens, first_token excluded.
absl::StatusOr<std::vector<int32_t>> GenerateGreedy(DecodeSession& session, int32_t first_token,
                                                    int max_new_tokens,
                                                    std::span<const int32_t> eos_ids);

}  // namespace kvwire::engine
