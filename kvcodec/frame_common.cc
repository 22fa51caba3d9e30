#include "kvcodec/frame_common.h"

#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kvcodec/rans.h"

namespace kvcodec {

uint64_t ChunkBodyBound(const CacheShape& shape, int count) {
  const uint64_t heads = shape.num_kv_heads, tokens = shape.num_tokens, dim = shape.head_dim;
  const uint64_t selection = 1 + 2 * heads * (5 + 5 * tokens);
  const uint64_t section = 64 + 4 * (2 * 5 + 1) + heads * tokens * dim * 4 * 2 + 2 * 64 + 4096;
  return static_cast<uint64_t>(count) * (selection + 2 * section);
}

absl::Status CheckKept(const std::vector<std::vector<int32_t>>& kept, const CacheShape& shape,
                       int layer) {
  if (static_cast<int>(kept.size()) != shape.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": selection has ", kept.size(),
                                                   " heads, cache has ", shape.num_kv_heads));
  }
  for (const auto& list : kept) {
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i] < 0 || list[i] >= shape.num_tokens || (i > 0 && list[i] <= list[i - 1])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "layer ", layer, ": kept token indices must be strictly increasing and < ",
            shape.num_tokens));
      }
    }
  }
  return absl::OkStatus();
}

namespace {

void WriteList(ByteWriter& w, const std::vector<int32_t>& list) {
  w.Varint(static_cast<uint32_t>(list.size()));
  int64_t prev = -1;
  for (int32_t t : list) {
    w.Varint(static_cast<uint32_t>(t - prev - 1));
    prev = t;
  }
}

absl::Status ReadList(ByteReader& r, int num_tokens, std::vector<int32_t>* list) {
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

}  // namespace

void WriteSelection(ByteWriter& w, const std::vector<std::vector<int32_t>>& heads, int num_tokens) {
  const bool all = std::all_of(heads.begin(), heads.end(), [&](const auto& l) {
    return static_cast<int>(l.size()) == num_tokens;
  });
  const bool shared = std::all_of(heads.begin(), heads.end(), [&](const auto& l) { return l == heads[0]; });
  if (all) {
    w.U8(0);
  } else if (shared) {
    w.U8(1);
    WriteList(w, heads[0]);
  } else {
    w.U8(2);
    for (const auto& l : heads) WriteList(w, l);
  }
}

absl::Status ReadSelection(ByteReader& r, const CacheShape& shape,
                           std::vector<std::vector<int32_t>>* kept) {
  uint8_t mode = 0;
  KVC_RETURN_IF_ERROR(r.U8(&mode, "selection"));
  kept->resize(shape.num_kv_heads);
  if (mode == 0) {
    for (auto& l : *kept) {
      l.resize(shape.num_tokens);
      for (int t = 0; t < shape.num_tokens; ++t) l[t] = t;
    }
  } else if (mode == 1) {
    KVC_RETURN_IF_ERROR(ReadList(r, shape.num_tokens, &(*kept)[0]));
    for (int h = 1; h < shape.num_kv_heads; ++h) (*kept)[h] = (*kept)[0];
  } else if (mode == 2) {
    for (auto& l : *kept) KVC_RETURN_IF_ERROR(ReadList(r, shape.num_tokens, &l));
  } else {
    return absl::DataLossError("unknown selection mode");
  }
  return absl::OkStatus();
}

absl::Status CheckChunkPrefix(uint32_t seq, uint32_t body_len, int received,
                              const FrameInfo& info, const DecodeLimits& limits) {
  if (seq >= static_cast<uint32_t>(info.num_chunks)) {
    return absl::DataLossError(absl::StrCat("chunk ", seq, " beyond the frame's ", info.num_chunks, " chunks"));
  }
  if (static_cast<int>(seq) < received) return absl::DataLossError(absl::StrCat("duplicate chunk ", seq));
  if (static_cast<int>(seq) > received) {
    return absl::DataLossError(absl::StrCat("chunk ", seq, " arrived before chunk ", received,
                                            " (missing or reordered)"));
  }
  const int first = static_cast<int>(seq) * info.layers_per_chunk;
  const int count = std::min(info.layers_per_chunk, info.shape.num_layers - first);
  if (body_len > limits.max_chunk_bytes || body_len > ChunkBodyBound(info.shape, count)) {
    return absl::ResourceExhaustedError(absl::StrCat("chunk ", seq, " declares ", body_len,
                                                     " bytes, beyond the limit for its layers"));
  }
  return absl::OkStatus();
}

absl::Status CheckChunkHash(std::span<const uint8_t> chunk, uint32_t seq, uint64_t header_hash,
                            uint64_t* hash) {
  *hash = XXH3_64bits_withSeed(chunk.data(), chunk.size() - 8, header_hash);
  if (*hash != LoadU64(chunk.data() + chunk.size() - 8)) {
    return absl::DataLossError(absl::StrCat("chunk ", seq, " checksum mismatch"));
  }
  return absl::OkStatus();
}

void StartChunk(ByteWriter& w, int seq) {
  w.Bytes(kChunkMagic);
  w.U32(static_cast<uint32_t>(seq));
  w.U32(0);  // body length, filled in by FinishChunk
}

uint64_t FinishChunk(std::vector<uint8_t>* chunk, uint64_t header_hash) {
  ByteWriter w(chunk);
  w.PatchU32(8, static_cast<uint32_t>(chunk->size() - kChunkPrefix));
  const uint64_t hash = XXH3_64bits_withSeed(chunk->data(), chunk->size(), header_hash);
  w.U64(hash);
  return hash;
}

namespace {

// The trailer's checksum: every chunk hash, then the trailer's first 16 bytes.
uint64_t TrailerHash(std::span<const uint64_t> chunk_hashes, std::span<const uint8_t> head16,
                     uint64_t header_hash) {
  std::vector<uint8_t> chained;
  ByteWriter c(&chained);
  for (uint64_t h : chunk_hashes) c.U64(h);
  c.Bytes(head16);
  return XXH3_64bits_withSeed(chained.data(), chained.size(), header_hash);
}

}  // namespace

std::vector<uint8_t> MakeTrailer(std::span<const uint64_t> chunk_hashes, uint64_t frame_bytes,
                                 uint64_t header_hash) {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.Bytes(kTrailerMagic);
  w.U32(static_cast<uint32_t>(chunk_hashes.size()));
  w.U64(frame_bytes);
  w.U64(TrailerHash(chunk_hashes, out, header_hash));
  return out;
}

absl::Status CheckTrailer(std::span<const uint8_t> trailer, std::span<const uint64_t> chunk_hashes,
                          int num_chunks, uint64_t header_hash, uint64_t frame_bytes) {
  const uint32_t stated_chunks = LoadU32(trailer.data() + 4);
  if (static_cast<int>(chunk_hashes.size()) != num_chunks || stated_chunks != chunk_hashes.size()) {
    return absl::DataLossError(absl::StrCat("trailer after ", chunk_hashes.size(), " of ", num_chunks,
                                            " chunks: the frame is missing chunks"));
  }
  if (TrailerHash(chunk_hashes, trailer.first(16), header_hash) != LoadU64(trailer.data() + 16)) {
    return absl::DataLossError("trailer checksum mismatch");
  }
  if (LoadU64(trailer.data() + 8) != frame_bytes) {
    return absl::DataLossError("trailer byte count disagrees with the frame");
  }
  return absl::OkStatus();
}

int CodesPerSymbol(int bits) { return bits >= 8 ? 1 : bits >= 3 ? 2 : 4; }

std::vector<uint8_t> CodesToSymbols(std::span<const uint8_t> codes, size_t rows, int head_dim,
                                    int bits) {
  const int k = CodesPerSymbol(bits);
  if (k == 1) return std::vector<uint8_t>(codes.begin(), codes.end());
  const size_t row_len = (head_dim + k - 1) / k;
  std::vector<uint8_t> symbols(rows * row_len, 0);
  const int full = head_dim / k;  // symbols with k real codes; the compiler unrolls k = 2, 4
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* in = codes.data() + r * head_dim;
    uint8_t* out = symbols.data() + r * row_len;
    if (k == 2) {
      for (int j = 0; j < full; ++j) out[j] = static_cast<uint8_t>(in[2 * j] | in[2 * j + 1] << bits);
    } else {
      for (int j = 0; j < full; ++j) {
        out[j] = static_cast<uint8_t>(in[4 * j] | in[4 * j + 1] << 2 | in[4 * j + 2] << 4 | in[4 * j + 3] << 6);
      }
    }
    for (int c = full * k; c < head_dim; ++c) out[c / k] |= static_cast<uint8_t>(in[c] << ((c % k) * bits));
  }
  return symbols;
}

