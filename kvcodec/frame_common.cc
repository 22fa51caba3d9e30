#include "kvcodec/frame_common.h"

#include <zstd.h>

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

void WriteStored(ByteWriter& w, std::span<const uint8_t> stored) {
  w.U8(static_cast<uint8_t>(StreamMethod::kStored));
  w.Varint(static_cast<uint32_t>(stored.size()));
  w.Varint(static_cast<uint32_t>(stored.size()));
  w.Bytes(stored);
}

// Writes `coded` if it is smaller than the stored form, else the stored form.
void WriteBest(ByteWriter& w, StreamMethod method, std::span<const uint8_t> stored,
               std::span<const uint8_t> coded) {
  if (coded.size() >= stored.size()) return WriteStored(w, stored);
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

struct StreamHead {
  StreamMethod method;
  uint32_t raw_len;
  std::span<const uint8_t> data;
};

absl::Status ReadHead(ByteReader& r, size_t expected_raw, absl::string_view what, StreamHead* h) {
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

}  // namespace

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
    case EntropyCoder::kNone: return WriteStored(w, data);
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
  WriteStored(w, packed);
}

absl::Status ReadByteStream(ByteReader& r, int row_len, std::span<uint8_t> out,
                            absl::string_view what, int element_size) {
  StreamHead h;
  KVC_RETURN_IF_ERROR(ReadHead(r, out.size(), what, &h));
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
  KVC_RETURN_IF_ERROR(ReadHead(r, packed_len, what, &h));
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

size_t ValueElementSize(ValueCoding coding, DType dtype) {
  return coding == ValueCoding::kRaw ? DTypeSize(dtype) : 2;
}

}  // namespace kvcodec
