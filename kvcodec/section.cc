#include "kvcodec/section.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kvcodec/dtype.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/quant.h"

namespace kvcodec {
namespace {

std::span<const uint8_t> AsBytes(const std::vector<uint16_t>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * 2};
}

SectionShape ShapeOf(const CacheShape& shape, const std::vector<std::vector<int32_t>>& kept) {
  SectionShape s;
  s.head_dim = shape.head_dim;
  for (const auto& l : kept) s.rows_per_head.push_back(static_cast<int>(l.size()));
  return s;
}

// Gathers the kept rows of every head as float32, heads one after another.
void GatherFloat(const CacheShape& shape, const std::vector<std::vector<int32_t>>& kept,
                 const void* data, std::vector<float>& out) {
  const size_t d = shape.head_dim, esize = DTypeSize(shape.dtype);
  size_t rows = 0;
  for (const auto& l : kept) rows += l.size();
  out.resize(rows * d);
  float* dst = out.data();
  for (size_t h = 0; h < kept.size(); ++h) {
    for (int32_t t : kept[h]) {
      const char* src = static_cast<const char*>(data) + ((h * shape.num_tokens + t) * d) * esize;
      ToFloat(src, shape.dtype, d, dst);
      dst += d;
    }
  }
}

// Splits concatenated float rows into per-head buffers of the cache dtype.
void ScatterFloat(const CacheShape& shape, const std::vector<std::vector<int32_t>>& kept,
                  std::span<const float> values, std::vector<ByteBuffer>* out) {
  const size_t d = shape.head_dim, esize = DTypeSize(shape.dtype);
  out->resize(kept.size());
  size_t offset = 0;
  for (size_t h = 0; h < kept.size(); ++h) {
    const size_t n = kept[h].size() * d;
    (*out)[h].resize(n * esize);
    FromFloat(values.data() + offset, n, shape.dtype, (*out)[h].data());
    offset += n;
  }
}

}  // namespace

void WriteSectionDescriptor(ByteWriter& w, const QuantSpec& spec, const DeltaConfig& d) {
  w.U8(static_cast<uint8_t>(spec.coding));
  w.U8(static_cast<uint8_t>(spec.axis));
  w.Varint(static_cast<uint32_t>(spec.group_size));
  w.Varint(static_cast<uint32_t>(spec.rank));
  w.U8(static_cast<uint8_t>(d.mode));
  w.Varint(static_cast<uint32_t>(d.group_size));
  w.U8(d.closed_loop ? 1 : 0);
}

QuantSpec CanonicalSpec(QuantSpec spec) {
  if (!spec.is_integer()) {
    spec.axis = QuantAxis::kPerToken;
    spec.group_size = 0;
  }
  if (spec.coding != ValueCoding::kLowRank) spec.rank = 0;
  return spec;
}

absl::Status CheckSectionDescriptor(ByteReader& r, const QuantSpec& spec, const DeltaConfig& delta) {
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
      delta_group != static_cast<uint32_t>(delta.group_size) || closed != (delta.closed_loop ? 1 : 0)) {
    return absl::DataLossError("inconsistent section: its coding disagrees with the header's plan");
  }
  return absl::OkStatus();
}

DeltaConfig SectionDelta(const QuantSpec& spec, const DeltaConfig& delta) {
  DeltaConfig d;
  d.mode = DeltaMode::kNone;
  d.group_size = 0;
  d.closed_loop = true;
  if (!spec.is_integer() || delta.mode == DeltaMode::kNone) return d;
  d.mode = delta.mode;
  d.closed_loop = delta.closed_loop;
  if (delta.mode != DeltaMode::kSequential) d.group_size = delta.group_size;
  return d;
}

absl::Status CheckSectionSpec(const QuantSpec& spec, const DeltaConfig& delta,
                              const CacheShape& shape) {
  if (spec.is_integer()) {
    SectionShape s;
    s.head_dim = shape.head_dim;
    s.rows_per_head.assign(shape.num_kv_heads, 0);
    KVC_RETURN_IF_ERROR(CheckQuantSpec(spec, s));
    const DeltaConfig d = SectionDelta(spec, delta);
    if ((d.mode == DeltaMode::kGroupedSequential || d.mode == DeltaMode::kAnchor) && d.group_size < 2) {
      return absl::InvalidArgumentError("delta group size must be at least 2");
    }
  }
  if (spec.coding == ValueCoding::kLowRank && spec.rank < 1) {
    return absl::InvalidArgumentError("low rank needs rank >= 1");
  }
  return absl::OkStatus();
}