void SymbolsToCodes(std::span<const uint8_t> symbols, size_t rows, int head_dim, int bits,
                    std::span<uint8_t> codes) {
  const int k = CodesPerSymbol(bits);
  if (k == 1) {
    std::copy(symbols.begin(), symbols.begin() + codes.size(), codes.begin());
    return;
  }
  const size_t row_len = (head_dim + k - 1) / k;
  const uint8_t mask = static_cast<uint8_t>((1u << bits) - 1);
  const int full = head_dim / k;
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* in = symbols.data() + r * row_len;
    uint8_t* out = codes.data() + r * head_dim;
    if (k == 2) {
      for (int j = 0; j < full; ++j) {
        out[2 * j] = in[j] & mask;
        out[2 * j + 1] = (in[j] >> bits) & mask;
      }
    } else {
      for (int j = 0; j < full; ++j) {
        out[4 * j] = in[j] & 3;
        out[4 * j + 1] = (in[j] >> 2) & 3;
        out[4 * j + 2] = (in[j] >> 4) & 3;
        out[4 * j + 3] = in[j] >> 6;
      }
    }
    for (int c = full * k; c < head_dim; ++c) out[c] = (in[c / k] >> ((c % k) * bits)) & mask;
  }
}

namespace {

// Writes `coded` if it is smaller than the stored form, else the stored form.
void WriteBest(ByteWriter& w, StreamMethod method, std::span<const uint8_t> stored,
               std::span<const uint8_t> coded) {
  if (coded.size() >= stored.size()) return WriteStoredStream(w, stored);
  w.U8(static_cast<uint8_t>(method));
  w.Varint(static_cast<uint32_t>(stored.size()));
  w.Varint(static_cast<uint32_t>(coded.size()));
  w.Bytes(coded);
}

std::vector<uint8_t> Zstd(std::span<const uint8_t> data, int level) {
  std::vector<uint8_t> out(ZSTD_compressBound(data.size()));
  const size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) return {};
  out.resize(n);
  return out;
}

}  // namespace

