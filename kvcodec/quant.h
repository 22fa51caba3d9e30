// Quantization, delta coding and low rank for one section: one layer's keys or values after
// selection. Internal to kvcodec; the frame layer (frame.cc) decides the byte layout.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcodec/kvcodec.h"

namespace kvcodec {

// A section's values as float32: heads one after another, each [rows_per_head[h], head_dim]
// row-major (rows are the kept tokens in order).
struct SectionShape {
  int head_dim = 0;
  std::vector<int> rows_per_head;
  size_t num_rows() const;
  size_t num_elements() const { return num_rows() * static_cast<size_t>(head_dim); }
};

// Integer quantization result. Asymmetric: x ~= offset + code * scale, code in [0, 2^bits).
// Without delta coding every row is a "main" row. With delta coding the reference rows (the
// first row of each head for kSequential; the first row of each group for kGroupedSequential
// and kAnchor) are "ref" rows coded at 8 bits per token with one (scale, offset) pair per row;
// the other rows hold residuals coded by the section's QuantSpec.
struct QuantizedSection {
  // One code per element of the main rows, in row order (head by head), values < 2^bits.
  std::vector<uint8_t> main_codes;
  // (scale, offset) pairs as IEEE half bit patterns. Per-token: per main row, head_dim/group
  // pairs in channel order. Per-channel: per head, per token group (of main rows), head_dim
  // pairs in channel order.
  std::vector<uint16_t> main_params;
  std::vector<uint8_t> ref_codes;     // head_dim codes per ref row, in row order
  std::vector<uint16_t> ref_params;   // one (scale, offset) pair per ref row
};

// Rows of head h that are references under `delta` (ascending, head-local indices).
bool IsReferenceRow(const DeltaConfig& delta, int row_in_head);

// Validates spec against shape (group size divides, bits supported, ...).
absl::Status CheckQuantSpec(const QuantSpec& spec, const SectionShape& shape);
// Validates a delta configuration: known mode, group_size >= 2 for the grouped modes.
absl::Status CheckDeltaConfig(const DeltaConfig& delta);

// Expected sizes, so the decoder can check a frame before allocating.
size_t NumMainRows(const DeltaConfig& delta, const SectionShape& shape);
// Reference rows: num_rows() - NumMainRows(); 0 when delta.mode is kNone.
size_t NumRefRows(const DeltaConfig& delta, const SectionShape& shape);
// Number of uint16 entries of main_params (two per (scale, offset) pair), i.e.
// main_params.size(). ref_params.size() is 2 * NumRefRows().
size_t NumMainParams(const QuantSpec& spec, const DeltaConfig& delta, const SectionShape& shape);

// values.size() == shape.num_elements(). spec must be an integer coding.
absl::StatusOr<QuantizedSection> Quantize(const QuantSpec& spec, const DeltaConfig& delta,
                                          const SectionShape& shape, std::span<const float> values);
// Inverse of Quantize. Sizes of q are checked against shape; out gets num_elements() floats.
absl::Status Dequantize(const QuantSpec& spec, const DeltaConfig& delta, const SectionShape& shape,
                        const QuantizedSection& q, std::span<float> out);

// Low rank: per head, X [rows, d] ~= A [rows, k] * B^T where B [d, k] holds the top-k right
// singular vectors. Factors are IEEE half bit patterns, per head A then B. k = min(rank, rows, d).
struct LowRankSection {
  std::vector<uint16_t> factors;
};
int EffectiveRank(int rank, int rows, int head_dim);
size_t NumLowRankFactors(int rank, const SectionShape& shape);
absl::StatusOr<LowRankSection> LowRankEncode(int rank, const SectionShape& shape,
                                             std::span<const float> values);
absl::Status LowRankDecode(int rank, const SectionShape& shape, const LowRankSection& lr,
                           std::span<float> out);

// Packs n codes of `bits` (1..8) each, LSB first, into ceil(n*bits/8) bytes.
std::vector<uint8_t> PackBits(std::span<const uint8_t> codes, int bits);
// Unpacks n codes; fails if packed is not exactly ceil(n*bits/8) bytes.
absl::Status UnpackBits(std::span<const uint8_t> packed, int bits, size_t n, std::span<uint8_t> out);

}  // namespace kvcodec

namespace kvcodec {

// Fused Dequantize + conversion to bfloat16 for the common case (per-token axis, no delta):
// `rows` rows of head_dim codes with head_dim / group (scale, offset) pairs each. Produces
// exactly what Dequantize followed by FromFloat(kBFloat16) produces, in one pass. Codes must be
// < 2^bits and params finite (the caller checks, as Dequantize does).
void DequantizeTokenRowsToBF16(const uint8_t* codes, const uint16_t* params, size_t rows,
                               int head_dim, int group, uint16_t* out);

// The same from codes still packed as PackBits packs them (8 / bits codes per byte, LSB
// first), which for bits 2, 4 and 8 is also the rANS symbol layout (FORMAT.md, Stream), so a
// decoded stream is dequantized without unpacking it first. bits is 2, 4 or 8 and head_dim *
// bits a multiple of 8 (whole bytes per row). Output is bit for bit DequantizeTokenRowsToBF16's.
void DequantizePackedTokenRowsToBF16(const uint8_t* packed, int bits, const uint16_t* params,
                                     size_t rows, int head_dim, int group, uint16_t* out);
// Whether DequantizePackedTokenRowsToBF16 takes rows of this shape.
bool PackedRowsSupported(int bits, int head_dim);

// Quantize (per token, no delta) of one bf16 row of head_dim values (any alignment) in groups of `group`,
// straight to packed codes (head_dim * bits / 8 bytes, the layout above) and head_dim / group
// (scale, offset) pairs, with no float copy of the section: the codes and parameters are
// exactly Quantize's. Requires PackedRowsSupported(bits, head_dim) and head_dim <=
// kMaxPackedRow. Fails as Quantize does on a value outside the half range.
inline constexpr int kMaxPackedRow = 1024;
absl::Status QuantizeBF16RowToPacked(const void* row, int head_dim, int group, int bits,
                                     uint8_t* packed, uint16_t* params);
// The same for many rows (their packed codes and parameters one after another); faster than
// row by row, as the per-group parameter arithmetic of a batch of rows overlaps.
absl::Status QuantizeBF16RowsToPacked(std::span<const void* const> rows, int head_dim, int group,
                                      int bits, uint8_t* packed, uint16_t* params);

}  // namespace kvcodec
