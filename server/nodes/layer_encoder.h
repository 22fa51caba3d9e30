// Encodes a cache into a kvcodec frame layer by layer, as the engine finishes each layer
// (engine::PrefillOptions::on_layer), on a thread of its own: selection and encoding of layer l
// run while the model computes layer l + 1, and each frame chunk goes to `sink` (the upload) as
// soon as its last layer is encoded.
//
// Selection is per layer: the score-based rules (SnapKV, Q2C, H2O, the anchor rule) choose
// layer l's tokens from layer l's scores with layer l's budget (PyramidKV's budgets are computed
// for the whole shape up front), so the kept sets equal kvcodec::Select's on the whole cache;
// rules without scores (keep-all, StreamingLLM, random) are selected before the first layer.
// The frame is byte for byte kvcodec::EncodeFrame's.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvcodec/kvcodec.h"
#include "server/engine/engine.h"

namespace kvwire::nodes {

// Which of a PrefillLayer's score rows a selection rule reads (null when it needs none).
const std::vector<float>* LayerScoresFor(const kvcodec::SelectionConfig& selection,
                                         const engine::PrefillLayer& layer);

class LayerEncoder {
 public:
  // Receives the frame's bytes in order (header, chunks, trailer). False stops the encoder
  // (the upload ended); OnLayer then returns Cancelled.
  using Sink = std::function<bool(std::vector<uint8_t>)>;

  // `token_ids` (one per cached token) must outlive the encoder (the anchor rule reads them).
  // Sends the frame header to `sink` right away. InvalidArgument for a bad config or shape.
  static absl::StatusOr<std::unique_ptr<LayerEncoder>> Start(
      const kvcodec::CacheShape& shape, const kvcodec::CodecConfig& config,
      const std::string& model_fingerprint, std::span<const int32_t> positions,
      std::span<const int32_t> token_ids, Sink sink);
  // Stops the thread (dropping queued layers) if Finish() did not run.
  ~LayerEncoder();

  // Hands layer `layer.layer` over (layers must come in order 0, 1, ...; its key and value
  // bytes must stay valid until Finish()). Returns the first error the encoder met so far, so
  // the prefill stops early.
  absl::Status OnLayer(const engine::PrefillLayer& layer);
  // Waits for every layer to be encoded, then sends the trailer. The first error, if any.
  absl::Status Finish();

  const kvcodec::ByteAccounting& accounting() const;  // valid after Finish()
  uint64_t frame_bytes() const { return frame_bytes_; }
  // Seconds the encoder thread spent selecting, and selecting plus encoding.
  double selection_seconds() const { return selection_seconds_; }
  double encode_seconds() const { return encode_seconds_; }

 private:
  struct Pending {
    int layer;
    kvcodec::LayerView view;
    std::vector<float> scores;  // the rule's rows for this layer, or empty
  };
  LayerEncoder() = default;
  void Run();
  absl::Status EncodeLayer(Pending& pending);
  bool Emit(std::vector<uint8_t> bytes);

  kvcodec::CacheShape shape_;
  kvcodec::SelectionConfig selection_;
  std::vector<int> budgets_;
  std::span<const int32_t> token_ids_;
  std::unique_ptr<kvcodec::FrameEncoder> encoder_;
  Sink sink_;
  std::vector<kvcodec::LayerView> views_;
  std::vector<std::vector<std::vector<int32_t>>> kept_;
  int next_chunk_ = 0;
  uint64_t frame_bytes_ = 0;
  double selection_seconds_ = 0;
  double encode_seconds_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool closing_ = false;
  absl::Status error_;
  std::thread thread_;
};

}  // namespace kvwire::nodes