void WriteStoredStream(ByteWriter& w, std::span<const uint8_t> stored) {
  w.U8(static_cast<uint8_t>(StreamMethod::kStored));
  w.Varint(static_cast<uint32_t>(stored.size()));
  w.Varint(static_cast<uint32_t>(stored.size()));
  w.Bytes(stored);
}

absl::Status ReadStreamHead(ByteReader& r, size_t expected_raw, absl::string_view what, StreamHead* h) {
  uint8_t method = 0;
  uint32_t coded_len = 0;
  KVC_RETURN_IF_ERROR(r.U8(&method, what));
  KVC_RETURN_IF_ERROR(r.Varint(&h->raw_len, what));
  KVC_RETURN_IF_ERROR(r.Varint(&coded_len, what));
  if (method > static_cast<uint8_t>(StreamMethod::kRans)) {
    return absl::DataLossError(absl::StrCat("unknown stream method ", method, " in ", what));
  }
  h->method = static_cast<StreamMethod>(method);
  if (h->raw_len != expected_raw) {
    return absl::DataLossError(absl::StrCat(what, ": stored length ", h->raw_len,
                                            " disagrees with the shape (", expected_raw, ")"));
  }
  if (h->method == StreamMethod::kStored && coded_len != h->raw_len) {
    return absl::DataLossError(absl::StrCat(what, ": stored stream with coded length ", coded_len));
  }
  return r.Bytes(coded_len, &h->data, what);
}

absl::Status Unzstd(std::span<const uint8_t> in, std::span<uint8_t> out, absl::string_view what) {
  const unsigned long long declared = ZSTD_getFrameContentSize(in.data(), in.size());
  if (declared != out.size()) {
    return absl::DataLossError(absl::StrCat(what, ": zstd frame declares a different size"));
  }
  const size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(n) || n != out.size()) {
    return absl::DataLossError(absl::StrCat(what, ": corrupt zstd data"));
  }
  return absl::OkStatus();
}

