#include "server/transport/frame_receiver.h"

#include <chrono>
#include <utility>

namespace kvwire::transport {

FrameReceiver::FrameReceiver(kvcodec::DecodeLimits limits, std::string expected_fingerprint)
    : decoder_(limits, std::move(expected_fingerprint)) {}

absl::Status FrameReceiver::Accept(std::span<const uint8_t> bytes) {
  const auto start = std::chrono::steady_clock::now();
  bytes_received_ += bytes.size();
  absl::Status s = decoder_.Feed(bytes);
  decode_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s;
}

std::vector<kvcodec::DecodedLayer> FrameReceiver::TakeLayers() {
  std::vector<kvcodec::DecodedLayer> layers = decoder_.TakeLayers();
  layers_taken_ += static_cast<int>(layers.size());
  return layers;
}

}  // namespace kvwire::transport
