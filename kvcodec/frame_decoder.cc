// Frame decoder: docs/FORMAT.md is the contract this file implements. Every record is hashed and
// every size bounded before it is used or allocated.
#include <xxhash.h>

#include <bit>

#include "absl/strings/str_cat.h"
#include "kvcodec/frame_common.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/section.h"
#include "kvcodec/wire.h"

namespace kvcodec {

static_assert(std::endian::native == std::endian::little,
              "kvcodec reads 16-bit streams in place and needs a little-endian host");

struct FrameDecoder::Impl {
  enum class State { kHeader, kChunks, kDone, kFailed };
  DecodeLimits limits;
  std::string expected_fingerprint;
  State state = State::kHeader;
  absl::Status error;
  std::vector<uint8_t> pending;  // bytes received but not yet parsed
  uint64_t consumed = 0;
  FrameInfo info;
  BitPlan plan;
  uint64_t header_hash = 0;
  std::vector<uint64_t> chunk_hashes;
  std::vector<DecodedLayer> ready;

  absl::Status Fail(absl::Status s) {
    state = State::kFailed;
    error = s;
    pending.clear();
    return s;
  }
  // Each returns OK with *used == 0 when more bytes are needed.
  absl::Status ParseHeader(std::span<const uint8_t> in, size_t* used);
  absl::Status ParseChunk(std::span<const uint8_t> in, size_t* used);
  absl::Status ParseTrailer(std::span<const uint8_t> in, size_t* used);
  absl::Status DecodeChunkBody(int seq, std::span<const uint8_t> body);
};

absl::Status FrameDecoder::Impl::ParseHeader(std::span<const uint8_t> in, size_t* used) {
  *used = 0;
  if (in.size() < 4) {
    // Reject a wrong magic as soon as its bytes arrive, not only once 10 are buffered.
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] != kHeaderMagic[i]) return absl::DataLossError("not a kvwire frame (bad magic)");
    }
    return absl::OkStatus();
  }
  if (!MagicIs(in, kHeaderMagic)) return absl::DataLossError("not a kvwire frame (bad magic)");
  if (in.size() < kHeaderPrefix) return absl::OkStatus();
  if (in[4] != kFrameVersion) {
    return absl::DataLossError(absl::StrCat("unsupported frame version ", in[4], " (this decoder reads ",
                                            kFrameVersion, ")"));
  }
  if (in[5] != 0) return absl::DataLossError("unknown frame flags");
  const uint32_t body_len = LoadU32(in.data() + 6);
  if (body_len > kMaxHeaderBody) return absl::DataLossError("frame header too large");
  const size_t total = kHeaderPrefix + body_len + 8;
  if (in.size() < total) return absl::OkStatus();
  const uint64_t hash = XXH3_64bits(in.data(), kHeaderPrefix + body_len);
  ByteReader tail(in.subspan(kHeaderPrefix + body_len, 8));
  uint64_t stored = 0;
  KVC_RETURN_IF_ERROR(tail.U64(&stored, "header hash"));
  if (hash != stored) return absl::DataLossError("frame header checksum mismatch");

  ByteReader r(in.subspan(kHeaderPrefix, body_len));
  uint8_t dtype = 0, fp_len = 0, pos_mode = 0;
  uint32_t layers = 0, heads = 0, dim = 0, tokens = 0, lpc = 0, config_len = 0;
  KVC_RETURN_IF_ERROR(r.U8(&dtype, "header"));
  KVC_RETURN_IF_ERROR(r.Varint(&layers, "header"));
  KVC_RETURN_IF_ERROR(r.Varint(&heads, "header"));
  KVC_RETURN_IF_ERROR(r.Varint(&dim, "header"));
  KVC_RETURN_IF_ERROR(r.Varint(&tokens, "header"));
  KVC_RETURN_IF_ERROR(r.Varint(&lpc, "header"));
  if (dtype > static_cast<uint8_t>(DType::kBFloat16)) return absl::DataLossError("unknown dtype in header");
  if (layers < 1 || heads < 1 || dim < 1 || lpc < 1) return absl::DataLossError("zero dimension in header");
  if (layers > static_cast<uint32_t>(limits.max_layers) || heads > static_cast<uint32_t>(limits.max_kv_heads) ||
      dim > static_cast<uint32_t>(limits.max_head_dim) || tokens > static_cast<uint32_t>(limits.max_tokens)) {
    return absl::ResourceExhaustedError(absl::StrCat("frame dimensions beyond limits: layers=", layers,
                                                     " kv_heads=", heads, " head_dim=", dim,
                                                     " tokens=", tokens));
  }
  CacheShape shape{static_cast<int>(layers), static_cast<int>(heads), static_cast<int>(dim),
                   static_cast<int>(tokens), static_cast<DType>(dtype)};
  if (shape.num_elements() * DTypeSize(shape.dtype) > limits.max_decoded_bytes) {
    return absl::ResourceExhaustedError("decoded cache would exceed max_decoded_bytes");
  }
  KVC_RETURN_IF_ERROR(r.U8(&fp_len, "header"));
  if (fp_len > kMaxFingerprintBytes) return absl::DataLossError("fingerprint too long");
  std::span<const uint8_t> fp, config_bytes;
  KVC_RETURN_IF_ERROR(r.Bytes(fp_len, &fp, "fingerprint"));
  KVC_RETURN_IF_ERROR(r.Varint(&config_len, "header"));
  if (config_len > kMaxConfigText) return absl::DataLossError("config text too long");
  KVC_RETURN_IF_ERROR(r.Bytes(config_len, &config_bytes, "config"));
  info.model_fingerprint.assign(fp.begin(), fp.end());
  info.config_text.assign(config_bytes.begin(), config_bytes.end());
  auto config = CodecConfig::Parse(info.config_text);
  if (!config.ok()) return absl::DataLossError(absl::StrCat("bad config in header: ", config.status().message()));
  if (config->layers_per_chunk != static_cast<int>(lpc)) {
    return absl::DataLossError("header's layers_per_chunk disagrees with its config");
  }
  auto plan = BitPlan::Parse(config->bit_plan);
  if (!plan.ok()) return absl::DataLossError("bad bit plan in header");
  for (int l = 0; l < shape.num_layers; ++l) {
    for (bool v : {false, true}) {
      absl::Status s = CheckSectionSpec(plan->Resolve(l, v), config->delta, shape);
      if (!s.ok()) return absl::DataLossError(absl::StrCat("header plan unusable: ", s.message()));
    }
  }
  KVC_RETURN_IF_ERROR(r.U8(&pos_mode, "header"));
  info.positions.resize(tokens);
  if (pos_mode == 0) {
    uint32_t start = 0;
    KVC_RETURN_IF_ERROR(r.Varint(&start, "positions"));
    if (static_cast<uint64_t>(start) + tokens > (1ull << 31)) return absl::DataLossError("positions overflow");
    for (uint32_t i = 0; i < tokens; ++i) info.positions[i] = static_cast<int32_t>(start + i);
  } else if (pos_mode == 1) {
    int64_t prev = 0;
    for (uint32_t i = 0; i < tokens; ++i) {
      uint32_t z = 0;
      KVC_RETURN_IF_ERROR(r.Varint(&z, "positions"));
      const int64_t d = static_cast<int64_t>(z >> 1) ^ -static_cast<int64_t>(z & 1);
      prev += d;
      if (prev < INT32_MIN || prev > INT32_MAX) return absl::DataLossError("positions overflow");
      info.positions[i] = static_cast<int32_t>(prev);
    }
  } else {
    return absl::DataLossError("unknown positions mode");
  }
  if (r.remaining() != 0) return absl::DataLossError("unexpected bytes at the end of the header");
  if (!expected_fingerprint.empty() && expected_fingerprint != info.model_fingerprint) {
    return absl::FailedPreconditionError(
        "model fingerprint mismatch: the cache was made by a different model");
  }
  info.version = kFrameVersion;
  info.shape = shape;
  info.config = *std::move(config);
  info.layers_per_chunk = static_cast<int>(lpc);
  info.num_chunks = static_cast<int>((layers + lpc - 1) / lpc);
  this->plan = *std::move(plan);
  header_hash = hash;
  *used = total;
  return absl::OkStatus();
}

