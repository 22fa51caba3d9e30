// A static, multi-context rANS coder for byte symbols (alphabets up to 256), in the spirit of
// CacheGen's arithmetic coding with per-channel-group distributions. Internal to kvcodec.
//
// Symbols come in rows of `row_len`; the symbol at position i uses context
// ((i % row_len) * num_contexts) / row_len, so neighbouring channels share a frequency table.
// The encoder picks num_contexts itself (a power of two <= min(row_len, 64)) to minimise the
// estimated output, tables included, and writes it, the tables and the interleaved rANS state
// streams into one self-contained byte string. Inside the stream, multi-context symbols are
// coded in blocks of rows, column by column, so that consecutive decode steps share a table;
// the caller's symbol order (row-major) is unaffected.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace kvcodec {

// symbols[i] < (1 << alphabet_bits); alphabet_bits in 1..8; row_len >= 1; fewer than 2^32
// symbols. The stream format is documented at the top of rans.cc. Out-of-range arguments are
// clamped, and a symbol outside the alphabet makes the stream use 8-bit tables, so decoding
// with the caller's alphabet_bits then fails instead of returning wrong data.
std::vector<uint8_t> RansEncode(std::span<const uint8_t> symbols, int row_len, int alphabet_bits);

// RansEncode's stream in two pieces, for callers that copy it into a larger buffer anyway:
// `head` (tag, fields, tables, final states) then `words`, which points into a buffer of the
// calling thread that its next RansEncode or RansEncodePieces call overwrites.
struct RansPieces {
  std::vector<uint8_t> head;
  std::span<const uint8_t> words;
  size_t size() const { return head.size() + words.size(); }
};
RansPieces RansEncodePieces(std::span<const uint8_t> symbols, int row_len, int alphabet_bits);

// Decodes exactly out.size() symbols. Any malformed input returns an error, never reads out of
// bounds, and never loops without consuming input.
absl::Status RansDecode(std::span<const uint8_t> in, int row_len, int alphabet_bits,
                        std::span<uint8_t> out);

// Order-0 empirical entropy in bytes of `symbols` under the same context split the encoder
// chose for `encoded` (for tests and reports): sum over contexts of n_c * H_c / 8.
double ContextEntropyBytes(std::span<const uint8_t> symbols, int row_len, int num_contexts);
// The number of contexts an encoded stream uses (0 if malformed).
int RansNumContexts(std::span<const uint8_t> encoded);

// The pieces of a stream before its word stream, read and checked exactly as RansDecode reads
// and checks them (same order, same errors), for decoders that run the word stream elsewhere
// (kernels/rans_plan.cc stages it for the GPU). Each advances p past what it read.
struct RansStreamHead {
  int num_contexts = 0;
  int lanes = 0;
  int alphabet = 0;             // 1 << alphabet_bits
  uint32_t used_contexts = 0;   // contexts 0..used_contexts-1 hold symbols, the others none
  uint64_t blocked_rows = 0;    // full rows coded in blocked column order (a multiple of 32)
};
// The arguments, the tag, the fields and row_len of a stream of num_symbols symbols.
absl::Status ReadRansHead(const uint8_t*& p, const uint8_t* end, uint64_t num_symbols,
                          int row_len, int alphabet_bits, RansStreamHead* head);
// Context c's table into freq[0..head.alphabet) (0 = absent); it must be empty iff unused.
absl::Status ReadRansTable(const uint8_t*& p, const uint8_t* end, const RansStreamHead& head,
                           int c, uint16_t* freq);
// The min(lanes, num_symbols) final states (lanes <= 32); the other entries of `states` are set
// to 2^16.
absl::Status ReadRansStates(const uint8_t*& p, const uint8_t* end, const RansStreamHead& head,
                            uint64_t num_symbols, uint32_t (&states)[32]);

}  // namespace kvcodec
