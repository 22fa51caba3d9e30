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

class SectionCodec {
 public:
  explicit SectionCodec(Backend& backend) : backend_(backend), workspace_(backend) {}
  Backend& backend() { return backend_; }

  // Quantizes section rows r = 0..plan.rows-1, row r read from element src_rows[r] of `src` (a
  // backend buffer of `dtype`; src_rows a backend array of plan.rows offsets). Waits for the
  // kernels: InvalidArgument with kvcodec's message if a value or a residual is out of range.
  absl::Status Encode(const SectionPlan& plan, const void* src, kvcodec::DType dtype,
                      const int64_t* src_rows, const SectionStreams& out);

  // Writes the section's rows to `dst` (row r at element dst_rows[r]) in `dtype`. Every param
  // must be a finite half (CheckParamsFinite on the host copy first, as kvcodec checks).
  // Launches only; the caller synchronizes.
  absl::Status Decode(const SectionPlan& plan, const SectionStreams& in, void* dst,
                      kvcodec::DType dtype, const int64_t* dst_rows);

 private:
  absl::StatusOr<SectionGeom> UploadGeom(const SectionPlan& plan);
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
