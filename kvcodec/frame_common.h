// Pieces of the frame format (docs/FORMAT.md) shared by the encoder and the decoder.
// Internal to kvcodec.
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

// Largest chunk body the layers [first, first+count) can produce with any coding.
uint64_t ChunkBodyBound(const CacheShape& shape, int count);

// Codes -> rANS symbols: k = 8 / bits codes of a row share one symbol (FORMAT.md, Stream).
int CodesPerSymbol(int bits);
std::vector<uint8_t> CodesToSymbols(std::span<const uint8_t> codes, size_t rows, int head_dim,
                                    int bits);
void SymbolsToCodes(std::span<const uint8_t> symbols, size_t rows, int head_dim, int bits,
                    std::span<uint8_t> codes);

// Writes one stream of byte data (values or params), choosing the configured coder or stored.
// For rANS, rows of multi-byte elements are coded as byte planes (every element's byte 0, then
// byte 1, ...) so that contexts can separate exponent bytes from mantissa bytes.
void WriteByteStream(ByteWriter& w, std::span<const uint8_t> data, int row_len,
                     EntropyCoder coder, int zstd_level, int element_size = 1);
// Writes one stream of codes of `bits` bits, rows of head_dim codes.
void WriteCodeStream(ByteWriter& w, std::span<const uint8_t> codes, int head_dim, int bits,
                     EntropyCoder coder, int zstd_level);

// Reads a byte stream whose stored form must be exactly out.size() bytes.
absl::Status ReadByteStream(ByteReader& r, int row_len, std::span<uint8_t> out,
                            absl::string_view what, int element_size = 1);
// Reads a code stream of out.size() codes (rows of head_dim) of `bits` bits.
absl::Status ReadCodeStream(ByteReader& r, int head_dim, int bits, std::span<uint8_t> out,
                            absl::string_view what);

// Element size of a section's values for non-integer codings.
size_t ValueElementSize(ValueCoding coding, DType dtype);

}  // namespace kvcodec
