// `kvwire bench transfer`: loopback throughput of one kvcodec frame over the gRPC transport
// (SendFrame into an in-process DecodeNodeService that verifies and rebuilds every chunk, and into
// a minimal service that only counts the bytes) beside a plain TCP socket copy of the same bytes
// in the same chunk sizes, all in one run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvwire {

struct TransferBenchOptions {
  std::string preset = "int4-rans";  // preset name or CodecConfig text
  int tokens = 4096;
  int layers = 28;
  int kv_heads = 4;
  int head_dim = 128;
  // > 0: ignore preset/tokens and send an uncompressed ("full" preset) frame of about this many
  // bytes (the token count is derived from it).
  uint64_t bytes = 0;
  int reps = 3;
  uint64_t seed = 1;
  bool json = false;
  std::vector<size_t> chunk_sizes = {64 << 10, 256 << 10, 1 << 20};
};

// Best-of-reps figures for one chunk size. GB/s are frame bytes / seconds (1 GB = 1e9 bytes).
struct TransferRow {
  size_t chunk_bytes = 0;
  double grpc_verify_s = 0;  // SendFrame -> DecodeNodeService (verifies, rebuilds; no consumer)
  double grpc_drain_s = 0;   // SendFrame -> a service that only counts CacheChunk bytes
  double tcp_s = 0;          // send() in chunk_bytes pieces -> recv() into a frame-sized buffer
  double grpc_verify_gbps() const;
  double grpc_drain_gbps() const;
  double tcp_gbps() const;
  uint64_t frame_bytes = 0;
};

struct TransferReport {
  std::string config;  // what was encoded (preset or "full")
  int tokens = 0, layers = 0, kv_heads = 0, head_dim = 0;
  uint64_t raw_bytes = 0;    // the cache at 16 bits per element
  uint64_t frame_bytes = 0;  // bytes sent per transfer
  int reps = 0;
  std::vector<TransferRow> rows;
};

// Runs the measurements. Fails if a transfer fails or a receiver saw a byte count other than the
// frame's.
absl::StatusOr<TransferReport> MeasureTransfer(const TransferBenchOptions& options);

// Prints MeasureTransfer's report as a table (or JSON with options.json). Returns the exit code.
int RunTransferBench(const TransferBenchOptions& options);

}  // namespace kvwire