absl::Status FrameDecoder::Impl::ParseChunk(std::span<const uint8_t> in, size_t* used) {
  *used = 0;
  if (in.size() < 4) return absl::OkStatus();
  if (MagicIs(in, kTrailerMagic)) return ParseTrailer(in, used);
  if (!MagicIs(in, kChunkMagic)) return absl::DataLossError("bad chunk magic");
  if (in.size() < kChunkPrefix) return absl::OkStatus();
  const uint32_t seq = LoadU32(in.data() + 4);
  const uint32_t body_len = LoadU32(in.data() + 8);
  KVC_RETURN_IF_ERROR(CheckChunkPrefix(seq, body_len, static_cast<int>(chunk_hashes.size()), info, limits));
  const size_t total = kChunkPrefix + body_len + 8;
  if (in.size() < total) return absl::OkStatus();
  uint64_t hash = 0;
  KVC_RETURN_IF_ERROR(CheckChunkHash(in.first(total), seq, header_hash, &hash));
  KVC_RETURN_IF_ERROR(DecodeChunkBody(static_cast<int>(seq), in.subspan(kChunkPrefix, body_len)));
  chunk_hashes.push_back(hash);
  *used = total;
  return absl::OkStatus();
}

absl::Status FrameDecoder::Impl::DecodeChunkBody(int seq, std::span<const uint8_t> body) {
  const CacheShape& shape = info.shape;
  const int first = seq * info.layers_per_chunk;
  const int count = std::min(info.layers_per_chunk, shape.num_layers - first);
  ByteReader r(body);
  std::vector<DecodedLayer> layers(count);
  for (int i = 0; i < count; ++i) {
    DecodedLayer& out = layers[i];
    out.layer = first + i;
    KVC_RETURN_IF_ERROR(ReadSelection(r, shape, &out.kept));
    for (bool is_value : {false, true}) {
      absl::Status s = DecodeSection(r, shape, plan.Resolve(out.layer, is_value), info.config, out.kept,
                                     is_value ? &out.values : &out.keys);
      if (!s.ok()) {
        return absl::Status(s.code(), absl::StrCat("layer ", out.layer, is_value ? " values: " : " keys: ",
                                                   s.message()));
      }
    }
  }
  if (r.remaining() != 0) return absl::DataLossError(absl::StrCat("chunk ", seq, " has trailing bytes"));
  for (auto& l : layers) ready.push_back(std::move(l));
  return absl::OkStatus();
}

