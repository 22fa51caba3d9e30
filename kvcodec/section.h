// One layer's keys or values inside a chunk (docs/FORMAT.md, Section). Internal to kvcodec.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/wire.h"

namespace kvcodec {

struct SectionBytes {
  uint64_t params = 0;   // descriptors, scales and offsets
  uint64_t payload = 0;  // values, codes, factors
  uint64_t framing = 0;  // stream headers
};

// The delta configuration a section of `spec` actually uses: delta applies to integer codings
// only, and unused fields are zeroed so encoder and decoder compare canonical values.
DeltaConfig SectionDelta(const QuantSpec& spec, const DeltaConfig& delta);

// The spec as a section's descriptor states it: fields its coding does not use are zero.
QuantSpec CanonicalSpec(QuantSpec spec);

// A section's descriptor (FORMAT.md, Section) for a canonical spec and its SectionDelta; the
// reader's check fails with DATA_LOSS unless the stored descriptor is exactly that.
void WriteSectionDescriptor(ByteWriter& w, const QuantSpec& spec, const DeltaConfig& delta);
absl::Status CheckSectionDescriptor(ByteReader& r, const QuantSpec& spec, const DeltaConfig& delta);

// Checks that `spec` with `delta` can code sections of `shape` (e.g. group divides head_dim).
absl::Status CheckSectionSpec(const QuantSpec& spec, const DeltaConfig& delta,
                              const CacheShape& shape);

// Appends the section for the tokens `kept[h]` of each head of `data`
// ([heads, tokens, head_dim] in shape.dtype).
absl::Status EncodeSection(ByteWriter& w, const CacheShape& shape, const QuantSpec& spec,
                           const CodecConfig& config,
                           const std::vector<std::vector<int32_t>>& kept, const void* data,
                           std::vector<float>& scratch, SectionBytes* bytes);

// Reads a section and writes each head's values (kept[h].size() * head_dim elements of
// shape.dtype) to out[h]. The section's descriptor must equal `spec` and config.delta.
absl::Status DecodeSection(ByteReader& r, const CacheShape& shape, const QuantSpec& spec,
                           const CodecConfig& config,
                           const std::vector<std::vector<int32_t>>& kept,
                           std::vector<ByteBuffer>* out);

}  // namespace kvcodec
