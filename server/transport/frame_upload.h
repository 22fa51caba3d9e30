// Client side of a DecodeNode.Generate upload whose frame is still being produced: the prefill
// node pushes the frame header, each encoded chunk as soon as its layers are computed, and the
// trailer, while a sender thread writes them to the call in slices. Prefill, encoding, transfer
// and the decode node's rebuild therefore overlap.
//
// An optional link emulation paces the sender at a fixed bit rate (a sender-side rate limiter:
// each slice is written when its last bit would have crossed an idle link of that rate), for
// benchmarks of slow links (`kvwire serve prefill --link-mbps`, `kvwire bench e2e`).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "proto/kvwire.grpc.pb.h"
#include "proto/kvwire.pb.h"

namespace kvwire::transport {

// Paces writes as an idle link of `bits_per_second` would deliver them (0: no pacing).
class LinkPacer {
 public:
  explicit LinkPacer(double bits_per_second = 0) : bits_per_second_(bits_per_second) {}
  // Blocks until `bytes` more bytes would have arrived: the link is busy from
  // max(now, end of the previous transmission) for bytes * 8 / rate seconds.
  void Pace(size_t bytes);
  // Seconds `bytes` take on this link (0 without pacing).
  double SecondsFor(uint64_t bytes) const;

 private:
  double bits_per_second_;
  std::chrono::steady_clock::time_point busy_until_{};
};

struct FrameUploadOptions {
  // Slice size, 1..kMaxSliceBytes.
  size_t slice_bytes = size_t{1} << 20;
  std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max();
  // Link emulation (bits per second); 0 sends as fast as the connection allows.
  double link_bits_per_second = 0;
  // gRPC metadata (lower-case keys) sent with the call.
  std::vector<std::pair<std::string, std::string>> metadata;
};

class FrameUpload {
 public:
  // Opens the call and starts sending `header`. InvalidArgument for a bad slice size.
  static absl::StatusOr<std::unique_ptr<FrameUpload>> Start(kvwire::v1::DecodeNode::StubInterface& stub,
                                                            const kvwire::v1::UploadHeader& header,
                                                            FrameUploadOptions options);
  // Cancels the call if neither Finish() nor Cancel() ran.
  ~FrameUpload();
  FrameUpload(const FrameUpload&) = delete;
  FrameUpload& operator=(const FrameUpload&) = delete;

  // Queues the frame's next bytes; they are sent in order. False once the call has ended early
  // (the decode node rejected the upload, the connection broke): stop producing and call
  // Finish() for the status.
  bool Push(std::vector<uint8_t> bytes);
  // After the last Push: waits until everything queued is written, half-closes and waits for
  // the reply. Returns the call's status (gRPC codes carried over); fills `reply` if OK.
  absl::Status Finish(kvwire::v1::GenerateReply* reply);
  // Abandons the call: the decode node sees it cancelled and frees what it received.
  void Cancel();

  // Frame bytes written so far.
  uint64_t bytes_sent() const;
  // Seconds the sender spent writing (pacing and flow control included): the transfer's share
  // of the pipeline. Final after Finish().
  double send_seconds() const;
  // When the last byte was handed to gRPC (valid after Finish()).
  std::chrono::steady_clock::time_point last_write() const;

 private:
  FrameUpload() = default;
  void SendLoop();

  FrameUploadOptions options_;
  grpc::ClientContext context_;
  kvwire::v1::GenerateReply reply_;
  std::unique_ptr<grpc::ClientWriterInterface<kvwire::v1::CacheUpload>> writer_;
  LinkPacer pacer_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> queue_;
  bool closed_ = false;   // no more Push (Finish or Cancel)
  bool broken_ = false;   // a Write failed: the call is over
  bool finished_ = false;
  uint64_t bytes_sent_ = 0;
  double send_seconds_ = 0;
  std::chrono::steady_clock::time_point last_write_{};
  std::thread sender_;
};

}  // namespace kvwire::transport