absl::Status FrameDecoder::Impl::ParseTrailer(std::span<const uint8_t> in, size_t* used) {
  *used = 0;
  if (in.size() < kTrailerSize) return absl::OkStatus();
  KVC_RETURN_IF_ERROR(
      CheckTrailer(in.first(kTrailerSize), chunk_hashes, info.num_chunks, header_hash, consumed));
  *used = kTrailerSize;
  state = State::kDone;
  return absl::OkStatus();
}

FrameDecoder::FrameDecoder(DecodeLimits limits, std::string expected_fingerprint)
    : impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  impl_->expected_fingerprint = std::move(expected_fingerprint);
}
FrameDecoder::~FrameDecoder() = default;
FrameDecoder::FrameDecoder(FrameDecoder&&) noexcept = default;
FrameDecoder& FrameDecoder::operator=(FrameDecoder&&) noexcept = default;

absl::Status FrameDecoder::Feed(std::span<const uint8_t> bytes) {
  Impl& m = *impl_;
  if (m.state == Impl::State::kFailed) return m.error;
  if (m.state == Impl::State::kDone) {
    if (bytes.empty()) return absl::OkStatus();
    return m.Fail(absl::DataLossError("bytes after the end of the frame"));
  }
  // Parse straight from the caller's bytes when nothing is buffered (the common case of whole
  // chunks arriving); only an incomplete record's bytes are copied and kept.
  std::span<const uint8_t> source = bytes;
  if (!m.pending.empty()) {
    m.pending.insert(m.pending.end(), bytes.begin(), bytes.end());
    source = m.pending;
  }
  size_t offset = 0;
  while (m.state != Impl::State::kDone) {
    std::span<const uint8_t> in = source.subspan(offset);
    size_t used = 0;
    absl::Status s = m.state == Impl::State::kHeader ? m.ParseHeader(in, &used) : m.ParseChunk(in, &used);
    if (!s.ok()) return m.Fail(s);
    if (used == 0) break;
    if (m.state == Impl::State::kHeader) m.state = Impl::State::kChunks;
    offset += used;
    m.consumed += used;
  }
  if (m.state == Impl::State::kDone && offset != source.size()) {
    return m.Fail(absl::DataLossError("bytes after the end of the frame"));
  }
  if (m.pending.empty()) {
    m.pending.assign(source.begin() + offset, source.end());
  } else {
    m.pending.erase(m.pending.begin(), m.pending.begin() + offset);
  }
  return absl::OkStatus();
}

const FrameInfo* FrameDecoder::info() const {
  return impl_->state == Impl::State::kHeader ? nullptr : &impl_->info;
}

std::vector<DecodedLayer> FrameDecoder::TakeLayers() {
  std::vector<DecodedLayer> out;
  out.swap(impl_->ready);
  return out;
}

bool FrameDecoder::complete() const { return impl_->state == Impl::State::kDone; }

absl::Status FrameDecoder::Finish() {
  Impl& m = *impl_;
  if (m.state == Impl::State::kFailed) return m.error;
  if (m.state != Impl::State::kDone) {
    return m.Fail(absl::DataLossError(m.state == Impl::State::kHeader
                                          ? "truncated frame: the header never arrived"
                                          : absl::StrCat("truncated frame: ", m.chunk_hashes.size(), " of ",
                                                         m.info.num_chunks, " chunks and no trailer")));
  }
  return absl::OkStatus();
}

uint64_t FrameDecoder::bytes_consumed() const { return impl_->consumed; }

absl::StatusOr<std::vector<DecodedLayer>> DecodeFrame(std::span<const uint8_t> frame,
                                                      const DecodeLimits& limits,
                                                      std::string_view expected_fingerprint,
                                                      FrameInfo* info) {
  FrameDecoder decoder(limits, std::string(expected_fingerprint));
  KVC_RETURN_IF_ERROR(decoder.Feed(frame));
  KVC_RETURN_IF_ERROR(decoder.Finish());
  if (info != nullptr) *info = *decoder.info();
  return decoder.TakeLayers();
}

}  // namespace kvcodec