namespace {

bool UsePlanes(int row_len, int element_size) {
  return element_size > 1 && row_len % element_size == 0;
}

// Per row: element bytes -> byte planes (to_planes) or back.
void PlaneShuffle(std::span<const uint8_t> in, int row_len, int element_size, bool to_planes,
                  std::span<uint8_t> out) {
  const size_t rows = in.size() / row_len, n = row_len / element_size;
  for (size_t r = 0; r < rows; ++r) {
    const uint8_t* src = in.data() + r * row_len;
    uint8_t* dst = out.data() + r * row_len;
    for (size_t i = 0; i < n; ++i) {
      for (int b = 0; b < element_size; ++b) {
        if (to_planes) dst[b * n + i] = src[i * element_size + b];
        else dst[i * element_size + b] = src[b * n + i];
      }
    }
  }
}

}  // namespace

void WriteByteStream(ByteWriter& w, std::span<const uint8_t> data, int row_len, EntropyCoder coder,
                     int zstd_level, int element_size) {
  switch (coder) {
    case EntropyCoder::kNone: return WriteStoredStream(w, data);
    case EntropyCoder::kZstd: return WriteBest(w, StreamMethod::kZstd, data, Zstd(data, zstd_level));
    case EntropyCoder::kRans: {
      if (!UsePlanes(row_len, element_size) || data.size() % row_len != 0) {
        return WriteBest(w, StreamMethod::kRans, data, RansEncode(data, std::max(row_len, 1), 8));
      }
      std::vector<uint8_t> planes(data.size());
      PlaneShuffle(data, row_len, element_size, true, planes);
      return WriteBest(w, StreamMethod::kRans, data, RansEncode(planes, row_len, 8));
    }
  }
}

void WriteCodeStream(ByteWriter& w, std::span<const uint8_t> codes, int head_dim, int bits,
                     EntropyCoder coder, int zstd_level) {
  if (coder == EntropyCoder::kRans) {
    const size_t rows = head_dim ? codes.size() / head_dim : 0;
    const int k = CodesPerSymbol(bits);
    const std::vector<uint8_t> symbols = CodesToSymbols(codes, rows, head_dim, bits);
    const int row_len = (head_dim + k - 1) / k;
    const std::vector<uint8_t> coded = RansEncode(symbols, std::max(row_len, 1), std::min(8, k * bits));
    const size_t packed_len = (codes.size() * bits + 7) / 8;
    if (coded.size() < packed_len) {
      w.U8(static_cast<uint8_t>(StreamMethod::kRans));
      w.Varint(static_cast<uint32_t>(packed_len));
      w.Varint(static_cast<uint32_t>(coded.size()));
      w.Bytes(coded);
      return;
    }
  }
  const std::vector<uint8_t> packed = PackBits(codes, bits);
  if (coder == EntropyCoder::kZstd) return WriteBest(w, StreamMethod::kZstd, packed, Zstd(packed, zstd_level));
  WriteStoredStream(w, packed);
}

absl::Status ReadByteStream(ByteReader& r, int row_len, std::span<uint8_t> out,
                            absl::string_view what, int element_size) {
  StreamHead h;
  KVC_RETURN_IF_ERROR(ReadStreamHead(r, out.size(), what, &h));
  switch (h.method) {
    case StreamMethod::kStored:
      std::copy(h.data.begin(), h.data.end(), out.begin());
      return absl::OkStatus();
    case StreamMethod::kZstd: return Unzstd(h.data, out, what);
    case StreamMethod::kRans: {
      const bool planes = UsePlanes(row_len, element_size) && out.size() % row_len == 0;
      std::vector<uint8_t> buf(planes ? out.size() : 0);
      absl::Status s = RansDecode(h.data, std::max(row_len, 1), 8, planes ? std::span<uint8_t>(buf) : out);
      if (!s.ok()) return absl::DataLossError(absl::StrCat(what, ": ", s.message()));
      if (planes) PlaneShuffle(buf, row_len, element_size, false, out);
      return absl::OkStatus();
    }
  }
  return absl::DataLossError("unreachable");
}

