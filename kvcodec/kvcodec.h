// kvcodec: turns a transformer KV cache into a compact, verifiable byte stream and back.
//
// The library works on plain buffers (no libtorch, no gRPC) so it can be tested, fuzzed and
// benchmarked alone. The pipeline, in the order the encoder applies it:
//   selection (which token positions survive, per layer and KV head)
//   -> delta coding (optional, along the token axis)
//   -> quantization (per-layer, per K/V bit plan) or low rank
//   -> entropy coding (none, zstd or rANS)
//   -> a chunked, checksummed frame (docs/FORMAT.md).
// Errors are absl::Status; nothing here throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvcodec {

enum class DType : uint8_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(std::string_view name);

// Shape of a whole cache. Every layer holds K and V of [num_kv_heads, num_tokens, head_dim].
struct CacheShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int num_tokens = 0;
  DType dtype = DType::kBFloat16;
  // Number of K and V elements in the full cache.
  uint64_t num_elements() const {
    return 2ull * num_layers * num_kv_heads * num_tokens * head_dim;
  }
};

// One layer's keys and values, row-major [num_kv_heads, num_tokens, head_dim] in the cache dtype.
// Not owned.
struct LayerView {
  const void* keys = nullptr;
  const void* values = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------------
enum class SelectionMethod : uint8_t {
  kKeepAll = 0,
  kSnapKV = 1,         // attention from the last `window` queries, pooled; window always kept
  kQ2C = 2,            // attention from the question span; the protected span is always kept
  kH2O = 3,            // accumulated attention; the newest `recent_tokens` always kept
  kStreamingLLM = 4,   // `sink_tokens` first, the newest tokens fill the rest; needs no scores
  kAnchorRule = 5,     // sinks, recent, tokens whose id is in anchor_token_ids, then top scores
  kRandom = 6,         // seeded uniform choice (plus nothing mandatory)
};
std::string_view SelectionMethodName(SelectionMethod method);
absl::StatusOr<SelectionMethod> ParseSelectionMethod(std::string_view name);

enum class HeadMode : uint8_t {
  kShared = 0,    // one index set per layer: scores summed over KV heads
  kPerHead = 1,   // each KV head keeps its own top `budget`
  kAdaptive = 2,  // AdaKV: the layer's budget (heads x budget) goes to the best scores of any
                  // head, after each head's own best 20% of its selected share
};
enum class Pooling : uint8_t { kMax = 0, kAvg = 1 };

struct SelectionConfig {
  SelectionMethod method = SelectionMethod::kKeepAll;
  // Budget: tokens kept per KV head per layer, mandatory tokens included. If budget_tokens > 0 it
  // wins; otherwise ceil(keep_ratio * num_tokens).
  double keep_ratio = 1.0;
  int budget_tokens = 0;
  // PyramidKV: budgets fall linearly from the first to the last layer with the same mean. The
  // line shapes the selected tokens only: every layer also keeps the method's fixed tokens
  // (SnapKV's window, H2O's recent, the protected span), and the last layer selects
  // (mean - fixed) / pyramid_beta.
  bool pyramid = false;
  double pyramid_beta = 20.0;
  HeadMode head_mode = HeadMode::kShared;
  // SnapKV observation window (the last `window` tokens). SnapKV's and Q2C's scores are pooled
  // over `kernel_size` neighbours (odd; 1 = the raw scores) before ranking, so a kept token
  // brings its neighbours (the rest of a multi-token answer).
  int window = 32;
  int kernel_size = 7;
  Pooling pooling = Pooling::kMax;
  int sink_tokens = 4;
  // Newest tokens H2O and the anchor rule always keep. kRecentAuto: H2O's own split, half of
  // each layer's budget (the heavy hitters get the other half); 64 for the anchor rule.
  static constexpr int kRecentAuto = -1;
  int recent_tokens = kRecentAuto;
  std::vector<int32_t> anchor_token_ids;
  uint64_t seed = 0;
  // Token indices [protect_begin, protect_end) are always kept (e.g. the question for Q2C).
  int protect_begin = 0;
  int protect_end = 0;
};

// Importance of each token for each layer and KV head, as the engine computes it (attention
// received from the window, the question, or accumulated). values[(l * heads + h) * tokens + t].
struct ImportanceScores {
  int num_layers = 0;
  int num_kv_heads = 0;
  int num_tokens = 0;
  std::vector<float> values;
  float at(int layer, int head, int token) const {
    return values[(static_cast<size_t>(layer) * num_kv_heads + head) * num_tokens + token];
  }
};

// kept[layer][head]: sorted, unique token indices (into the cache's token axis) that survive.
struct Selection {
  std::vector<std::vector<std::vector<int32_t>>> kept;
  static Selection KeepAll(const CacheShape& shape);
  uint64_t kept_tokens() const;  // summed over layers and heads
};

// Per-layer budgets (tokens per head) for `config` on a cache of `shape`.
std::vector<int> LayerBudgets(const SelectionConfig& config, const CacheShape& shape);

// Chooses the tokens to keep. `scores` may be null only for kKeepAll, kStreamingLLM and kRandom;
// `token_ids` (one per token) is needed only by kAnchorRule.
absl::StatusOr<Selection> Select(const SelectionConfig& config, const CacheShape& shape,
                                 const ImportanceScores* scores,
                                 std::span<const int32_t> token_ids = {});

// ---------------------------------------------------------------------------------------------
// Codec configuration
// ---------------------------------------------------------------------------------------------
enum class ValueCoding : uint8_t {
  kRaw = 0,       // the cache dtype as is (lossless)
  kFloat16 = 1,   // converted to IEEE half
  kBFloat16 = 2,  // converted to bfloat16
  kInt8 = 3,
  kInt4 = 4,
  kInt3 = 5,
  kInt2 = 6,
  kLowRank = 7,   // SVD rank-k factors per head, stored as float16
};
enum class QuantAxis : uint8_t { kPerToken = 0, kPerChannel = 1 };

struct QuantSpec {
  ValueCoding coding = ValueCoding::kRaw;
  QuantAxis axis = QuantAxis::kPerToken;
  // Elements sharing one scale/offset pair along the axis' reduction direction: channels for
  // per-token, tokens for per-channel. 0 means the whole row (per-token) or column (per-channel).
  int group_size = 0;
  int rank = 0;  // kLowRank only
  int bits() const;  // code bits for integer codings, 16 or 32 for float codings
  bool is_integer() const { return coding >= ValueCoding::kInt8 && coding <= ValueCoding::kInt2; }
  bool operator==(const QuantSpec&) const = default;
};

// Per-layer, per-K/V quantization. Text form: comma-separated rules, later rules win:
//   RULE   := LAYERS [ "k" | "v" ] ":" CODING { "/" OPTION }
//   LAYERS := "*" | N | N "-" M           (inclusive)
//   CODING := raw | fp16 | bf16 | int8 | int4 | int3 | int2 | svdK   (e.g. svd64)
//   OPTION := token | channel | gN        (axis; group size N)
// e.g. "*:int4,0:raw" = layer 0 lossless, the rest INT4 per token.
class BitPlan {
 public:
  static absl::StatusOr<BitPlan> Parse(std::string_view text);
  // Spec for `layer`'s keys (is_value=false) or values. Layers no rule names are kRaw.
  QuantSpec Resolve(int layer, bool is_value) const;
  const std::string& text() const { return text_; }

