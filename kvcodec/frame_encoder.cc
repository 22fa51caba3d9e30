// Frame encoder: docs/FORMAT.md is the contract this file implements.
#include <xxhash.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kvcodec/dtype.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/quant.h"
#include "kvcodec/section.h"
#include "kvcodec/wire.h"

namespace kvcodec {

struct FrameEncoder::Impl {
  CacheShape shape;
  CodecConfig config;
  BitPlan plan;
  std::string fingerprint;
  std::vector<int32_t> positions;
  uint64_t header_hash = 0;
  std::vector<uint64_t> chunk_hashes;
  int next_chunk = 0;
  bool header_written = false;
  uint64_t bytes_written = 0;
  ByteAccounting acct;
  std::vector<float> scratch;  // reused across sections to avoid reallocations
};

namespace {

absl::Status CheckShape(const CacheShape& s) {
  if (s.num_layers < 1 || s.num_kv_heads < 1 || s.head_dim < 1 || s.num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid cache shape: layers=", s.num_layers, " kv_heads=", s.num_kv_heads,
        " head_dim=", s.head_dim, " tokens=", s.num_tokens));
  }
  if (s.dtype != DType::kFloat32 && s.dtype != DType::kFloat16 && s.dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError("invalid cache dtype");
  }
  return absl::OkStatus();
}

}  // namespace

FrameEncoder::FrameEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FrameEncoder::~FrameEncoder() = default;

absl::StatusOr<std::unique_ptr<FrameEncoder>> FrameEncoder::Create(
    const CacheShape& shape, const CodecConfig& config, std::string_view model_fingerprint,
    std::span<const int32_t> positions) {
  KVC_RETURN_IF_ERROR(CheckShape(shape));
  if (model_fingerprint.size() > kMaxFingerprintBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model fingerprint is ", model_fingerprint.size(), " bytes; at most 64"));
  }
  if (static_cast<int64_t>(positions.size()) != shape.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("got ", positions.size(), " positions for ",
                                                   shape.num_tokens, " tokens"));
  }
  auto impl = std::make_unique<Impl>();
  auto plan = BitPlan::Parse(config.bit_plan);
  if (!plan.ok()) return plan.status();
  impl->plan = *std::move(plan);
  impl->config = config;
  impl->config.bit_plan = impl->plan.text();
  if (config.layers_per_chunk < 1) return absl::InvalidArgumentError("layers_per_chunk must be >= 1");
  for (int l = 0; l < shape.num_layers; ++l) {
    for (bool is_value : {false, true}) {
      KVC_RETURN_IF_ERROR(CheckSectionSpec(impl->plan.Resolve(l, is_value), impl->config.delta, shape));
    }
  }
  if (impl->config.ToString().size() > kMaxConfigText) {
    return absl::InvalidArgumentError("codec configuration text too long");
  }
  impl->shape = shape;
  impl->fingerprint = std::string(model_fingerprint);
  impl->positions.assign(positions.begin(), positions.end());
  impl->acct.elements = shape.num_elements();
  impl->acct.raw_bytes = shape.num_elements() * 2;
  return std::unique_ptr<FrameEncoder>(new FrameEncoder(std::move(impl)));
}

int FrameEncoder::num_chunks() const {
  return (impl_->shape.num_layers + impl_->config.layers_per_chunk - 1) /
         impl_->config.layers_per_chunk;
}

std::pair<int, int> FrameEncoder::chunk_layers(int chunk) const {
  const int first = chunk * impl_->config.layers_per_chunk;
  return {first, std::min(impl_->config.layers_per_chunk, impl_->shape.num_layers - first)};
}

std::vector<uint8_t> FrameEncoder::Header() {
  Impl& m = *impl_;
  std::vector<uint8_t> body;
  ByteWriter b(&body);
  b.U8(static_cast<uint8_t>(m.shape.dtype));
  b.Varint(m.shape.num_layers);
  b.Varint(m.shape.num_kv_heads);
  b.Varint(m.shape.head_dim);
  b.Varint(m.shape.num_tokens);
  b.Varint(m.config.layers_per_chunk);
  b.U8(static_cast<uint8_t>(m.fingerprint.size()));
  b.Bytes(m.fingerprint);
  const std::string config_text = m.config.ToString();
  b.Varint(static_cast<uint32_t>(config_text.size()));
  b.Bytes(config_text);
  bool contiguous = true;
  for (size_t i = 1; i < m.positions.size(); ++i) contiguous &= m.positions[i] == m.positions[i - 1] + 1;
  if (contiguous && (m.positions.empty() || m.positions[0] >= 0)) {
    b.U8(0);
    b.Varint(m.positions.empty() ? 0 : static_cast<uint32_t>(m.positions[0]));
  } else {
    b.U8(1);
    int64_t prev = 0;
    for (int32_t p : m.positions) {
      const int64_t d = static_cast<int64_t>(p) - prev;
      b.Varint(static_cast<uint32_t>((d << 1) ^ (d >> 63)));  // zigzag
      prev = p;
    }
  }
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.Bytes(kHeaderMagic);
  w.U8(kFrameVersion);
  w.U8(0);
  w.U32(static_cast<uint32_t>(body.size()));
  w.Bytes(body);
  m.header_hash = XXH3_64bits(out.data(), out.size());
  w.U64(m.header_hash);
  m.header_written = true;
  m.bytes_written += out.size();
  m.acct.header_bytes += out.size();
  m.acct.total_bytes += out.size();
  return out;
}

