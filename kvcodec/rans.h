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

// Decodes exactly out.size() symbols. Any malformed input returns an error, never reads out of
// bounds, and never loops without consuming input.
absl::Status RansDecode(std::span<const uint8_t> in, int row_len, int alphabet_bits,
                        std::span<uint8_t> out);

// Order-0 empirical entropy in bytes of `symbols` under the same context split the encoder
// chose for `encoded` (for tests and reports): sum over contexts of n_c * H_c / 8.
double ContextEntropyBytes(std::span<const uint8_t> symbols, int row_len, int num_contexts);
// The number of contexts an encoded stream uses (0 if malformed).
int RansNumContexts(std::span<const uint8_t> encoded);

}  // namespace kvcodec