 private:
  struct Rule {
    int first_layer, last_layer;  // -1 for "*"
    int which;                    // 0 both, 1 keys, 2 values
    QuantSpec spec;
  };
  std::string text_;
  std::vector<Rule> rules_;
};

enum class DeltaMode : uint8_t {
  kNone = 0,
  kSequential = 1,         // each token minus the previous (reconstructed) token
  kGroupedSequential = 2,  // sequential, restarting every group_size tokens
  kAnchor = 3,             // CacheGen: each group's first token is the anchor, others minus it
};
struct DeltaConfig {
  DeltaMode mode = DeltaMode::kNone;
  int group_size = 10;
  // Closed loop predicts from the decoder's reconstruction, so quantization error does not
  // accumulate; open loop predicts from the original values (what seed 003 measured).
  bool closed_loop = true;
};

enum class EntropyCoder : uint8_t { kNone = 0, kZstd = 1, kRans = 2 };

struct CodecConfig {
  SelectionConfig selection;
  std::string bit_plan = "*:raw";
  DeltaConfig delta;
  EntropyCoder entropy = EntropyCoder::kNone;
  int zstd_level = 3;
  int layers_per_chunk = 1;

  // Text form: ';'-separated key=value pairs, any order, unknown keys rejected:
  //   select=keepall|snapkv|q2c|h2o|streaming|anchor|random  keep=0.25  budget=512
  //   heads=shared|perhead|adaptive  pyramid=1  window=32  kernel=7  pool=max|avg  sinks=4
  //   recent=auto|64  seed=N  plan=<BitPlan>  delta=none|seq|gseq/G|anchor/G[/open]
  //   entropy=none|zstd[/LEVEL]|rans  chunk=LAYERS
  static absl::StatusOr<CodecConfig> Parse(std::string_view text);
  std::string ToString() const;  // canonical text form; Parse(ToString()) round-trips
};

// Named presets ("full", "int8", "int4", "int4-rans", "mixed-int4", "snapkv25-int4", ...).
absl::StatusOr<CodecConfig> Preset(std::string_view name);
std::vector<std::string> PresetNames();

// ---------------------------------------------------------------------------------------------
// Byte accounting
// ---------------------------------------------------------------------------------------------
struct ByteAccounting {
  uint64_t raw_bytes = 0;       // the full cache at 16 bits per element (bandwidth reference)
  uint64_t header_bytes = 0;    // frame header and trailer
  uint64_t index_bytes = 0;     // kept positions
  uint64_t scale_bytes = 0;     // quantization scales/offsets and low-rank factors' metadata
  uint64_t payload_bytes = 0;   // codes or values
  uint64_t framing_bytes = 0;   // chunk headers and checksums
  uint64_t total_bytes = 0;
  uint64_t elements = 0;        // K and V elements of the full cache
  uint64_t kept_elements = 0;
  double bits_per_element() const { return elements ? 8.0 * total_bytes / elements : 0; }
  double bandwidth_fraction() const { return raw_bytes ? double(total_bytes) / raw_bytes : 0; }
  double kept_fraction() const { return elements ? double(kept_elements) / elements : 0; }
};

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------
constexpr size_t kMaxFingerprintBytes = 64;

// Streams one frame: Header(), then EncodeChunk(c) for c in [0, num_chunks()) in order, then
// Trailer(). Layers can be encoded as soon as they are computed.
class FrameEncoder {
 public:
  static absl::StatusOr<std::unique_ptr<FrameEncoder>> Create(
      const CacheShape& shape, const CodecConfig& config, std::string_view model_fingerprint,
      std::span<const int32_t> positions);
  ~FrameEncoder();