absl::Status EncodeSection(ByteWriter& w, const CacheShape& shape, const QuantSpec& raw_spec,
                           const CodecConfig& config, const std::vector<std::vector<int32_t>>& kept,
                           const void* data, std::vector<float>& scratch, SectionBytes* bytes) {
  const QuantSpec spec = CanonicalSpec(raw_spec);
  const DeltaConfig delta = SectionDelta(spec, config.delta);
  const size_t start = w.size();
  WriteSectionDescriptor(w, spec, delta);
  bytes->params += w.size() - start;
  const int d = shape.head_dim;
  const EntropyCoder coder = config.entropy;
  const int level = config.zstd_level;
  auto account = [&](uint64_t* bucket, auto&& write) {
    const size_t before = w.size();
    write();
    *bucket += w.size() - before;
  };
  switch (spec.coding) {
    case ValueCoding::kRaw: {
      // Copied byte for byte so that raw is lossless whatever the dtype holds (NaN payloads too).
      const size_t esize = DTypeSize(shape.dtype), row = d * esize;
      std::vector<uint8_t> buf;
      for (size_t h = 0; h < kept.size(); ++h) {
        for (int32_t t : kept[h]) {
          const uint8_t* src = static_cast<const uint8_t*>(data) + (h * shape.num_tokens + t) * row;
          buf.insert(buf.end(), src, src + row);
        }
      }
      account(&bytes->payload, [&] { WriteByteStream(w, buf, static_cast<int>(row), coder, level, static_cast<int>(esize)); });
      break;
    }
    case ValueCoding::kFloat16:
    case ValueCoding::kBFloat16: {
      GatherFloat(shape, kept, data, scratch);
      std::vector<uint16_t> halves(scratch.size());
      const DType as = ValueDType(spec.coding, shape.dtype);
      FromFloat(scratch.data(), scratch.size(), as, halves.data());
      account(&bytes->payload, [&] { WriteByteStream(w, AsBytes(halves), 2 * d, coder, level, 2); });
      break;
    }
    case ValueCoding::kInt8:
    case ValueCoding::kInt4:
    case ValueCoding::kInt3:
    case ValueCoding::kInt2: {
      if (delta.mode == DeltaMode::kNone && spec.axis == QuantAxis::kPerToken &&
          shape.dtype == DType::kBFloat16 && PackedRowsSupported(spec.bits(), d) &&
          d <= kMaxPackedRow) {
        // The common case row by row, from bf16 to packed codes (DecodeSection's mirror).
        const int group = spec.group_size > 0 ? spec.group_size : d;
        const size_t row_bytes = static_cast<size_t>(d) * spec.bits() / 8;
        std::vector<const void*> row_ptrs;
        for (size_t h = 0; h < kept.size(); ++h) {
          for (int32_t t : kept[h]) {
            row_ptrs.push_back(static_cast<const uint8_t*>(data) + (h * shape.num_tokens + t) * d * 2);
          }
        }
        const size_t rows = row_ptrs.size();
        uint8_t* packed = PackedEncodeScratch(std::max<size_t>(rows * row_bytes, 1));
        std::vector<uint16_t> params(rows * 2 * (d / group));
        KVC_RETURN_IF_ERROR(
            QuantizeBF16RowsToPacked(row_ptrs, d, group, spec.bits(), packed, params.data()));
        account(&bytes->payload, [&] {
          WritePackedCodeStream(w, {packed, rows * row_bytes}, d, spec.bits(), coder, level);
        });
        account(&bytes->params, [&] { WriteByteStream(w, AsBytes(params), 4, coder, level); });
        break;
      }
      GatherFloat(shape, kept, data, scratch);
      auto q = Quantize(spec, delta, ShapeOf(shape, kept), scratch);
      if (!q.ok()) return q.status();
      account(&bytes->payload, [&] { WriteCodeStream(w, q->main_codes, d, spec.bits(), coder, level); });
      account(&bytes->params, [&] { WriteByteStream(w, AsBytes(q->main_params), 4, coder, level); });
      if (delta.mode != DeltaMode::kNone) {
        account(&bytes->payload, [&] { WriteCodeStream(w, q->ref_codes, d, 8, coder, level); });
        account(&bytes->params, [&] { WriteByteStream(w, AsBytes(q->ref_params), 4, coder, level); });
      }
      break;
    }
    case ValueCoding::kLowRank: {
      GatherFloat(shape, kept, data, scratch);
      auto lr = LowRankEncode(spec.rank, ShapeOf(shape, kept), scratch);
      if (!lr.ok()) return lr.status();
      account(&bytes->payload, [&] { WriteByteStream(w, AsBytes(lr->factors), 2, coder, level); });
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeSection(ByteReader& r, const CacheShape& shape, const QuantSpec& raw_spec,
                           const CodecConfig& config, const std::vector<std::vector<int32_t>>& kept,
                           std::vector<ByteBuffer>* out) {
  const QuantSpec spec = CanonicalSpec(raw_spec);
  const DeltaConfig delta = SectionDelta(spec, config.delta);
  KVC_RETURN_IF_ERROR(CheckSectionDescriptor(r, spec, delta));
  const SectionShape sshape = ShapeOf(shape, kept);
  const size_t n = sshape.num_elements();
  const int d = shape.head_dim;
  // Every element is written by the decoder below before it is read, so skip zero-filling.
  std::unique_ptr<float[]> values_buf(new float[n]);
  std::span<float> values(values_buf.get(), n);
  switch (spec.coding) {
    case ValueCoding::kRaw: {
      const size_t esize = DTypeSize(shape.dtype);
      std::vector<uint8_t> buf(n * esize);
      KVC_RETURN_IF_ERROR(ReadByteStream(r, static_cast<int>(d * esize), buf, "values", static_cast<int>(esize)));
      out->resize(kept.size());
      size_t offset = 0;
      for (size_t h = 0; h < kept.size(); ++h) {
        const size_t len = kept[h].size() * d * esize;
        (*out)[h].assign(buf.begin() + offset, buf.begin() + offset + len);
        offset += len;
      }
      return absl::OkStatus();
    }
    case ValueCoding::kFloat16:
    case ValueCoding::kBFloat16: {
      std::vector<uint16_t> halves(n);
      KVC_RETURN_IF_ERROR(ReadByteStream(
          r, 2 * d, {reinterpret_cast<uint8_t*>(halves.data()), n * 2}, "values", 2));
      ToFloat(halves.data(), ValueDType(spec.coding, shape.dtype), n, values.data());
      break;
    }
    case ValueCoding::kInt8:
    case ValueCoding::kInt4:
    case ValueCoding::kInt3:
    case ValueCoding::kInt2: {
      QuantizedSection q;
      q.main_params.resize(NumMainParams(spec, delta, sshape));
      const bool fast = delta.mode == DeltaMode::kNone && spec.axis == QuantAxis::kPerToken &&
                        shape.dtype == DType::kBFloat16;
      // The fast path dequantizes 2-, 4- and 8-bit codes as they come, still packed.
      const bool packed_path = fast && PackedRowsSupported(spec.bits(), d);
      std::span<const uint8_t> packed;
      if (packed_path) {
        KVC_RETURN_IF_ERROR(ReadPackedCodeStream(r, d, spec.bits(), n, &packed, "codes"));
      } else {
        q.main_codes.resize(NumMainRows(delta, sshape) * d);
        KVC_RETURN_IF_ERROR(ReadCodeStream(r, d, spec.bits(), q.main_codes, "codes"));
      }
      KVC_RETURN_IF_ERROR(ReadByteStream(
          r, 4, {reinterpret_cast<uint8_t*>(q.main_params.data()), q.main_params.size() * 2}, "scales"));
      if (delta.mode != DeltaMode::kNone) {
        const size_t refs = sshape.num_rows() - NumMainRows(delta, sshape);
        q.ref_codes.resize(refs * d);
        q.ref_params.resize(2 * refs);
        KVC_RETURN_IF_ERROR(ReadCodeStream(r, d, 8, q.ref_codes, "reference codes"));
        KVC_RETURN_IF_ERROR(ReadByteStream(
            r, 4, {reinterpret_cast<uint8_t*>(q.ref_params.data()), q.ref_params.size() * 2},
            "reference scales"));
      }
      if (fast) {
        // The common case in one pass from codes to bf16 (no float32 copy of the section).
        // Codes are < 2^bits by construction of both stream readers; params are checked here
        // exactly as Dequantize checks them.
        for (uint16_t p : q.main_params) {
          if ((p & 0x7c00u) == 0x7c00u) {
            return absl::DataLossError("codes: quantization scale or offset is not a finite half float");
          }
        }
        const int group = spec.group_size > 0 ? spec.group_size : d;
        const uint8_t* codes = packed_path ? packed.data() : q.main_codes.data();
        const size_t row_bytes = packed_path ? static_cast<size_t>(d) * spec.bits() / 8 : d;
        const uint16_t* params = q.main_params.data();
        out->resize(kept.size());
        for (size_t h = 0; h < kept.size(); ++h) {
          const size_t rows = kept[h].size();
          (*out)[h].resize(rows * d * 2);
          uint16_t* dst = reinterpret_cast<uint16_t*>((*out)[h].data());
          if (packed_path) {
            DequantizePackedTokenRowsToBF16(codes, spec.bits(), params, rows, d, group, dst);
          } else {
            DequantizeTokenRowsToBF16(codes, params, rows, d, group, dst);
          }
          codes += rows * row_bytes;
          params += rows * 2 * (d / group);
        }
        return absl::OkStatus();
      }
      absl::Status s = Dequantize(spec, delta, sshape, q, values);
      if (!s.ok()) return absl::DataLossError(absl::StrCat("codes: ", s.message()));
      break;
    }
    case ValueCoding::kLowRank: {
      LowRankSection lr;
      lr.factors.resize(NumLowRankFactors(spec.rank, sshape));
      KVC_RETURN_IF_ERROR(ReadByteStream(
          r, 2, {reinterpret_cast<uint8_t*>(lr.factors.data()), lr.factors.size() * 2}, "factors"));
      absl::Status s = LowRankDecode(spec.rank, sshape, lr, values);
      if (!s.ok()) return absl::DataLossError(absl::StrCat("factors: ", s.message()));
      break;
    }
  }
  ScatterFloat(shape, kept, values, out);
  return absl::OkStatus();
}

}  // namespace kvcodec
