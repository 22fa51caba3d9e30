// Decode-side frame reception: kvcodec::FrameDecoder fed with CacheChunk slices as they arrive.
//
// The transport carries one kvcodec frame (docs/FORMAT.md) per DecodeNode.Generate stream, cut
// into CacheChunk messages of at most kMaxSliceBytes each. Slices need not align with the frame's
// own chunks: FrameReceiver buffers an incomplete record and verifies each frame chunk (checksum,
// sequence, sizes against DecodeLimits) before any of it is used. The first error is sticky.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "kvcodec/kvcodec.h"

namespace kvwire::transport {

// Senders cut a frame into CacheChunk messages of at most this many bytes.
inline constexpr size_t kMaxSliceBytes = size_t{1} << 20;
// Receivers accept gRPC messages of at most this many bytes (a 1 MiB slice plus its envelope fits
// with room to spare; anything larger fails with RESOURCE_EXHAUSTED before it is buffered).
inline constexpr int kMaxReceiveMessageBytes = 8 << 20;

class FrameReceiver {
 public:
  // Looks at a verified frame header before any of the frame's chunks is rebuilt; a non-OK
  // status becomes the receiver's (sticky) error.
  using HeaderCheck = std::function<absl::Status(const kvcodec::FrameInfo&)>;

  // An empty `expected_fingerprint` accepts a frame from any model. `on_header` (optional) runs
  // once, as soon as the header is verified, even when the same slice carries chunks after it:
  // the owner can reserve memory for the rebuilt cache, or refuse a shape, first.
  explicit FrameReceiver(kvcodec::DecodeLimits limits = {}, std::string expected_fingerprint = {},
                         HeaderCheck on_header = nullptr);

  // Feeds the next slice of the frame. Errors carry kvcodec's code and message: DATA_LOSS for a
  // corrupt frame, FAILED_PRECONDITION for a fingerprint mismatch, RESOURCE_EXHAUSTED for limits.
  absl::Status Accept(std::span<const uint8_t> bytes);
  absl::Status Accept(std::string_view bytes) {
    return Accept(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()),
                                           bytes.size()));
  }

  // Set once the frame header has been verified.
  const kvcodec::FrameInfo* info() const { return decoder_.info(); }
  // Layers completed since the previous call, in layer order.
  std::vector<kvcodec::DecodedLayer> TakeLayers();
  // True once the trailer has been verified.
  bool complete() const { return decoder_.complete(); }
  // Call when the stream ends: OK only if the whole frame arrived, verified, with nothing after
  // it; otherwise DATA_LOSS ("truncated frame: ...") or the sticky error.
  absl::Status Finish() { return error_.ok() ? decoder_.Finish() : error_; }

  // Bytes accepted so far (including any not yet consumed by a complete record).
  uint64_t bytes_received() const { return bytes_received_; }
  // Layers handed out by TakeLayers() so far.
  int layers_taken() const { return layers_taken_; }
  // Seconds spent verifying and rebuilding inside Accept().
  double decode_seconds() const { return decode_seconds_; }

 private:
  // Feeds the frame header, and no byte after it, then runs on_header_. Returns the bytes of
  // `bytes` it consumed.
  size_t AcceptHeader(std::span<const uint8_t> bytes);

  kvcodec::FrameDecoder decoder_;
  HeaderCheck on_header_;
  absl::Status error_;        // on_header_'s refusal, sticky
  bool header_checked_ = false;
  uint64_t header_fed_ = 0;   // header bytes fed so far
  uint64_t header_size_ = 0;  // known once its fixed prefix arrived
  std::array<uint8_t, 10> prefix_{};
  uint64_t bytes_received_ = 0;
  int layers_taken_ = 0;
  double decode_seconds_ = 0;
};

}  // namespace kvwire::transport
