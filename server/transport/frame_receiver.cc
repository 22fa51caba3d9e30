#include "server/transport/frame_receiver.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace kvwire::transport {

namespace {

// docs/FORMAT.md: magic (4), version (1), flags (1), body_len (u32 LE), body, header_hash (8).
constexpr size_t kHeaderPrefixBytes = 10;
constexpr size_t kHeaderHashBytes = 8;

}  // namespace

FrameReceiver::FrameReceiver(kvcodec::DecodeLimits limits, std::string expected_fingerprint,
                             HeaderCheck on_header)
    : decoder_(limits, std::move(expected_fingerprint)), on_header_(std::move(on_header)) {
  header_checked_ = on_header_ == nullptr;
}

size_t FrameReceiver::AcceptHeader(std::span<const uint8_t> bytes) {
  size_t used = 0;
  while (!header_checked_ && used < bytes.size()) {
    // Up to the end of the fixed prefix, then up to the end of the header: never past it.
    const uint64_t goal = header_fed_ < kHeaderPrefixBytes ? kHeaderPrefixBytes : header_size_;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(goal - header_fed_, bytes.size() - used));
    const std::span<const uint8_t> piece = bytes.subspan(used, n);
    if (header_fed_ < kHeaderPrefixBytes) {
      std::copy(piece.begin(), piece.end(), prefix_.begin() + header_fed_);
    }
    used += n;
    header_fed_ += n;
    if (absl::Status s = decoder_.Feed(piece); !s.ok()) {
      error_ = s;
      return used;
    }
    if (header_fed_ == kHeaderPrefixBytes) {
      const uint64_t body = uint64_t{prefix_[6]} | uint64_t{prefix_[7]} << 8 |
                            uint64_t{prefix_[8]} << 16 | uint64_t{prefix_[9]} << 24;
      header_size_ = kHeaderPrefixBytes + body + kHeaderHashBytes;
    }
    if (decoder_.info() != nullptr) {
      header_checked_ = true;
      error_ = on_header_(*decoder_.info());
    } else if (header_fed_ >= kHeaderPrefixBytes && header_fed_ >= header_size_) {
      // The decoder rejects a header it cannot use, so it cannot be complete and pending.
      error_ = absl::InternalError("frame header complete but not accepted");
    }
  }
  return used;
}

absl::Status FrameReceiver::Accept(std::span<const uint8_t> bytes) {
  if (!error_.ok()) return error_;
  const auto start = std::chrono::steady_clock::now();
  bytes_received_ += bytes.size();
  const size_t used = AcceptHeader(bytes);
  absl::Status s = error_;
  if (s.ok() && used < bytes.size()) s = decoder_.Feed(bytes.subspan(used));
  decode_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return s;
}

std::vector<kvcodec::DecodedLayer> FrameReceiver::TakeLayers() {
  std::vector<kvcodec::DecodedLayer> layers = decoder_.TakeLayers();
  layers_taken_ += static_cast<int>(layers.size());
  return layers;
}

}  // namespace kvwire::transport
