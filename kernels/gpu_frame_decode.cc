// DecodeFrameOn: kvcodec/frame_decoder.cc's checks, in the same order and with the same
// messages, and the sections rebuilt on the backend. The whole frame is parsed and checked on
// the host first, every stream the backend needs staged into one upload; then all rANS code
// streams of the frame are decoded in one launch (they are independent, so the more streams,
// the more of the GPU works) and each section is dequantized (or copied) into its layer's
// buffer.
//
// kvcodec decodes a rANS word stream as soon as it is parsed, so a corrupt word stream is
// reported before any defect later in the frame. Here the word streams are decoded after the
// parse stops (at the end, or at the first defect), and the first failing stream, which lies
// before that point, is reported ahead of the defect: the same error either way.
#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/gpu_frame.h"
#include "kernels/plan.h"
#include "kernels/rans_plan.h"
#include "kernels/section_codec.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/section.h"

namespace kvwire::gpu {
namespace {

using kvcodec::ByteReader;
using kvcodec::LoadU32;
using kvcodec::LoadU64;

// One chunk's inputs for the backend, gathered into one host buffer (256-byte aligned pieces).
class Staging {
 public:
  void Clear() { bytes_.clear(); }
  size_t Reserve(size_t n) {
    const size_t at = Workspace::Aligned(bytes_.size());
    bytes_.resize(at + Workspace::Aligned(n));
    return at;
  }
  size_t Add(const void* data, size_t n) {
    const size_t at = Reserve(n);
    if (n) std::memcpy(bytes_.data() + at, data, n);
    return at;
  }
  std::span<uint8_t> At(size_t offset, size_t n) { return {bytes_.data() + offset, n}; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// A section parsed and checked, waiting for the chunk's upload.
struct PendingSection {
  std::string label;  // "layer L keys" / "layer L values"
  bool quantized = false;
  SectionPlan plan;
  size_t main_codes = 0, main_params = 0, ref_codes = 0, ref_params = 0;
  bool main_from_rans = false, ref_from_rans = false;  // offsets into the rANS output
  CodeLayout main_layout = CodeLayout::kPacked;
  size_t values = 0;  // copies: rows in src_dtype, contiguous
  int32_t src_dtype = 0;
  bool raw = false;
  void* dst = nullptr;
  size_t rows_offset = 0;  // the rows' element offsets in dst (int64 each)
  int64_t rows = 0;
};

class FrameParser {
 public:
  FrameParser(Backend& backend, const kvcodec::FrameInfo& info, const kvcodec::BitPlan& plan,
              const GpuDecodeOptions& options)
      : backend_(backend), info_(info), plan_(plan), options_(options), codec_(backend) {}

  // Parses and checks one chunk's body, staging what the backend needs.
  absl::Status ParseChunk(int seq, std::span<const uint8_t> body) {
    const kvcodec::CacheShape& shape = info_.shape;
    const int first = seq * info_.layers_per_chunk;
    const int count = std::min(info_.layers_per_chunk, shape.num_layers - first);
    ByteReader r(body);
    std::vector<DeviceDecodedLayer> layers(count);
    const size_t esize = kvcodec::DTypeSize(shape.dtype);
    for (int i = 0; i < count; ++i) {
      DeviceDecodedLayer& layer = layers[i];
      layer.layer = first + i;
      KVC_RETURN_IF_ERROR(kvcodec::ReadSelection(r, shape, &layer.kept));
      size_t longest = 0;
      for (const auto& l : layer.kept) longest = std::max(longest, l.size());
      layer.capacity = options_.at_token_index ? shape.num_tokens : static_cast<int>(longest);
      auto offsets = options_.at_token_index ? CacheRowOffsets(layer.kept, shape.num_tokens, shape.head_dim)
                                             : PaddedRowOffsets(layer.kept, layer.capacity, shape.head_dim);
      if (!offsets.ok()) return offsets.status();
      const size_t rows_offset = staging_.Add(offsets->data(), offsets->size() * sizeof(int64_t));
      const size_t bytes = static_cast<size_t>(shape.num_kv_heads) * layer.capacity * shape.head_dim * esize;
      for (Buffer* b : {&layer.keys, &layer.values}) {
        auto buffer = Buffer::Make(backend_, bytes);
        if (!buffer.ok()) return buffer.status();
        *b = *std::move(buffer);
        KVW_RETURN_IF_ERROR(backend_.Zero(b->data(), bytes));
      }
      for (bool is_value : {false, true}) {
        PendingSection p;
        p.label = absl::StrCat("layer ", layer.layer, is_value ? " values" : " keys");
        p.dst = is_value ? layer.values.data() : layer.keys.data();
        p.rows_offset = rows_offset;
        p.rows = static_cast<int64_t>(offsets->size());
        const absl::Status s = ParseSection(r, plan_.Resolve(layer.layer, is_value), layer.kept, &p);
        if (!s.ok()) return absl::Status(s.code(), absl::StrCat(p.label, ": ", s.message()));
        pending_.push_back(std::move(p));
      }
    }
    if (r.remaining() != 0) return absl::DataLossError(absl::StrCat("chunk ", seq, " has trailing bytes"));
    for (auto& l : layers) layers_.push_back(std::move(l));
    return absl::OkStatus();
  }

  // Decodes the rANS streams parsed so far; if one fails, its error (it precedes anything the
  // parse found later). Then, if the parse ended with `parse_error`, that.
  absl::Status DecodeRans(const absl::Status& parse_error) {
    if (!batch_.streams.empty()) {
      auto b = Buffer::Make(backend_, batch_.out_bytes);
      if (!b.ok()) return b.status();
      rans_buffer_ = *std::move(b);
      size_t failed = 0;
      const absl::Status s = RansDecodeBatch(backend_, batch_, rans_buffer_.as<uint8_t>(), &failed);
      if (!s.ok()) {
        const auto& [label, what] = rans_owner_[failed];
        return absl::DataLossError(absl::StrCat(label, ": ", what, ": ", s.message()));
      }
    }
    return parse_error;
  }

  // Rebuilds every parsed section into its layer and waits.
  absl::StatusOr<std::vector<DeviceDecodedLayer>> Rebuild() {
    KVW_RETURN_IF_ERROR(Run());
    return std::move(layers_);
  }

 private:
  // A code stream of `rows` rows at `bits`: stored or zstd into the staging (packed), rANS into
  // the chunk's batch (symbols).
  absl::Status ReadCodes(ByteReader& r, int bits, uint64_t rows, absl::string_view what,
                         const std::string& label, size_t* offset, bool* from_rans) {
    const int d = info_.shape.head_dim;
    const size_t packed_len = PackedBytes(rows * d, bits);
    kvcodec::StreamHead h;
    KVC_RETURN_IF_ERROR(kvcodec::ReadStreamHead(r, packed_len, what, &h));
    *from_rans = h.method == kvcodec::StreamMethod::kRans;
    if (*from_rans) {
      const int row_len = SymbolRowLen(d, bits);
      *offset = Workspace::Aligned(batch_.out_bytes);
      const absl::Status s = AddRansStream(h.data, rows * row_len, std::max(row_len, 1),
                                           SymbolAlphabetBits(bits), *offset, &batch_);
      if (!s.ok()) return absl::DataLossError(absl::StrCat(what, ": ", s.message()));
      rans_owner_.push_back({label, std::string(what)});
      return absl::OkStatus();
    }
    if (h.method == kvcodec::StreamMethod::kStored) {
      *offset = staging_.Add(h.data.data(), h.data.size());
      return absl::OkStatus();
    }
    *offset = staging_.Reserve(packed_len);
    return kvcodec::Unzstd(h.data, staging_.At(*offset, packed_len), what);
  }

  absl::Status ReadParams(ByteReader& r, uint64_t pairs, absl::string_view what, size_t* offset) {
    *offset = staging_.Reserve(pairs * sizeof(ParamPair));
    return kvcodec::ReadByteStream(r, 4, staging_.At(*offset, pairs * sizeof(ParamPair)), what);
  }

  absl::Status ParseSection(ByteReader& r, const kvcodec::QuantSpec& raw_spec,
                            const std::vector<std::vector<int32_t>>& kept, PendingSection* p) {
    const kvcodec::CacheShape& shape = info_.shape;
    const kvcodec::QuantSpec spec = kvcodec::CanonicalSpec(raw_spec);
    const int d = shape.head_dim;
    const size_t n = static_cast<size_t>(p->rows) * d;
    if (spec.coding == kvcodec::ValueCoding::kLowRank) {
      // Low rank is rebuilt on the host (kvcodec), then copied into place.
      std::vector<kvcodec::ByteBuffer> heads;
      KVC_RETURN_IF_ERROR(kvcodec::DecodeSection(r, shape, raw_spec, info_.config, kept, &heads));
      p->values = staging_.Reserve(n * kvcodec::DTypeSize(shape.dtype));
      size_t at = p->values;
      for (const auto& h : heads) {
        if (!h.empty()) std::memcpy(staging_.At(at, h.size()).data(), h.data(), h.size());
        at += h.size();
      }
      p->src_dtype = static_cast<int32_t>(shape.dtype);
      p->raw = true;
      return absl::OkStatus();
    }
    const kvcodec::DeltaConfig delta = kvcodec::SectionDelta(spec, info_.config.delta);
    KVC_RETURN_IF_ERROR(kvcodec::CheckSectionDescriptor(r, spec, delta));
    if (!spec.is_integer()) {
      const bool raw = spec.coding == kvcodec::ValueCoding::kRaw;
      const kvcodec::DType as = kvcodec::ValueDType(spec.coding, shape.dtype);
      const size_t esize = kvcodec::DTypeSize(as);
      p->values = staging_.Reserve(n * esize);
      KVC_RETURN_IF_ERROR(kvcodec::ReadByteStream(r, static_cast<int>(d * esize), staging_.At(p->values, n * esize),
                                                  "values", static_cast<int>(esize)));
      p->src_dtype = static_cast<int32_t>(as);
      p->raw = raw;
      return absl::OkStatus();
    }
    auto plan = PlanSection(spec, info_.config.delta, d, RowsPerHead(kept));
    if (!plan.ok()) return plan.status();
    p->quantized = true;
    p->plan = *std::move(plan);
    const SectionPlan& sp = p->plan;
    KVC_RETURN_IF_ERROR(ReadCodes(r, sp.geom.bits, sp.main_rows, "codes", p->label, &p->main_codes, &p->main_from_rans));
    p->main_layout = p->main_from_rans ? CodeLayout::kSymbols : CodeLayout::kPacked;
    KVC_RETURN_IF_ERROR(ReadParams(r, sp.main_param_pairs, "scales", &p->main_params));
    if (sp.delta.mode != kvcodec::DeltaMode::kNone) {
      KVC_RETURN_IF_ERROR(ReadCodes(r, 8, sp.ref_rows, "reference codes", p->label, &p->ref_codes, &p->ref_from_rans));
      KVC_RETURN_IF_ERROR(ReadParams(r, sp.ref_param_pairs, "reference scales", &p->ref_params));
    }
    // kvcodec checks the parameters once all of the section's streams are read.
    auto params = [&](size_t offset, uint64_t pairs) {
      return std::span<const ParamPair>(reinterpret_cast<const ParamPair*>(staging_.At(offset, 0).data()), pairs);
    };
    absl::Status finite = CheckParamsFinite(params(p->main_params, sp.main_param_pairs));
    if (finite.ok() && sp.delta.mode != kvcodec::DeltaMode::kNone) {
      finite = CheckParamsFinite(params(p->ref_params, sp.ref_param_pairs));
    }
    if (!finite.ok()) return absl::DataLossError(absl::StrCat("codes: ", finite.message()));
    return absl::OkStatus();
  }

  absl::Status Run() {
    const std::vector<uint8_t>& host = staging_.bytes();
    auto b = Buffer::Make(backend_, host.size());
    if (!b.ok()) return b.status();
    staging_buffer_ = *std::move(b);
    KVW_RETURN_IF_ERROR(backend_.CopyToBackend(staging_buffer_.data(), host.data(), host.size()));
    uint8_t* base = staging_buffer_.as<uint8_t>();
    uint8_t* rans = rans_buffer_.as<uint8_t>();
    const kvcodec::CacheShape& shape = info_.shape;
    for (const PendingSection& p : pending_) {
      const int64_t* rows = reinterpret_cast<const int64_t*>(base + p.rows_offset);
      if (!p.quantized) {
        const CopyRowsArgs a{p.rows, shape.head_dim, base + p.values, p.src_dtype, nullptr,
                             p.dst,  static_cast<int32_t>(shape.dtype), rows, p.raw ? 1 : 0};
        KVW_RETURN_IF_ERROR(backend_.CopyRows(a));
        continue;
      }
      SectionStreams in;
      in.main_codes = (p.main_from_rans ? rans : base) + p.main_codes;
      in.main_layout = p.main_layout;
      in.main_params = reinterpret_cast<ParamPair*>(base + p.main_params);
      in.ref_codes = (p.ref_from_rans ? rans : base) + p.ref_codes;
      in.ref_params = reinterpret_cast<ParamPair*>(base + p.ref_params);
      KVW_RETURN_IF_ERROR(codec_.Decode(p.plan, in, p.dst, shape.dtype, rows));
    }
    return backend_.Synchronize();
  }

  Backend& backend_;
  const kvcodec::FrameInfo& info_;
  const kvcodec::BitPlan& plan_;
  const GpuDecodeOptions& options_;
  SectionCodec codec_;
  Staging staging_;
  RansBatch batch_;
  std::vector<std::pair<std::string, std::string>> rans_owner_;  // per rANS stream: section, stream
  std::vector<PendingSection> pending_;
  std::vector<DeviceDecodedLayer> layers_;
  Buffer staging_buffer_, rans_buffer_;
};

absl::Status Truncated(size_t chunks, int expected) {
  return absl::DataLossError(absl::StrCat("truncated frame: ", chunks, " of ", expected, " chunks and no trailer"));
}

// The chunks from `pos` on and the trailer, each checked before it is used; the first defect.
absl::Status ParseRecords(std::span<const uint8_t> frame, size_t pos, const kvcodec::FrameInfo& info,
                          const kvcodec::DecodeLimits& limits, uint64_t header_hash, FrameParser& parser,
                          std::vector<uint64_t>* chunk_hashes) {
  for (;;) {
    const std::span<const uint8_t> in = frame.subspan(pos);
    if (in.size() < 4) return Truncated(chunk_hashes->size(), info.num_chunks);
    if (kvcodec::MagicIs(in, kvcodec::kTrailerMagic)) break;
    if (!kvcodec::MagicIs(in, kvcodec::kChunkMagic)) return absl::DataLossError("bad chunk magic");
    if (in.size() < kvcodec::kChunkPrefix) return Truncated(chunk_hashes->size(), info.num_chunks);
    const uint32_t seq = LoadU32(in.data() + 4);
    const uint32_t body_len = LoadU32(in.data() + 8);
    KVC_RETURN_IF_ERROR(
        kvcodec::CheckChunkPrefix(seq, body_len, static_cast<int>(chunk_hashes->size()), info, limits));
    const size_t total = kvcodec::kChunkPrefix + body_len + 8;
    if (in.size() < total) return Truncated(chunk_hashes->size(), info.num_chunks);
    uint64_t hash = 0;
    KVC_RETURN_IF_ERROR(kvcodec::CheckChunkHash(in.first(total), seq, header_hash, &hash));
    KVW_RETURN_IF_ERROR(parser.ParseChunk(static_cast<int>(seq), in.subspan(kvcodec::kChunkPrefix, body_len)));
    chunk_hashes->push_back(hash);
    pos += total;
  }
  const std::span<const uint8_t> in = frame.subspan(pos);
  if (in.size() < kvcodec::kTrailerSize) return Truncated(chunk_hashes->size(), info.num_chunks);
  KVC_RETURN_IF_ERROR(kvcodec::CheckTrailer(in.first(kvcodec::kTrailerSize), *chunk_hashes, info.num_chunks,
                                           header_hash, pos));
  if (in.size() != kvcodec::kTrailerSize) return absl::DataLossError("bytes after the end of the frame");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<DeviceDecodedLayer>> DecodeFrameOn(Backend& backend, std::span<const uint8_t> frame,
                                                              const kvcodec::DecodeLimits& limits,
                                                              std::string_view expected_fingerprint,
                                                              kvcodec::FrameInfo* info_out,
                                                              const GpuDecodeOptions& options) {
  // The header: kvcodec's own decoder parses and checks it (limits, config, fingerprint).
  kvcodec::FrameDecoder header(limits, std::string(expected_fingerprint));
  size_t pos = frame.size();
  if (frame.size() >= kvcodec::kHeaderPrefix) {
    pos = std::min(frame.size(), kvcodec::kHeaderPrefix + LoadU32(frame.data() + 6) + size_t{8});
  }
  KVW_RETURN_IF_ERROR(header.Feed(frame.first(pos)));
  if (header.info() == nullptr) return header.Finish();
  const kvcodec::FrameInfo info = *header.info();
  const uint64_t header_hash = LoadU64(frame.data() + pos - 8);
  auto plan = kvcodec::BitPlan::Parse(info.config.bit_plan);
  if (!plan.ok()) return absl::DataLossError("bad bit plan in header");

  std::vector<uint64_t> chunk_hashes;
  FrameParser parser(backend, info, *plan, options);
  absl::Status parsed = ParseRecords(frame, pos, info, limits, header_hash, parser, &chunk_hashes);
  KVW_RETURN_IF_ERROR(parser.DecodeRans(parsed));
  if (info_out != nullptr) *info_out = info;
  return parser.Rebuild();
}

}  // namespace kvwire::gpu