absl::StatusOr<std::vector<uint8_t>> FrameEncoder::EncodeChunk(
    int chunk, std::span<const LayerView> layers,
    std::span<const std::vector<std::vector<int32_t>>> kept) {
  Impl& m = *impl_;
  if (!m.header_written) return absl::FailedPreconditionError("Header() must come first");
  if (chunk != m.next_chunk) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunks must be encoded in order: expected ", m.next_chunk, ", got ", chunk));
  }
  const auto [first, count] = chunk_layers(chunk);
  if (static_cast<int>(layers.size()) != count || static_cast<int>(kept.size()) != count) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", chunk, " carries ", count,
                                                   " layers; got ", layers.size(), " views and ",
                                                   kept.size(), " selections"));
  }
  std::vector<uint8_t> out;
  // Capacity for the layers' raw bytes (what most codings stay well under): pages never
  // written cost nothing, and a chunk of MBs is not copied as it grows.
  const uint64_t raw = static_cast<uint64_t>(count) * 2 * m.shape.num_kv_heads *
                       m.shape.num_tokens * m.shape.head_dim * DTypeSize(m.shape.dtype);
  out.reserve(std::min<uint64_t>(raw + 65536, kChunkPrefix + 8 + ChunkBodyBound(m.shape, count)));
  ByteWriter w(&out);
  StartChunk(w, chunk);
  SectionBytes section_bytes;
  for (int i = 0; i < count; ++i) {
    const int layer = first + i;
    KVC_RETURN_IF_ERROR(CheckKept(kept[i], m.shape, layer));
    if (m.shape.num_tokens > 0 && (layers[i].keys == nullptr || layers[i].values == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": null K or V buffer"));
    }
    const size_t sel_start = w.size();
    const auto& heads = kept[i];
    WriteSelection(w, heads, m.shape.num_tokens);
    m.acct.index_bytes += w.size() - sel_start;
    for (const auto& l : heads) m.acct.kept_elements += 2ull * l.size() * m.shape.head_dim;
    for (bool is_value : {false, true}) {
      const QuantSpec spec = m.plan.Resolve(layer, is_value);
      KVC_RETURN_IF_ERROR(EncodeSection(w, m.shape, spec, m.config, heads,
                                        is_value ? layers[i].values : layers[i].keys, m.scratch,
                                        &section_bytes));
    }
  }
  const size_t body_len = out.size() - kChunkPrefix;
  m.chunk_hashes.push_back(FinishChunk(&out, m.header_hash));
  ++m.next_chunk;
  m.bytes_written += out.size();
  m.acct.scale_bytes += section_bytes.params;
  m.acct.payload_bytes += section_bytes.payload;
  m.acct.framing_bytes += out.size() - body_len + section_bytes.framing;
  m.acct.total_bytes += out.size();
  return out;
}

std::vector<uint8_t> FrameEncoder::Trailer() {
  Impl& m = *impl_;
  std::vector<uint8_t> out = MakeTrailer(m.chunk_hashes, m.bytes_written, m.header_hash);
  m.acct.header_bytes += out.size();
  m.acct.total_bytes += out.size();
  return out;
}

const ByteAccounting& FrameEncoder::accounting() const { return impl_->acct; }

absl::StatusOr<std::vector<uint8_t>> EncodeFrame(const CacheShape& shape, const CodecConfig& config,
                                                 std::string_view model_fingerprint,
                                                 std::span<const int32_t> positions,
                                                 std::span<const LayerView> layers,
                                                 const Selection& selection,
                                                 ByteAccounting* accounting) {
  if (static_cast<int>(layers.size()) != shape.num_layers ||
      static_cast<int>(selection.kept.size()) != shape.num_layers) {
    return absl::InvalidArgumentError("EncodeFrame needs one view and one selection per layer");
  }
  auto enc = FrameEncoder::Create(shape, config, model_fingerprint, positions);
  if (!enc.ok()) return enc.status();
  // Records are concatenated once at the end so the frame is copied exactly once.
  std::vector<std::vector<uint8_t>> records;
  records.push_back((*enc)->Header());
  for (int c = 0; c < (*enc)->num_chunks(); ++c) {
    const auto [first, count] = (*enc)->chunk_layers(c);
    auto chunk = (*enc)->EncodeChunk(c, layers.subspan(first, count),
                                     std::span(selection.kept).subspan(first, count));
    if (!chunk.ok()) return chunk.status();
    records.push_back(*std::move(chunk));
  }
  records.push_back((*enc)->Trailer());
  size_t total = 0;
  for (const auto& r : records) total += r.size();
  std::vector<uint8_t> frame;
  frame.reserve(total);
  ByteWriter w(&frame);
  for (const auto& r : records) w.Bytes(r);
  if (accounting != nullptr) *accounting = (*enc)->accounting();
  return frame;
}

uint64_t MaxEncodedSize(const CacheShape& shape) {
  return kHeaderPrefix + kMaxHeaderBody + 8 + kTrailerSize +
         static_cast<uint64_t>(shape.num_layers) * (kChunkPrefix + 8) +
         ChunkBodyBound(shape, shape.num_layers);
}

}  // namespace kvcodec