  int num_chunks() const;
  // Layers [first, first + count) that chunk `chunk` carries.
  std::pair<int, int> chunk_layers(int chunk) const;
  std::vector<uint8_t> Header();
  // `layers` and `kept` hold the chunk's layers in order; kept[i][h] as in Selection::kept.
  absl::StatusOr<std::vector<uint8_t>> EncodeChunk(
      int chunk, std::span<const LayerView> layers,
      std::span<const std::vector<std::vector<int32_t>>> kept);
  std::vector<uint8_t> Trailer();
  const ByteAccounting& accounting() const;

 private:
  struct Impl;
  explicit FrameEncoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Encodes a whole cache in one call. `layers` has shape.num_layers entries.
absl::StatusOr<std::vector<uint8_t>> EncodeFrame(const CacheShape& shape,
                                                 const CodecConfig& config,
                                                 std::string_view model_fingerprint,
                                                 std::span<const int32_t> positions,
                                                 std::span<const LayerView> layers,
                                                 const Selection& selection,
                                                 ByteAccounting* accounting = nullptr);

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------
// Everything the decoder allocates is bounded by these before it is allocated.
struct DecodeLimits {
  int max_layers = 1024;
  int max_kv_heads = 256;
  int max_head_dim = 1024;
  int max_tokens = 1 << 21;
  uint64_t max_decoded_bytes = 16ull << 30;
  uint64_t max_chunk_bytes = 1ull << 31;
};

struct FrameInfo {
  int version = 0;
  CacheShape shape;
  CodecConfig config;
  std::string config_text;
  std::string model_fingerprint;
  std::vector<int32_t> positions;  // original position of each token
  int num_chunks = 0;
  int layers_per_chunk = 0;
};

// An allocator whose resize() leaves new elements uninitialised. Decoded caches are hundreds
// of MB and every byte is written by the decoder right away; zero-filling them first cost 13%
// of decode time.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using ByteBuffer = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

// One reconstructed layer. keys[h] / values[h] hold kept[h].size() * head_dim elements in the
// frame's dtype, row-major [kept token, channel].
struct DecodedLayer {
  int layer = 0;
  std::vector<std::vector<int32_t>> kept;
  std::vector<ByteBuffer> keys;
  std::vector<ByteBuffer> values;
};

// Incremental decoder: Feed() bytes as they arrive, split anywhere. Each chunk is verified
// (checksum, sequence, sizes) before any of it is used; the first error is sticky.
class FrameDecoder {
 public:
  // An empty `expected_fingerprint` accepts any model.
  explicit FrameDecoder(DecodeLimits limits = {}, std::string expected_fingerprint = {});
  ~FrameDecoder();
  FrameDecoder(FrameDecoder&&) noexcept;
  FrameDecoder& operator=(FrameDecoder&&) noexcept;

  absl::Status Feed(std::span<const uint8_t> bytes);
  // Set once the header has been verified.
  const FrameInfo* info() const;
  // Layers completed since the previous call, in layer order.
  std::vector<DecodedLayer> TakeLayers();
  // True once the trailer has been verified.
  bool complete() const;
  // OK only if the whole frame arrived, verified, with no bytes after it.
  absl::Status Finish();
  uint64_t bytes_consumed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decodes a whole frame held in memory.
absl::StatusOr<std::vector<DecodedLayer>> DecodeFrame(std::span<const uint8_t> frame,
                                                      const DecodeLimits& limits = {},
                                                      std::string_view expected_fingerprint = {},
                                                      FrameInfo* info = nullptr);

// Upper bound on the encoded size of a frame for `shape` (any config, any selection).
uint64_t MaxEncodedSize(const CacheShape& shape);

}  // namespace kvcodec
