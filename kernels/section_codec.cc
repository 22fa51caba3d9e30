#include "kernels/section_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvwire::gpu {
namespace {

int DTypeCodeOf(kvcodec::DType dtype) { return static_cast<int>(dtype); }

// The fast paths move 16-byte vectors (fast_ops.h); row offsets are multiples of head_dim (a
// multiple of 16 there), so only the base pointers can break the alignment.
bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Bytes of the scratch a section needs beyond its streams.
size_t ScratchBytes(const SectionPlan& p) {
  const size_t heads = p.head_rows.size();
  const size_t d = static_cast<size_t>(p.geom.head_dim);
  size_t n = 5 * Workspace::Aligned(heads * sizeof(int64_t)) + Workspace::Aligned(sizeof(uint32_t));
  n += Workspace::Aligned(static_cast<size_t>(p.ref_rows) * d * sizeof(float));
  if (p.encode_path != EncodePath::kTokenRows) {
    n += Workspace::Aligned(static_cast<size_t>(p.qgroups) * p.max_chunks * d * sizeof(MinMax));
    n += Workspace::Aligned(static_cast<size_t>(p.qgroups) * d * 2 * sizeof(float));
    n += Workspace::Aligned(static_cast<size_t>(p.main_rows) * d);
  }
  return n;
}

}  // namespace

absl::StatusOr<Buffer> Upload(Backend& backend, const void* data, size_t bytes) {
  auto buffer = Buffer::Make(backend, bytes);
  if (!buffer.ok()) return buffer.status();
  if (absl::Status s = backend.CopyToBackend(buffer->data(), data, bytes); !s.ok()) return s;
  return buffer;
}

absl::Status CheckParamsFinite(std::span<const ParamPair> params) {
  uint32_t bad = 0;
  for (const ParamPair& p : params) bad |= !HalfIsFinite(p.scale) | !HalfIsFinite(p.offset);
  if (bad) return absl::DataLossError("quantization scale or offset is not a finite half float");
  return absl::OkStatus();
}

absl::Status RansDecodeBatch(Backend& backend, const RansBatch& batch, uint8_t* out,
                             size_t* failed_stream) {
  if (batch.streams.empty()) return absl::OkStatus();
  auto streams = Upload(backend, batch.streams);
  auto tables = Upload(backend, batch.tables);
  auto data = Upload(backend, batch.data);
  auto status = Buffer::Make(backend, batch.streams.size() * sizeof(uint64_t));
  for (const auto* b : {&streams, &tables, &data, &status}) {
    if (!b->ok()) return b->status();
  }
  const RansDecodeArgs a{streams->as<RansStreamDesc>(), static_cast<int64_t>(batch.streams.size()),
                         data->as<uint8_t>(), tables->as<RansTable>(), out,
                         status->as<uint64_t>()};
  KVW_RETURN_IF_ERROR(backend.RansDecode(a));
  std::vector<uint64_t> host(batch.streams.size());
  KVW_RETURN_IF_ERROR(backend.CopyToHost(host.data(), status->data(), host.size() * sizeof(uint64_t)));
  for (size_t i = 0; i < host.size(); ++i) {
    if (absl::Status s = RansStatusToError(host[i], i); !s.ok()) {
      if (failed_stream != nullptr) *failed_stream = i;
      return s;
    }
  }
  return absl::OkStatus();
}

size_t SectionScratchBytes(const SectionPlan& plan) { return ScratchBytes(plan); }

absl::StatusOr<SectionScratch> PlaceScratch(Backend& backend, const SectionPlan& plan, Workspace& workspace) {
  workspace.Clear();
  KVW_RETURN_IF_ERROR(workspace.Reserve(ScratchBytes(plan)));
  SectionScratch s;
  s.geom = plan.geom;
  const std::vector<int64_t>* arrays[5] = {&plan.head_rows, &plan.head_main, &plan.head_ref,
                                           &plan.head_qgroups, &plan.head_chains};
  const int64_t* device[5];
  for (int i = 0; i < 5; ++i) {
    auto p = workspace.Take(arrays[i]->size() * sizeof(int64_t));
    if (!p.ok()) return p.status();
    KVW_RETURN_IF_ERROR(backend.CopyToBackend(*p, arrays[i]->data(), arrays[i]->size() * sizeof(int64_t)));
    device[i] = static_cast<const int64_t*>(*p);
  }
  s.geom.head_rows = device[0];
  s.geom.head_main = device[1];
  s.geom.head_ref = device[2];
  s.geom.head_qgroups = device[3];
  s.geom.head_chains = device[4];
  const size_t d = static_cast<size_t>(plan.geom.head_dim);
  auto error = workspace.Take(sizeof(uint32_t));
  auto ref_recon = workspace.Take(static_cast<size_t>(plan.ref_rows) * d * sizeof(float));
  if (!error.ok()) return error.status();
  if (!ref_recon.ok()) return ref_recon.status();
  s.error = static_cast<uint32_t*>(*error);
  s.ref_recon = static_cast<float*>(*ref_recon);
  if (plan.encode_path != EncodePath::kTokenRows) {
    auto partial = workspace.Take(static_cast<size_t>(plan.qgroups) * plan.max_chunks * d * sizeof(MinMax));
    auto quant = workspace.Take(static_cast<size_t>(plan.qgroups) * d * 2 * sizeof(float));
    auto unpacked = workspace.Take(static_cast<size_t>(plan.main_rows) * d);
    if (!partial.ok()) return partial.status();
    if (!quant.ok()) return quant.status();
    if (!unpacked.ok()) return unpacked.status();
    s.partial = static_cast<MinMax*>(*partial);
    s.quant = static_cast<float*>(*quant);
    s.unpacked = static_cast<uint8_t*>(*unpacked);
  }
  KVW_RETURN_IF_ERROR(backend.Zero(s.error, sizeof(uint32_t)));
  return s;
}