absl::Status ReadCodeStream(ByteReader& r, int head_dim, int bits, std::span<uint8_t> out,
                            absl::string_view what) {
  const size_t packed_len = (out.size() * bits + 7) / 8;
  StreamHead h;
  KVC_RETURN_IF_ERROR(ReadStreamHead(r, packed_len, what, &h));
  if (h.method == StreamMethod::kRans) {
    const int k = CodesPerSymbol(bits);
    const size_t row_len = (head_dim + k - 1) / k;
    const size_t rows = head_dim ? out.size() / head_dim : 0;
    std::unique_ptr<uint8_t[]> symbol_buf(new uint8_t[rows * row_len]);  // fully written by RansDecode
    std::span<uint8_t> symbols(symbol_buf.get(), rows * row_len);
    absl::Status s = RansDecode(h.data, std::max<int>(row_len, 1), std::min(8, k * bits), symbols);
    if (!s.ok()) return absl::DataLossError(absl::StrCat(what, ": ", s.message()));
    SymbolsToCodes(symbols, rows, head_dim, bits, out);
    return absl::OkStatus();
  }
  std::vector<uint8_t> packed_buf;
  std::span<const uint8_t> packed = h.data;
  if (h.method == StreamMethod::kZstd) {
    packed_buf.resize(packed_len);
    KVC_RETURN_IF_ERROR(Unzstd(h.data, packed_buf, what));
    packed = packed_buf;
  }
  absl::Status s = UnpackBits(packed, bits, out.size(), out);
  if (!s.ok()) return absl::DataLossError(absl::StrCat(what, ": ", s.message()));
  return absl::OkStatus();
}

namespace {

// A buffer per thread and use, reused: sections code one after another on a thread, and a
// fresh allocation of a few MB per section costs its page faults every time.
enum class ScratchUse { kDecode, kEncode };
uint8_t* ThreadScratch(ScratchUse use, size_t bytes) {
  thread_local std::unique_ptr<uint8_t[]> buffers[2];
  thread_local size_t capacity[2] = {0, 0};
  const int i = static_cast<int>(use);
  if (bytes > capacity[i]) {
    buffers[i].reset();
    buffers[i].reset(new uint8_t[bytes]);
    capacity[i] = bytes;
  }
  return buffers[i].get();
}

}  // namespace

uint8_t* PackedEncodeScratch(size_t bytes) { return ThreadScratch(ScratchUse::kEncode, bytes); }

void WritePackedCodeStream(ByteWriter& w, std::span<const uint8_t> packed, int head_dim, int bits,
                           EntropyCoder coder, int zstd_level) {
  // WriteCodeStream's choices, on bytes that are both its rANS symbols and its PackBits output.
  if (coder == EntropyCoder::kRans) {
    const int k = CodesPerSymbol(bits);
    // In pieces: the words go straight from the coder's scratch into the chunk.
    const RansPieces coded = RansEncodePieces(packed, std::max(head_dim / k, 1), std::min(8, k * bits));
    if (coded.size() < packed.size()) {
      w.U8(static_cast<uint8_t>(StreamMethod::kRans));
      w.Varint(static_cast<uint32_t>(packed.size()));
      w.Varint(static_cast<uint32_t>(coded.size()));
      w.Bytes(coded.head);
      w.Bytes(coded.words);
      return;
    }
  }
  if (coder == EntropyCoder::kZstd) return WriteBest(w, StreamMethod::kZstd, packed, Zstd(packed, zstd_level));
  WriteStoredStream(w, packed);
}

absl::Status ReadPackedCodeStream(ByteReader& r, int head_dim, int bits, size_t num_codes,
                                  std::span<const uint8_t>* packed, absl::string_view what) {
  const size_t packed_len = num_codes * bits / 8;
  StreamHead h;
  KVC_RETURN_IF_ERROR(ReadStreamHead(r, packed_len, what, &h));
  if (h.method == StreamMethod::kStored) {
    *packed = h.data;
    return absl::OkStatus();
  }
  const std::span<uint8_t> buf(ThreadScratch(ScratchUse::kDecode, packed_len), packed_len);
  if (h.method == StreamMethod::kZstd) {
    KVC_RETURN_IF_ERROR(Unzstd(h.data, buf, what));
  } else {
    // Whole bytes per row: the rANS symbols of a row are its packed bytes.
    const int k = CodesPerSymbol(bits);
    absl::Status s = RansDecode(h.data, std::max(head_dim / k, 1), std::min(8, k * bits), buf);
    if (!s.ok()) return absl::DataLossError(absl::StrCat(what, ": ", s.message()));
  }
  *packed = buf;
  return absl::OkStatus();
}

DType ValueDType(ValueCoding coding, DType cache_dtype) {
  if (coding == ValueCoding::kRaw) return cache_dtype;
  return coding == ValueCoding::kFloat16 ? DType::kFloat16 : DType::kBFloat16;
}

}  // namespace kvcodec
