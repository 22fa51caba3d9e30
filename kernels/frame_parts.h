// Small pieces of the frame format (docs/FORMAT.md) that kvcodec keeps private to its own
// encoder and decoder, restated for gpu_frame_*.cc. Internal to kernels/.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/wire.h"

namespace kvwire::gpu::frame {

// Canonical form of a spec as a section descriptor writes it (unused fields zero).
inline kvcodec::QuantSpec CanonicalSpec(kvcodec::QuantSpec spec) {
  if (!spec.is_integer()) {
    spec.axis = kvcodec::QuantAxis::kPerToken;
    spec.group_size = 0;
  }
  if (spec.coding != kvcodec::ValueCoding::kLowRank) spec.rank = 0;
  return spec;
}

inline void WriteDescriptor(kvcodec::ByteWriter& w, const kvcodec::QuantSpec& spec,
                            const kvcodec::DeltaConfig& d) {
  w.U8(static_cast<uint8_t>(spec.coding));
  w.U8(static_cast<uint8_t>(spec.axis));
  w.Varint(static_cast<uint32_t>(spec.group_size));
  w.Varint(static_cast<uint32_t>(spec.rank));
  w.U8(static_cast<uint8_t>(d.mode));
  w.Varint(static_cast<uint32_t>(d.group_size));
  w.U8(d.closed_loop ? 1 : 0);
}

inline absl::Status CheckDescriptor(kvcodec::ByteReader& r, const kvcodec::QuantSpec& spec,
                                    const kvcodec::DeltaConfig& delta) {
  uint8_t coding = 0, axis = 0, mode = 0, closed = 0;
  uint32_t group = 0, rank = 0, delta_group = 0;
  KVC_RETURN_IF_ERROR(r.U8(&coding, "section descriptor"));
  KVC_RETURN_IF_ERROR(r.U8(&axis, "section descriptor"));
  KVC_RETURN_IF_ERROR(r.Varint(&group, "section descriptor"));
  KVC_RETURN_IF_ERROR(r.Varint(&rank, "section descriptor"));
  KVC_RETURN_IF_ERROR(r.U8(&mode, "section descriptor"));
  KVC_RETURN_IF_ERROR(r.Varint(&delta_group, "section descriptor"));
  KVC_RETURN_IF_ERROR(r.U8(&closed, "section descriptor"));
  if (coding != static_cast<uint8_t>(spec.coding) || axis != static_cast<uint8_t>(spec.axis) ||
      group != static_cast<uint32_t>(spec.group_size) || rank != static_cast<uint32_t>(spec.rank) ||
      mode != static_cast<uint8_t>(delta.mode) ||
      delta_group != static_cast<uint32_t>(delta.group_size) ||
      closed != (delta.closed_loop ? 1 : 0)) {
    return absl::DataLossError("inconsistent section: its coding disagrees with the header's plan");
  }
  return absl::OkStatus();
}

// Selection list: count, then gaps.
inline void WriteList(kvcodec::ByteWriter& w, const std::vector<int32_t>& list) {
  w.Varint(static_cast<uint32_t>(list.size()));
  int64_t prev = -1;
  for (int32_t t : list) {
    w.Varint(static_cast<uint32_t>(t - prev - 1));
    prev = t;
  }
}

inline absl::Status ReadList(kvcodec::ByteReader& r, int num_tokens, std::vector<int32_t>* list) {
  uint32_t count = 0;
  KVC_RETURN_IF_ERROR(r.Varint(&count, "selection"));
  if (count > static_cast<uint32_t>(num_tokens)) {
    return absl::DataLossError(absl::StrCat("selection keeps ", count, " of ", num_tokens, " tokens"));
  }
  list->resize(count);
  int64_t prev = -1;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t gap = 0;
    KVC_RETURN_IF_ERROR(r.Varint(&gap, "selection"));
    const int64_t t = prev + 1 + gap;
    if (t >= num_tokens) return absl::DataLossError("selection index beyond the token count");
    (*list)[i] = static_cast<int32_t>(t);
    prev = t;
  }
  return absl::OkStatus();
}

inline uint32_t LoadU32(const uint8_t* p) {
  return p[0] | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
inline uint64_t LoadU64(const uint8_t* p) { return LoadU32(p) | (uint64_t{LoadU32(p + 4)} << 32); }

inline bool MagicIs(std::span<const uint8_t> in, const uint8_t (&magic)[4]) {
  return in.size() >= 4 && in[0] == magic[0] && in[1] == magic[1] && in[2] == magic[2] &&
         in[3] == magic[3];
}

}  // namespace kvwire::gpu::frame