absl::Status LaunchEncode(Backend& backend, const SectionPlan& plan, const SectionScratch& scratch,
                          const void* src, kvcodec::DType dtype, const int64_t* src_rows,
                          const SectionStreams& out) {
  const size_t d = static_cast<size_t>(plan.geom.head_dim);
  TokenRowsArgs t{};
  t.g = scratch.geom;
  t.src = src;
  t.src_dtype = DTypeCodeOf(dtype);
  t.src_row = src_rows;
  t.chain_rows = plan.token_chain_rows;
  t.num_items = plan.token_items;
  t.main_codes = out.main_codes;
  t.main_params = out.main_params;
  t.ref_codes = out.ref_codes;
  t.ref_params = out.ref_params;
  t.ref_recon = scratch.ref_recon;
  t.error = scratch.error;
  if (plan.fast_quantize && Aligned16(src) && Aligned16(out.main_codes)) return backend.TokenRowsFast(t);
  if (plan.encode_path == EncodePath::kTokenRows) {
    // Rows may share a word of the packed stream: they OR their bits into a zeroed stream.
    KVW_RETURN_IF_ERROR(backend.Zero(out.main_codes, plan.main_code_alloc));
    return backend.TokenRows(t, plan.row_scratch_bytes, plan.warps_per_block);
  }
  if (plan.ref_rows > 0) {
    t.refs_only = 1;
    KVW_RETURN_IF_ERROR(backend.TokenRows(t, plan.row_scratch_bytes, plan.warps_per_block));
  }
  ChannelArgs c{};
  c.g = scratch.geom;
  c.src = src;
  c.src_dtype = DTypeCodeOf(dtype);
  c.src_row = src_rows;
  c.ref_recon = scratch.ref_recon;
  c.num_qgroups = plan.qgroups;
  c.chunk_rows = plan.chunk_rows;
  c.max_chunks = plan.max_chunks;
  c.partial = scratch.partial;
  c.main_params = out.main_params;
  c.quant = scratch.quant;
  c.main_codes = out.main_codes;
  c.unpacked = scratch.unpacked;
  c.num_words = plan.main_words;
  c.error = scratch.error;
  if (plan.encode_path == EncodePath::kChannelParallel) {
    KVW_RETURN_IF_ERROR(backend.ChannelReduce(c));
    KVW_RETURN_IF_ERROR(backend.ChannelFinish(c));
    return backend.ChannelCodes(c);
  }
  KVW_RETURN_IF_ERROR(backend.ChannelChains(c));
  const PackArgs pack{c.unpacked, static_cast<uint64_t>(plan.main_rows) * d, plan.geom.bits, out.main_codes,
                      plan.main_words};
  return backend.Pack(pack);
}

absl::Status ReadEncodeErrors(Backend& backend, const SectionScratch& scratch) {
  uint32_t flags = 0;
  KVW_RETURN_IF_ERROR(backend.CopyToHost(&flags, scratch.error, sizeof(flags)));
  if (flags & kErrValueRange) {
    return absl::InvalidArgumentError(
        "values must be finite with |x| <= 65504 (the half-float range) to be quantized");
  }
  if (flags & kErrResidualRange) {
    return absl::InvalidArgumentError(
        "delta residual or its quantizer offset exceeds the half-float range (|x| > 65504)");
  }
  return absl::OkStatus();
}

absl::Status LaunchDecode(Backend& backend, const SectionPlan& plan, const SectionScratch& scratch,
                          const SectionStreams& in, void* dst, kvcodec::DType dtype,
                          const int64_t* dst_rows) {
  DequantArgs a{};
  a.g = scratch.geom;
  a.main_codes = in.main_codes;
  a.main_layout = in.main_layout;
  a.main_params = in.main_params;
  a.ref_codes = in.ref_codes;
  a.ref_params = in.ref_params;
  a.ref_recon = scratch.ref_recon;
  a.dst = dst;
  a.dst_dtype = DTypeCodeOf(dtype);
  a.dst_row = dst_rows;
  if (plan.delta.mode == kvcodec::DeltaMode::kNone) {
    a.kind = kMainRows;
    a.num_items = plan.main_rows;
    const bool fast = plan.fast_dequantize && Aligned16(dst) && Aligned16(in.main_codes);
    return fast ? backend.DequantRowsFast(a) : backend.DequantRows(a);
  }
  a.kind = kRefRows;
  a.num_items = plan.ref_rows;
  KVW_RETURN_IF_ERROR(backend.DequantRows(a));
  if (plan.decode_chains) {
    a.num_items = plan.chains;
    return backend.DequantChains(a);
  }
  a.kind = kAnchorMainRows;
  a.num_items = plan.main_rows;
  return backend.DequantRows(a);
}

absl::Status SectionCodec::Encode(const SectionPlan& plan, const void* src, kvcodec::DType dtype,
                                  const int64_t* src_rows, const SectionStreams& out) {
  auto scratch = PlaceScratch(backend_, plan, workspace_);
  if (!scratch.ok()) return scratch.status();
  KVW_RETURN_IF_ERROR(LaunchEncode(backend_, plan, *scratch, src, dtype, src_rows, out));
  return ReadEncodeErrors(backend_, *scratch);
}

absl::Status SectionCodec::Decode(const SectionPlan& plan, const SectionStreams& in, void* dst,
                                  kvcodec::DType dtype, const int64_t* dst_rows) {
  auto scratch = PlaceScratch(backend_, plan, workspace_);
  if (!scratch.ok()) return scratch.status();
  return LaunchDecode(backend_, plan, *scratch, in, dst, dtype, dst_rows);
}

}  // namespace kvwire::gpu
