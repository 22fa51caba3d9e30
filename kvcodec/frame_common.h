// Pieces of the frame format (docs/FORMAT.md) shared by the encoder and the decoder, and by
// the GPU frame encoder and decoder in kernels/. Internal to kvcodec (not its public API).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kvcodec/kvcodec.h"
#include "kvcodec/quant.h"
#include "kvcodec/wire.h"

namespace kvcodec {

inline constexpr uint8_t kHeaderMagic[4] = {'K', 'V', 'W', 'F'};
inline constexpr uint8_t kChunkMagic[4] = {'K', 'V', 'W', 'C'};
inline constexpr uint8_t kTrailerMagic[4] = {'K', 'V', 'W', 'E'};
inline constexpr uint8_t kFrameVersion = 1;
inline constexpr uint32_t kMaxHeaderBody = 1u << 20;
inline constexpr uint32_t kMaxConfigText = 4096;
inline constexpr size_t kHeaderPrefix = 4 + 1 + 1 + 4;  // magic, version, flags, body_len
inline constexpr size_t kChunkPrefix = 4 + 4 + 4;       // magic, seq, body_len
inline constexpr size_t kTrailerSize = 4 + 4 + 8 + 8;

enum class StreamMethod : uint8_t { kStored = 0, kZstd = 1, kRans = 2 };

// Little-endian loads of record prefixes and hashes, parsed in place.
inline uint32_t LoadU32(const uint8_t* p) {
  return p[0] | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
inline uint64_t LoadU64(const uint8_t* p) { return LoadU32(p) | (uint64_t{LoadU32(p + 4)} << 32); }
inline bool MagicIs(std::span<const uint8_t> in, const uint8_t (&magic)[4]) {
  return in.size() >= 4 && in[0] == magic[0] && in[1] == magic[1] && in[2] == magic[2] &&
         in[3] == magic[3];
}

// A layer's kept tokens per head must be strictly increasing token indices, one list a head.
absl::Status CheckKept(const std::vector<std::vector<int32_t>>& kept, const CacheShape& shape,
                       int layer);
// A layer's selection (FORMAT.md, Selection): mode 0 (every token), 1 (one list for all heads)
// or 2 (a list per head), each list a count and then gaps.
void WriteSelection(ByteWriter& w, const std::vector<std::vector<int32_t>>& kept, int num_tokens);
absl::Status ReadSelection(ByteReader& r, const CacheShape& shape,
                           std::vector<std::vector<int32_t>>* kept);

// Checks a chunk prefix's sequence number and declared body length against the frame, when
// `received` chunks came before it.
absl::Status CheckChunkPrefix(uint32_t seq, uint32_t body_len, int received,
                              const FrameInfo& info, const DecodeLimits& limits);

// Checks the hash that ends a whole chunk record (prefix, body, hash) and returns it in *hash.
absl::Status CheckChunkHash(std::span<const uint8_t> chunk, uint32_t seq, uint64_t header_hash,
                            uint64_t* hash);

// A chunk record (FORMAT.md, Chunk) in `chunk`: StartChunk writes its prefix, the body follows,
// then FinishChunk fills in the body length, appends the chunk's hash and returns the hash.
void StartChunk(ByteWriter& w, int seq);
uint64_t FinishChunk(std::vector<uint8_t>* chunk, uint64_t header_hash);

// The trailer of a frame whose records before it are `frame_bytes` long.
std::vector<uint8_t> MakeTrailer(std::span<const uint64_t> chunk_hashes, uint64_t frame_bytes,
                                 uint64_t header_hash);
// Checks a trailer (kTrailerSize bytes) after the chunks of `chunk_hashes`, when the frame
// has num_chunks chunks and its records before the trailer are `frame_bytes` long.
absl::Status CheckTrailer(std::span<const uint8_t> trailer, std::span<const uint64_t> chunk_hashes,
                          int num_chunks, uint64_t header_hash, uint64_t frame_bytes);

// Largest chunk body the layers [first, first+count) can produce with any coding.
uint64_t ChunkBodyBound(const CacheShape& shape, int count);

// Codes -> rANS symbols: k = 8 / bits codes of a row share one symbol (FORMAT.md, Stream).
int CodesPerSymbol(int bits);
std::vector<uint8_t> CodesToSymbols(std::span<const uint8_t> codes, size_t rows, int head_dim,
                                    int bits);
void SymbolsToCodes(std::span<const uint8_t> symbols, size_t rows, int head_dim, int bits,
                    std::span<uint8_t> codes);

// A stream's head (FORMAT.md, Stream): method, raw length, coded length, then the coded bytes.
struct StreamHead {
  StreamMethod method = StreamMethod::kStored;
  uint32_t raw_len = 0;
  std::span<const uint8_t> data;
};
// Reads a stream head and its bytes; the raw length must be expected_raw.
absl::Status ReadStreamHead(ByteReader& r, size_t expected_raw, absl::string_view what,
                            StreamHead* h);
// Decompresses a zstd stream that must decode to exactly out.size() bytes.
absl::Status Unzstd(std::span<const uint8_t> in, std::span<uint8_t> out, absl::string_view what);
// Writes `stored` as a stored stream.
void WriteStoredStream(ByteWriter& w, std::span<const uint8_t> stored);

// Writes one stream of byte data (values or params), choosing the configured coder or stored.
// For rANS, rows of multi-byte elements are coded as byte planes (every element's byte 0, then
// byte 1, ...) so that contexts can separate exponent bytes from mantissa bytes.
void WriteByteStream(ByteWriter& w, std::span<const uint8_t> data, int row_len,
                     EntropyCoder coder, int zstd_level, int element_size = 1);
// Writes one stream of codes of `bits` bits, rows of head_dim codes.
void WriteCodeStream(ByteWriter& w, std::span<const uint8_t> codes, int head_dim, int bits,
                     EntropyCoder coder, int zstd_level);

// WriteCodeStream for codes already packed as PackBits packs them, where
// PackedRowsSupported(bits, head_dim): the same bytes, without the unpacked copy.
void WritePackedCodeStream(ByteWriter& w, std::span<const uint8_t> packed, int head_dim, int bits,
                           EntropyCoder coder, int zstd_level);
// A buffer of this thread's for packed codes being encoded, valid until its next call.
uint8_t* PackedEncodeScratch(size_t bytes);

// Reads a byte stream whose stored form must be exactly out.size() bytes.
absl::Status ReadByteStream(ByteReader& r, int row_len, std::span<uint8_t> out,
                            absl::string_view what, int element_size = 1);
// Reads a code stream of out.size() codes (rows of head_dim) of `bits` bits.
absl::Status ReadCodeStream(ByteReader& r, int head_dim, int bits, std::span<uint8_t> out,
                            absl::string_view what);

// Reads a code stream of num_codes codes (rows of head_dim) of `bits` bits where
// PackedRowsSupported(bits, head_dim), and points *packed at the codes in PackBits layout
// without unpacking them: at the frame's own bytes for a stored stream, else at a buffer of
// this thread's that stays valid until the thread's next call.
absl::Status ReadPackedCodeStream(ByteReader& r, int head_dim, int bits, size_t num_codes,
                                  std::span<const uint8_t>* packed, absl::string_view what);

// The dtype a raw, fp16 or bf16 section stores its values in.
DType ValueDType(ValueCoding coding, DType cache_dtype);

}  // namespace kvcodec
