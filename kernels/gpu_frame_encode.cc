// EncodeFrameOn: kvcodec/frame_encoder.cc's records, with each section's values taken from
// backend memory and quantized there.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/gpu_frame.h"
#include "kernels/plan.h"
#include "kernels/section_codec.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/quant.h"
#include "kvcodec/section.h"

namespace kvwire::gpu {
namespace {

using kvcodec::ByteWriter;

template <typename T>
std::span<const uint8_t> AsBytes(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

// Encodes the sections of one frame; owns the backend scratch they share.
class SectionWriter {
 public:
  SectionWriter(Backend& backend, const kvcodec::CacheShape& shape, const kvcodec::CodecConfig& config)
      : backend_(backend), shape_(shape), config_(config), codec_(backend), streams_(backend) {}

  // Appends the section of `spec` for the rows `kept` of `data` ([heads, tokens, head_dim] in
  // backend memory); `src_rows` holds their element offsets (backend memory).
  absl::Status Write(ByteWriter& w, const kvcodec::QuantSpec& raw_spec,
                     const std::vector<std::vector<int32_t>>& kept, const void* data,
                     const int64_t* src_rows, int64_t rows) {
    const kvcodec::QuantSpec spec = kvcodec::CanonicalSpec(raw_spec);
    if (spec.coding == kvcodec::ValueCoding::kLowRank) return WriteOnHost(w, raw_spec, kept, data);
    const kvcodec::DeltaConfig delta = kvcodec::SectionDelta(spec, config_.delta);
    kvcodec::WriteSectionDescriptor(w, spec, delta);
    if (spec.is_integer()) return WriteQuantized(w, spec, kept, data, src_rows);
    // raw / fp16 / bf16: the kept rows, gathered (and converted) on the backend.
    const int d = shape_.head_dim;
    const bool raw = spec.coding == kvcodec::ValueCoding::kRaw;
    const kvcodec::DType as = kvcodec::ValueDType(spec.coding, shape_.dtype);
    const size_t esize = kvcodec::DTypeSize(as);
    const size_t bytes = static_cast<size_t>(rows) * d * esize;
    streams_.Clear();
    KVW_RETURN_IF_ERROR(streams_.Reserve(Workspace::Aligned(bytes)));
    auto out = streams_.Take(bytes);
    if (!out.ok()) return out.status();
    const CopyRowsArgs a{rows, d, data, static_cast<int32_t>(shape_.dtype), src_rows,
                         *out, static_cast<int32_t>(as), nullptr, raw ? 1 : 0};
    KVW_RETURN_IF_ERROR(backend_.CopyRows(a));
    std::vector<uint8_t> host(bytes);
    KVW_RETURN_IF_ERROR(backend_.CopyToHost(host.data(), *out, bytes));
    kvcodec::WriteByteStream(w, host, static_cast<int>(d * esize), config_.entropy, config_.zstd_level,
                             static_cast<int>(esize));
    return absl::OkStatus();
  }

 private:
  absl::Status WriteQuantized(ByteWriter& w, const kvcodec::QuantSpec& spec,
                              const std::vector<std::vector<int32_t>>& kept, const void* data,
                              const int64_t* src_rows) {
    const int d = shape_.head_dim;
    auto plan = PlanSection(spec, config_.delta, d, RowsPerHead(kept));
    if (!plan.ok()) return plan.status();
    const size_t sizes[4] = {plan->main_code_alloc, plan->main_param_pairs * sizeof(ParamPair),
                             plan->ref_code_bytes, plan->ref_param_pairs * sizeof(ParamPair)};
    streams_.Clear();
    size_t total = 0;
    for (size_t s : sizes) total += Workspace::Aligned(s);
    KVW_RETURN_IF_ERROR(streams_.Reserve(total));
    void* p[4];
    for (int i = 0; i < 4; ++i) {
      auto piece = streams_.Take(sizes[i]);
      if (!piece.ok()) return piece.status();
      p[i] = *piece;
    }
    SectionStreams out;
    out.main_codes = static_cast<uint8_t*>(p[0]);
    out.main_params = static_cast<ParamPair*>(p[1]);
    out.ref_codes = static_cast<uint8_t*>(p[2]);
    out.ref_params = static_cast<ParamPair*>(p[3]);
    KVW_RETURN_IF_ERROR(codec_.Encode(*plan, data, shape_.dtype, src_rows, out));

    std::vector<uint8_t> packed(plan->main_code_bytes), ref_codes(plan->ref_code_bytes);
    std::vector<uint16_t> params(2 * plan->main_param_pairs), ref_params(2 * plan->ref_param_pairs);
    KVW_RETURN_IF_ERROR(backend_.CopyToHost(packed.data(), out.main_codes, packed.size()));
    KVW_RETURN_IF_ERROR(backend_.CopyToHost(params.data(), out.main_params, 2 * params.size()));
    KVW_RETURN_IF_ERROR(backend_.CopyToHost(ref_codes.data(), out.ref_codes, ref_codes.size()));
    KVW_RETURN_IF_ERROR(backend_.CopyToHost(ref_params.data(), out.ref_params, 2 * ref_params.size()));

    const int bits = spec.bits();
    const kvcodec::EntropyCoder coder = config_.entropy;
    const int level = config_.zstd_level;
    if (coder == kvcodec::EntropyCoder::kNone) {
      kvcodec::WriteStoredStream(w, packed);  // what WriteCodeStream stores: the packed codes
    } else {
      // The entropy coders see codes (rANS: symbols of k codes); kvcodec's writer makes them.
      std::vector<uint8_t> codes(static_cast<size_t>(plan->main_rows) * d);
      KVW_RETURN_IF_ERROR(kvcodec::UnpackBits(packed, bits, codes.size(), codes));
      kvcodec::WriteCodeStream(w, codes, d, bits, coder, level);
    }
    kvcodec::WriteByteStream(w, AsBytes(params), 4, coder, level);
    if (plan->delta.mode != kvcodec::DeltaMode::kNone) {
      kvcodec::WriteCodeStream(w, ref_codes, d, 8, coder, level);
      kvcodec::WriteByteStream(w, AsBytes(ref_params), 4, coder, level);
    }
    return absl::OkStatus();
  }

  // Low rank (an SVD per head) stays on the host: kvcodec codes the section from a copy.
  absl::Status WriteOnHost(ByteWriter& w, const kvcodec::QuantSpec& raw_spec,
                           const std::vector<std::vector<int32_t>>& kept, const void* data) {
    std::vector<uint8_t> host(static_cast<size_t>(shape_.num_kv_heads) * shape_.num_tokens *
                              shape_.head_dim * kvcodec::DTypeSize(shape_.dtype));
    KVW_RETURN_IF_ERROR(backend_.CopyToHost(host.data(), data, host.size()));
    kvcodec::SectionBytes bytes;
    return kvcodec::EncodeSection(w, shape_, raw_spec, config_, kept, host.data(), scratch_, &bytes);
  }

  Backend& backend_;
  const kvcodec::CacheShape& shape_;
  const kvcodec::CodecConfig& config_;
  SectionCodec codec_;
  Workspace streams_;
  std::vector<float> scratch_;
};

}  // namespace

absl::StatusOr<std::vector<uint8_t>> EncodeFrameOn(Backend& backend, const kvcodec::CacheShape& shape,
                                                   const kvcodec::CodecConfig& config,
                                                   std::string_view model_fingerprint,
                                                   std::span<const int32_t> positions,
                                                   std::span<const DeviceLayerView> layers,
                                                   const kvcodec::Selection& selection) {
  if (static_cast<int>(layers.size()) != shape.num_layers ||
      static_cast<int>(selection.kept.size()) != shape.num_layers) {
    return absl::InvalidArgumentError("EncodeFrame needs one view and one selection per layer");
  }
  // kvcodec validates the shape and the configuration and writes the header.
  auto encoder = kvcodec::FrameEncoder::Create(shape, config, model_fingerprint, positions);
  if (!encoder.ok()) return encoder.status();
  std::vector<uint8_t> frame = (*encoder)->Header();
  const uint64_t header_hash = kvcodec::LoadU64(frame.data() + frame.size() - 8);
  auto plan = kvcodec::BitPlan::Parse(config.bit_plan);
  if (!plan.ok()) return plan.status();

  SectionWriter writer(backend, shape, config);
  std::vector<uint64_t> chunk_hashes;
  ByteWriter fw(&frame);
  for (int c = 0; c < (*encoder)->num_chunks(); ++c) {
    const auto [first, count] = (*encoder)->chunk_layers(c);
    std::vector<uint8_t> chunk;
    ByteWriter w(&chunk);
    kvcodec::StartChunk(w, c);
    for (int layer = first; layer < first + count; ++layer) {
      const auto& heads = selection.kept[layer];
      KVW_RETURN_IF_ERROR(kvcodec::CheckKept(heads, shape, layer));
      if (shape.num_tokens > 0 && (layers[layer].keys == nullptr || layers[layer].values == nullptr)) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": null K or V buffer"));
      }
      kvcodec::WriteSelection(w, heads, shape.num_tokens);
      auto offsets = CacheRowOffsets(heads, shape.num_tokens, shape.head_dim);
      if (!offsets.ok()) return offsets.status();
      auto rows = Upload(backend, *offsets);
      if (!rows.ok()) return rows.status();
      for (bool is_value : {false, true}) {
        KVW_RETURN_IF_ERROR(writer.Write(w, plan->Resolve(layer, is_value), heads,
                                         is_value ? layers[layer].values : layers[layer].keys,
                                         rows->as<int64_t>(), static_cast<int64_t>(offsets->size())));
      }
    }
    chunk_hashes.push_back(kvcodec::FinishChunk(&chunk, header_hash));
    fw.Bytes(chunk);
  }
  const std::vector<uint8_t> trailer = kvcodec::MakeTrailer(chunk_hashes, frame.size(), header_hash);
  fw.Bytes(trailer);
  return frame;
}

}  // namespace kvwire::gpu
