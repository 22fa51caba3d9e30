// Quantizing and dequantizing one section with the kernels, on any Backend: the launch
// sequence for each kvcodec configuration (plan.h picks it), scratch memory and error mapping.
// The streams are bit for bit kvcodec::Quantize's (codes packed as PackBits packs them).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/plan.h"
#include "kernels/rans_plan.h"
#include "kvcodec/kvcodec.h"

namespace kvwire::gpu {

// Backend memory holding one section's streams. Encode writes main codes packed (and needs
// plan.main_code_alloc bytes there); Decode reads them in either layout.
struct SectionStreams {
  uint8_t* main_codes = nullptr;
  CodeLayout main_layout = CodeLayout::kPacked;
  ParamPair* main_params = nullptr;  // plan.main_param_pairs
  uint8_t* ref_codes = nullptr;      // plan.ref_code_bytes
  ParamPair* ref_params = nullptr;   // plan.ref_param_pairs
};

// A section's geometry and scratch in backend memory, placed once so that its kernels can be
// launched many times (a pipeline over layers with the same selection, a benchmark).
struct SectionScratch {
  SectionGeom geom;             // head_* pointers into backend memory
  uint32_t* error = nullptr;    // kErr* bits raised by the encode kernels
  float* ref_recon = nullptr;   // [ref rows, head_dim]
  MinMax* partial = nullptr;    // per-channel reduction
  float* quant = nullptr;
  uint8_t* unpacked = nullptr;  // per-channel chains
};
// Backend bytes PlaceScratch takes from a Workspace.
size_t SectionScratchBytes(const SectionPlan& plan);
// Uploads plan's geometry into `workspace` (cleared first) and zeroes the error bits.
absl::StatusOr<SectionScratch> PlaceScratch(Backend& backend, const SectionPlan& plan, Workspace& workspace);

// Launches the kernels that quantize section rows r = 0..plan.rows-1, row r read from element
// src_rows[r] of `src` (backend memory of `dtype`), into `out`. Row offsets must be multiples
// of head_dim (CacheRowOffsets / PaddedRowOffsets make them so). Does not wait; errors collect
// in scratch.error (ReadEncodeErrors).
absl::Status LaunchEncode(Backend& backend, const SectionPlan& plan, const SectionScratch& scratch,
                          const void* src, kvcodec::DType dtype, const int64_t* src_rows,
                          const SectionStreams& out);
// Waits, then InvalidArgument with kvcodec's message if a value or a residual was out of range.
absl::Status ReadEncodeErrors(Backend& backend, const SectionScratch& scratch);

// Launches the kernels that write the rows to `dst` (row r at element dst_rows[r], a multiple
// of head_dim) in `dtype`.
// Every param must be a finite half (CheckParamsFinite on the host copy first, as kvcodec
// checks). Does not wait.
absl::Status LaunchDecode(Backend& backend, const SectionPlan& plan, const SectionScratch& scratch,
                          const SectionStreams& in, void* dst, kvcodec::DType dtype,
                          const int64_t* dst_rows);

// The above for one section at a time, with scratch memory reused between calls.
class SectionCodec {
 public:
  explicit SectionCodec(Backend& backend) : backend_(backend), workspace_(backend) {}
  // Quantizes and waits (errors as ReadEncodeErrors).
  absl::Status Encode(const SectionPlan& plan, const void* src, kvcodec::DType dtype,
                      const int64_t* src_rows, const SectionStreams& out);
  // Launches the decode (the caller synchronizes).
  absl::Status Decode(const SectionPlan& plan, const SectionStreams& in, void* dst,
                      kvcodec::DType dtype, const int64_t* dst_rows);

 private:
  Backend& backend_;
  Workspace workspace_;
};

// DataLoss, as kvcodec::Dequantize reports it, if a scale or offset is not a finite half.
absl::Status CheckParamsFinite(std::span<const ParamPair> params);

// Decodes every stream of `batch` into `out` (backend memory of batch.out_bytes bytes) and
// waits: the first failing stream's error, as kvcodec words it (its index in *failed_stream).
absl::Status RansDecodeBatch(Backend& backend, const RansBatch& batch, uint8_t* out,
                             size_t* failed_stream = nullptr);

// Copies host data into a new backend buffer.
absl::StatusOr<Buffer> Upload(Backend& backend, const void* data, size_t bytes);
template <typename T>
absl::StatusOr<Buffer> Upload(Backend& backend, const std::vector<T>& v) {
  return Upload(backend, v.data(), v.size() * sizeof(T));
}

}  // namespace kvwire::gpu
