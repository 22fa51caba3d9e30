// Static, multi-context, interleaved rANS for byte symbols (see rans.h).
//
// Algorithm: range-variant asymmetric numeral systems (Duda) with a 32-bit state and 16-bit
// renormalisation (the "word" variant Fabian Giesen describes). The state x lives in
// [L, L << 16) with L = 2^16; probabilities have PROB_BITS = 12 bits (M = 4096).
//   encode s: if x >= freq[s] << 20 { emit low 16 bits; x >>= 16 }   (at most once)
//             x = (x / freq[s]) * M + x % freq[s] + cum[s]
//   decode:   slot = x % M; s = sym[slot]; x = freq[s] * (x / M) + slot - cum[s]
//             if x < L { x = x << 16 | next 16-bit word }                (at most once)
// One renormalisation step always suffices in both directions because M divides L and the
// word size is 16 bits, so both loops are branch-free (conditional moves).
//
// Why 12 probability bits: the slot->symbol table is 4 KiB per context (5 KiB with the
// per-symbol freq/cum), so one context stays in L1 and even 64 contexts (320 KiB) in L2; a
// frequency fits a 2-byte varint; and with the optimal normalisation below the loss against
// exact probabilities is well under 1% for the distributions quantized KV codes have (measured
// 0.01-0.6% on 1M-symbol streams). The floor: every present symbol holds >= 1/4096 of the
// range, so k present symbols cost at most (k - 1) / 4096 / ln 2 extra bits per symbol, which
// only matters below ~1 bit/symbol of entropy with many distinct rare symbols. The state keeps
// 4 bits above M (L / M = 16); that costs a few thousandths of a bit per symbol on average.
//
// Coding order (version 3): with one context the symbols are coded in their own (row-major)
// order. With several, consecutive symbols of a row use different tables, so the decoder would
// touch a different 4 KiB table every step (64 tables overflow L1); instead the first R full
// rows, R = floor(n / row_len) rounded down to a multiple of 32, are coded in blocks of
// kBlockRows = 256 rows (the last block may be shorter, still a multiple of 32 rows) and
// within a block column by column: column 0 of every row of the block top to bottom, then
// column 1, ... Each column run uses one table, and the decoder writes each symbol straight to
// its row-major position (a block of 256 rows of 64 bytes is 16 KiB, so the writes stay in
// L1; no transpose pass). The symbols after those R rows (fewer than 8 full rows plus a
// partial row) follow in row-major order. "Coded position" below is the index in this order.
//
// Lanes: the symbol at coded position k belongs to lane k % lanes; the lanes have independent
// states but share one word stream (the encoder runs backwards over the coded order and writes
// words back to front, the decoder runs forwards), so the decoder's read order is exactly the
// reverse of the encoder's write order. Lanes hide the latency of the table lookups: the scalar
// decoder interleaves 8, the vectorised one (rans_wide.h) runs 32 as four 8-lane vectors whose
// dependency chains overlap. The encoder uses 32 lanes from 65536 symbols on, 8 from 4096,
// else 1 (each lane costs 4 bytes of final state), and 1 for a stream whose every context has
// a single symbol (its decoding never changes a state). Column runs are multiples of 32 long,
// so in every run row r of the block is in lane r % lanes.
//
// Contexts: symbol i uses table ((i % row_len) * num_contexts) / row_len. The encoder counts
// symbols per finest context (the largest power of two <= min(row_len, 64), lowered until its
// contexts average max(32, alphabet / 2) symbols), merges neighbour pairs to get each coarser
// split (floor((c*n)/(2r)) == floor(floor(c*n/r)/2), so the splits nest), estimates entropy +
// table bytes for each, and keeps the cheapest (ties: fewer contexts).
//
// Stream format (version 3; integers little-endian, "varint" = unsigned LEB128 in canonical
// form, at most 5 bytes, value < 2^32). Version 2 (tag 0xB2) differed only in rounding R to a
// multiple of 8 and allowing at most 8 lanes; version 1 (0xB1) coded every stream in
// row-major order. Neither is read any more.
//   byte 0      tag 0xB3: high nibble 0xB marks rANS, low nibble is the format version (3)
//   byte 1      bits 0..3 alphabet_bits (1..8); bits 4..6 log2(lanes) (lanes 1,2,4,8,32); bit 7 0
//   byte 2      log2(num_contexts), 0..6; num_contexts <= row_len
//   varint      row_len (must equal the caller's)
//   num_contexts tables, each:
//     varint h  if h == 1: a presence bitmap of ceil(A/8) bytes follows (A = 1 << alphabet_bits;
//               bit s % 8 of byte s / 8 set = symbol s present; bits >= A are zero).
//               if h is even: run lengths over 0..A-1 of absent and present symbols alternately,
//               starting with an absent run of h / 2 symbols (may be 0), then varints for the
//               following runs (each >= 1) until the runs cover exactly A symbols.
//               An empty table (no present symbol) is the single run h = 2A; a context holds
//               symbols iff its table is non-empty.
//     then for each present symbol in ascending order: varint (freq - 1); the frequencies are
//     >= 1 and sum to exactly 4096.
//   min(lanes, n) final encoder states, 4 bytes each, lane 0 first (each in [2^16, 2^32))
//   16-bit words in decoder read order, until the end of the input (symbols in the coding
//   order above; kBlockRows = 256 is part of the format).
// The symbol count n is not stored: the caller knows it. The decoder checks that every lane
// ends at the encoder's initial state L and that the word stream is consumed exactly, which
// catches truncation and most corruption; the tables are validated before any decoding.

#include "kvcodec/rans.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcodec/rans_internal.h"
#include "kvcodec/rans_wide.h"
#include "kvcodec/wire.h"

namespace kvcodec {

namespace {

using namespace rans_internal;  // NOLINT: the format's constants and shared helpers

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------
// One context's decoding tables, kept together so a symbol needs a single base pointer.
struct DecodeContext {
  struct FreqCum {
    uint16_t freq;
    uint16_t cum;
  };
  FreqCum fc[256];          // per symbol
  uint8_t sym[kProbScale];  // slot -> symbol
};

// One decode step with context tables `c`.
inline uint8_t DecodeStep(uint32_t& x, const DecodeContext* c) {
  const uint32_t slot = x & (kProbScale - 1);
  const uint8_t s = c->sym[slot];
  const DecodeContext::FreqCum fc = c->fc[s];
  x = fc.freq * (x >> kProbBits) + slot - fc.cum;
  return s;
}

// Renormalisation without a bounds check (the caller guarantees two readable bytes at p) and
// without a branch (see EncodeStep).
inline void Refill(uint32_t& x, const uint8_t*& p) {
  SelectIfLow((x << 16) | Load16(p), p + 2, x, p);
}

// One step where the caller cannot guarantee the word: the refill is bounds-checked. False if
// the word stream has run out.
inline bool DecodeStepChecked(uint32_t& x, const DecodeContext* c, const uint8_t*& p,
                              const uint8_t* end, uint8_t* out) {
  *out = DecodeStep(x, c);
  if (x < kStateLow) {
    if (end - p < 2) return false;
    x = (x << 16) | Load16(p);
    p += 2;
  }
  return true;
}

// One column run of `groups` groups of 8 rows without bounds checks (the caller guarantees
// 16 readable bytes per group); returns the advanced input pointer. The context's tables are
// loop-invariant, and the states are copied into scalars (GCC keeps a local array of them in
// memory here), so everything stays in registers; kept out of line so that the register
// allocator sees only this loop.
template <int kLanes, int kRowLen>
#if defined(__GNUC__)
__attribute__((noinline))
#endif
const uint8_t* DecodeColumnRun(uint8_t* o, size_t groups, size_t row_len_rt,
                               const DecodeContext* c, const uint8_t* p, uint32_t* states) {
  const size_t row_len = kRowLen != 0 ? static_cast<size_t>(kRowLen) : row_len_rt;
  // Row k of a group is in lane k % kLanes.
  uint32_t x0 = states[0], x1 = states[1 % kLanes], x2 = states[2 % kLanes],
           x3 = states[3 % kLanes], x4 = states[4 % kLanes], x5 = states[5 % kLanes],
           x6 = states[6 % kLanes], x7 = states[7 % kLanes];
  for (; groups > 0; --groups, o += 8 * row_len) {
    if constexpr (kLanes == 8) {
      o[0 * row_len] = DecodeStep(x0, c);
      Refill(x0, p);
      o[1 * row_len] = DecodeStep(x1, c);
      Refill(x1, p);
      o[2 * row_len] = DecodeStep(x2, c);
      Refill(x2, p);
      o[3 * row_len] = DecodeStep(x3, c);
      Refill(x3, p);
      o[4 * row_len] = DecodeStep(x4, c);
      Refill(x4, p);
      o[5 * row_len] = DecodeStep(x5, c);
      Refill(x5, p);
      o[6 * row_len] = DecodeStep(x6, c);
      Refill(x6, p);
      o[7 * row_len] = DecodeStep(x7, c);
      Refill(x7, p);
    } else {
      // Fewer lanes (short streams use 1): lane j holds rows j, j + kLanes, ...
      uint32_t* const xs[8] = {&x0, &x1, &x2, &x3, &x4, &x5, &x6, &x7};
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        uint32_t& x = *xs[k % kLanes];
        o[k * row_len] = DecodeStep(x, c);
        Refill(x, p);
      }
    }
  }
  const uint32_t x[8] = {x0, x1, x2, x3, x4, x5, x6, x7};
  for (int j = 0; j < kLanes; ++j) states[j] = x[j];
  return p;
}

// Decodes whole groups of kLanes symbols while each group's worst case (2 bytes per symbol)
// is available, then the rest one symbol at a time with bounds checks. Returns false if the
// word stream runs out; `*pos` advances past the words consumed.
template <int kLanes>
bool DecodeAll(std::span<uint8_t> out, size_t row_len, int num_contexts,
               const DecodeContext* const* col_ctx, const uint8_t** pos, const uint8_t* end,
               uint32_t* states) {
  const size_t n = out.size();
  uint8_t* dst = out.data();
  const uint8_t* p = *pos;
  uint32_t x[kLanes];
  std::copy(states, states + kLanes, x);
  size_t i = 0;
  // Groups that can run without bounds checks, limited by symbols and by input bytes. Most
  // groups consume far fewer than 2 * kLanes bytes, so the count is re-derived when it runs out.
  auto safe_groups = [&] {
    return std::min((n - i) / kLanes, static_cast<size_t>(end - p) / (2 * kLanes));
  };
  if (num_contexts == 1) {
    // Plain order is a column run with row length 1, in groups of 8 (i stays a multiple of 8,
    // so symbol i + k is in lane k % kLanes).
    for (;;) {
      const size_t groups = std::min((n - i) / 8, static_cast<size_t>(end - p) / 16);
      if (groups == 0) break;
      p = DecodeColumnRun<kLanes, 1>(dst + i, groups, 1, col_ctx[0], p, x);
      i += 8 * groups;
    }
  } else if (row_len % kLanes == 0) {
    // Groups never straddle a row end: i and row_len are multiples of kLanes.
    size_t col = 0;
    for (size_t left = safe_groups(); left > 0; left = safe_groups()) {
      for (; left > 0; --left, i += kLanes) {
        const DecodeContext* const* ctx = col_ctx + col;
        col = col + kLanes == row_len ? 0 : col + kLanes;
#pragma GCC unroll 8
        for (int j = 0; j < kLanes; ++j) {
          dst[i + j] = DecodeStep(x[j], ctx[j]);
          Refill(x[j], p);
        }
      }
    }
  } else {
    size_t col = 0;
    for (size_t left = safe_groups(); left > 0; left = safe_groups()) {
      for (; left > 0; --left, i += kLanes) {
#pragma GCC unroll 8
        for (int j = 0; j < kLanes; ++j) {
          dst[i + j] = DecodeStep(x[j], col_ctx[col]);
          col = col + 1 == row_len ? 0 : col + 1;
          Refill(x[j], p);
        }
      }
    }
  }
  // The rest, with bounds checks.
  for (size_t col = i % row_len; i < n; ++i) {
    if (!DecodeStepChecked(x[i % kLanes], col_ctx[col], p, end, &dst[i])) return false;
    col = col + 1 == row_len ? 0 : col + 1;
  }
  std::copy(x, x + kLanes, states);
  *pos = p;
  return true;
}

// Decodes `rows` full rows (a multiple of 8) coded in blocked column order, starting from and
// updating `states`. Each decoded symbol goes straight to its row-major position; a block's
// output (kBlockRows rows) stays in L1, and within a column run the context is fixed, so the
// run touches one table. kRowLen is row_len when known at compile time (0: use row_len_rt).
// Returns false if the word stream runs out.
template <int kLanes, int kRowLen>
bool DecodeBlocked(uint8_t* dst, size_t rows, size_t row_len_rt,
                   const DecodeContext* const* col_ctx, const uint8_t** pos, const uint8_t* end,
                   uint32_t* states) {
  const size_t row_len = kRowLen != 0 ? static_cast<size_t>(kRowLen) : row_len_rt;
  const uint8_t* p = *pos;
  for (size_t r0 = 0; r0 < rows; r0 += kBlockRows) {
    const size_t block_rows = std::min(kBlockRows, rows - r0);
    uint8_t* const block = dst + r0 * row_len;
    for (size_t col = 0; col < row_len; ++col) {
      const DecodeContext* const c = col_ctx[col];
      uint8_t* o = block + col;
      if (static_cast<size_t>(end - p) >= 2 * block_rows) {
        // The whole run's worst case (one word per symbol) is available.
        p = DecodeColumnRun<kLanes, kRowLen>(o, block_rows / 8, row_len, c, p, states);
      } else {
        for (size_t r = 0; r < block_rows; ++r, o += row_len) {
          if (!DecodeStepChecked(states[r % kLanes], c, p, end, o)) return false;
        }
      }
    }
  }
  *pos = p;
  return true;
}

// A buffer per thread that only grows, for the decoding tables: streams are decoded one after
// another on a thread, and fresh tables per stream (up to 1.3 MB with 64 contexts) cost a page
// fault on every page they touch. Distinct types (or `Use` values) get distinct buffers.
template <typename T, int Use>
T* ThreadBuffer(size_t count) {
  thread_local std::unique_ptr<T[]> buffer;
  thread_local size_t capacity = 0;
  if (count > capacity) {
    buffer.reset();
    buffer.reset(new T[count]);
    capacity = count;
  }
  return buffer.get();
}

// ---- 32 lanes ----------------------------------------------------------------------------
// Per column, what the vectorised decoder needs: the context's slot table, or null when the
// context has a single symbol (freq 4096: decoding leaves every state as it is and reads no
// word, so the run is that symbol repeated).
struct WideColumn {
  const uint32_t* table;
  uint8_t only_symbol;
};

// Scalar decoding of one column run of `units` * 32 rows to o, o + row_len, ... with the 32
// lanes' states in memory (the fallback where the vectorised decoder cannot run); needs 64
// readable bytes per unit at p.
template <int kRowLen>
const uint8_t* DecodeColumnRunWideScalar(uint8_t* o, size_t units, size_t row_len,
                                         const DecodeContext* c, const uint8_t* p,
                                         uint32_t* states) {
  for (size_t g = 0; g < 4 * units; ++g, o += 8 * row_len) {
    p = DecodeColumnRun<8, kRowLen>(o, 1, row_len, c, p, states + 8 * (g % 4));
  }
  return p;
}

// One column run of `rows` rows (a multiple of 32, starting in lane 0) into out, out + stride,
// ...: vectorised when `wide` is set (then stride must be 1: the caller transposes), scalar
// otherwise.
template <int kRowLen>
bool DecodeRunWide(uint8_t* out, size_t stride, size_t rows, const DecodeContext* c,
                   const WideColumn* wide, const uint8_t** pos, const uint8_t* end,
                   uint32_t* states) {
  const uint8_t* p = *pos;
  if (wide != nullptr && wide->table == nullptr) {
    for (size_t r = 0; r < rows; ++r) out[r * stride] = wide->only_symbol;
    return true;
  }
  // Whole units while their worst case is available (most use far fewer bytes, so the count
  // is re-derived until it runs out), then the rest with checks.
  size_t r = 0;
  for (;;) {
    const size_t units = std::min((rows - r) / kWideLanes, static_cast<size_t>(end - p) / 64);
    if (units == 0) break;
    p = wide != nullptr ? rans_wide::DecodeRun(wide->table, out + r, units, p, states)
                        : DecodeColumnRunWideScalar<kRowLen>(out + r * stride, units, stride, c,
                                                              p, states);
    r += units * kWideLanes;
  }
  for (; r < rows; ++r) {
    if (!DecodeStepChecked(states[r % kWideLanes], c, p, end, &out[r * stride])) return false;
  }
  *pos = p;
  return true;
}

// DecodeAllOrders for 32 lanes. `col_wide` is null when the vectorised decoder is not used.
bool DecodeAllOrdersWide(std::span<uint8_t> out, size_t row_len, int num_contexts,
                         const DecodeContext* const* col_ctx, const WideColumn* col_wide,
                         const uint8_t** pos, const uint8_t* end, uint32_t* states) {
  const size_t n = out.size();
  const size_t rows = BlockedRows(n, row_len, num_contexts);
  if (rows > 0) {
    // Vectorised, a block's columns are decoded into a column-major scratch block and
    // transposed; scalar, each symbol goes straight to its row-major position.
    std::vector<uint8_t> scratch(col_wide != nullptr ? kBlockRows * row_len : 0);
    for (size_t r0 = 0; r0 < rows; r0 += kBlockRows) {
      const size_t block_rows = std::min(kBlockRows, rows - r0);
      uint8_t* const block = out.data() + r0 * row_len;
      for (size_t col = 0; col < row_len; ++col) {
        const bool ok =
            col_wide != nullptr
                ? DecodeRunWide<1>(scratch.data() + col * block_rows, 1, block_rows,
                                   col_ctx[col], col_wide + col, pos, end, states)
            : row_len == 64
                ? DecodeRunWide<64>(block + col, 64, block_rows, col_ctx[col], nullptr, pos, end,
                                    states)
                : DecodeRunWide<0>(block + col, row_len, block_rows, col_ctx[col], nullptr, pos,
                                   end, states);
        if (!ok) return false;
      }
      if (col_wide != nullptr) rans_wide::Transpose(scratch.data(), block_rows, row_len, block);
    }
  }
  // Plain order: with one context a single column run of row length 1, else the short tail.
  uint8_t* dst = out.data() + rows * row_len;
  const size_t m = n - rows * row_len;
  size_t i = 0;
  if (num_contexts == 1) {
    i = m - m % kWideLanes;
    if (!DecodeRunWide<1>(dst, 1, i, col_ctx[0], col_wide, pos, end, states)) return false;
  }
  const uint8_t* p = *pos;
  for (size_t col = i % row_len; i < m; ++i) {
    if (!DecodeStepChecked(states[i % kWideLanes], col_ctx[col], p, end, &dst[i])) return false;
    col = col + 1 == row_len ? 0 : col + 1;
  }
  *pos = p;
  return true;
}

template <int kLanes>
bool DecodeAllOrders(std::span<uint8_t> out, size_t row_len, int num_contexts,
                     const DecodeContext* const* col_ctx, const uint8_t** pos,
                     const uint8_t* end, uint32_t* states) {
  const size_t rows = BlockedRows(out.size(), row_len, num_contexts);
  if (rows > 0) {
    const bool ok = row_len == 64
                        ? DecodeBlocked<kLanes, 64>(out.data(), rows, row_len, col_ctx, pos, end,
                                                    states)
                        : DecodeBlocked<kLanes, 0>(out.data(), rows, row_len, col_ctx, pos, end,
                                                   states);
    if (!ok) return false;
  }
  return DecodeAll<kLanes>(out.subspan(rows * row_len), row_len, num_contexts, col_ctx, pos, end,
                           states);
}

}  // namespace

absl::Status ReadRansHead(const uint8_t*& p, const uint8_t* end, uint64_t num_symbols,
                          int row_len, int alphabet_bits, RansStreamHead* head) {
  if (alphabet_bits < 1 || alphabet_bits > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("rANS: alphabet_bits ", alphabet_bits, " outside 1..8"));
  }
  if (row_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("rANS: row_len ", row_len, " < 1"));
  }
  if (end - p < 3) return absl::DataLossError("rANS stream truncated in its header");
  if (p[0] != kTag) {
    return absl::DataLossError(absl::StrCat("not a rANS stream of version 3 (tag ", p[0], ")"));
  }
  const int stream_bits = p[1] & 0x0f;
  const int lanes_lg = (p[1] >> 4) & 0x0f;
  const int ctx_lg = p[2];
  if (stream_bits != alphabet_bits) {
    return absl::InvalidArgumentError(absl::StrCat("rANS stream has alphabet_bits ", stream_bits,
                                                   ", caller expects ", alphabet_bits));
  }
  if (lanes_lg > kMaxLanesLog2 || lanes_lg == 4) {  // 1, 2, 4, 8 or 32 lanes
    return absl::DataLossError(absl::StrCat("rANS stream: bad lane count field ", lanes_lg));
  }
  if (ctx_lg > kMaxContextsLog2 || (1 << ctx_lg) > row_len) {
    return absl::DataLossError(
        absl::StrCat("rANS stream: bad context count 2^", ctx_lg, " for row_len ", row_len));
  }
  p += 3;
  uint32_t stream_row_len;
  if (!GetVarint(p, end, stream_row_len)) {
    return absl::DataLossError("rANS stream truncated in its header");
  }
  if (stream_row_len != static_cast<uint32_t>(row_len)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rANS stream has row_len ", stream_row_len, ", caller expects ", row_len));
  }
  const int nc = 1 << ctx_lg;
  head->num_contexts = nc;
  head->lanes = 1 << lanes_lg;
  head->alphabet = 1 << alphabet_bits;
  // Which contexts hold symbols: all of them once a full row exists (num_contexts <= row_len
  // makes the column -> context map onto), else those of columns 0..n-1.
  const uint64_t rl = static_cast<uint64_t>(row_len);
  head->used_contexts = num_symbols >= rl  ? static_cast<uint32_t>(nc)
                        : num_symbols == 0 ? 0
                                           : ContextOfColumn(num_symbols - 1, row_len, nc) + 1;
  head->blocked_rows = BlockedRows(num_symbols, rl, nc);
  return absl::OkStatus();
}

absl::Status ReadRansTable(const uint8_t*& p, const uint8_t* end, const RansStreamHead& head,
                           int c, uint16_t* freq) {
  KVC_RETURN_IF_ERROR(ReadTable(p, end, head.alphabet, c, freq));
  const bool empty = std::all_of(freq, freq + head.alphabet, [](uint16_t f) { return f == 0; });
  const bool used = static_cast<uint32_t>(c) < head.used_contexts;
  if (empty == used) {
    return absl::DataLossError(absl::StrCat(
        "rANS table ", c,
        used ? " is empty but holds symbols" : " is not empty but holds no symbols"));
  }
  return absl::OkStatus();
}

absl::Status ReadRansStates(const uint8_t*& p, const uint8_t* end, const RansStreamHead& head,
                            uint64_t num_symbols, uint32_t (&states)[32]) {
  const uint64_t used_lanes = std::min<uint64_t>(head.lanes, num_symbols);
  if (static_cast<uint64_t>(end - p) < 4 * used_lanes) {
    return absl::DataLossError("rANS stream truncated in its final states");
  }
  for (int j = 0; j < 32; ++j) states[j] = kStateLow;
  for (uint64_t j = 0; j < used_lanes; ++j, p += 4) {
    states[j] = Load32(p);
    if (states[j] < kStateLow) {
      return absl::DataLossError(absl::StrCat("rANS lane ", j, " has an invalid state"));
    }
  }
  return absl::OkStatus();
}

absl::Status RansDecode(std::span<const uint8_t> in, int row_len, int alphabet_bits,
                        std::span<uint8_t> out) {
  const uint8_t* p = in.data();
  const uint8_t* const end = p + in.size();
  const size_t n = out.size();
  RansStreamHead head;
  KVC_RETURN_IF_ERROR(ReadRansHead(p, end, n, row_len, alphabet_bits, &head));
  const int nc = head.num_contexts;
  const int lanes = head.lanes;
  const size_t rl = static_cast<size_t>(row_len);
  const size_t cols = std::min(rl, n);

  // Left uninitialised: a used context's slots (they sum to M) and its alphabet's freq/cum
  // entries are all written below, and nothing else is read.
  DecodeContext* const contexts =
      ThreadBuffer<DecodeContext, 0>(std::max<uint32_t>(head.used_contexts, 1));
  for (int c = 0; c < nc; ++c) {
    uint16_t freq[256];
    KVC_RETURN_IF_ERROR(ReadRansTable(p, end, head, c, freq));
    if (static_cast<uint32_t>(c) >= head.used_contexts) continue;
    DecodeContext& dc = contexts[c];
    uint32_t cum = 0;
    for (int s = 0; s < head.alphabet; ++s) {
      dc.fc[s] = {freq[s], static_cast<uint16_t>(cum)};
      if (freq[s] == 0) continue;
      std::memset(dc.sym + cum, s, freq[s]);
      cum += freq[s];
    }
  }
  uint32_t states[kWideLanes];
  KVC_RETURN_IF_ERROR(ReadRansStates(p, end, head, n, states));

  std::vector<const DecodeContext*> col_ctx(std::max<size_t>(cols, 1), contexts);
  for (size_t c = 0; c < cols; ++c) col_ctx[c] = &contexts[ContextOfColumn(c, row_len, nc)];
  const DecodeContext* const* cc = col_ctx.data();
  bool ok = false;
  if (lanes == kWideLanes) {
    // The vectorised decoder's tables: 16 KiB per context, built only where it runs.
    std::vector<WideColumn> col_wide;
    if (rans_wide::Available() && n >= kWideLaneMinSymbols / 2) {
      uint32_t* const slot_tables =
          ThreadBuffer<uint32_t, 1>(static_cast<size_t>(head.used_contexts) * kProbScale);
      std::vector<WideColumn> ctx_wide(head.used_contexts);
      for (uint32_t c = 0; c < head.used_contexts; ++c) {
        const DecodeContext& dc = contexts[c];
        if (dc.fc[dc.sym[0]].freq == kProbScale) {
          ctx_wide[c] = {nullptr, dc.sym[0]};
          continue;
        }
        uint16_t freq[256];
        for (int s = 0; s < head.alphabet; ++s) freq[s] = dc.fc[s].freq;
        uint32_t* t = slot_tables + static_cast<size_t>(c) * kProbScale;
        rans_wide::BuildSlotTable(freq, head.alphabet, t);
        ctx_wide[c] = {t, 0};
      }
      col_wide.resize(std::max<size_t>(cols, 1));
      for (size_t c = 0; c < cols; ++c) col_wide[c] = ctx_wide[ContextOfColumn(c, row_len, nc)];
    }
    ok = DecodeAllOrdersWide(out, rl, nc, cc, col_wide.empty() ? nullptr : col_wide.data(), &p,
                             end, states);
  } else {
  switch (lanes) {
    case 1:
      ok = DecodeAllOrders<1>(out, rl, nc, cc, &p, end, states);
      break;
    case 2:
      ok = DecodeAllOrders<2>(out, rl, nc, cc, &p, end, states);
      break;
    case 4:
      ok = DecodeAllOrders<4>(out, rl, nc, cc, &p, end, states);
      break;
    default:
      ok = DecodeAllOrders<8>(out, rl, nc, cc, &p, end, states);
      break;
  }
  }
  if (!ok) return absl::DataLossError("rANS stream truncated: word stream ran out");
  if (p != end) {
    return absl::DataLossError(
        absl::StrCat("rANS stream corrupt: ", end - p, " bytes left after the last symbol"));
  }
  for (int j = 0; j < lanes; ++j) {
    if (states[j] != kStateLow) {
      return absl::DataLossError(
          absl::StrCat("rANS stream corrupt: lane ", j, " did not end in the initial state"));
    }
  }
  return absl::OkStatus();
}

double ContextEntropyBytes(std::span<const uint8_t> symbols, int row_len, int num_contexts) {
  if (row_len < 1 || num_contexts < 1) return 0.0;
  std::vector<uint32_t> hist(static_cast<size_t>(num_contexts) * 256, 0);
  size_t col = 0;
  for (uint8_t s : symbols) {
    ++hist[ContextOfColumn(col, row_len, num_contexts) * 256 + s];
    if (++col == static_cast<size_t>(row_len)) col = 0;
  }
  double bits = 0.0;
  for (int c = 0; c < num_contexts; ++c) {
    const uint32_t* h = hist.data() + static_cast<size_t>(c) * 256;
    uint64_t total = 0;
    for (int s = 0; s < 256; ++s) total += h[s];
    bits += HistogramBits(h, 256, total);
  }
  return bits / 8.0;
}

int RansNumContexts(std::span<const uint8_t> encoded) {
  if (encoded.size() < 3 || encoded[0] != kTag || encoded[2] > kMaxContextsLog2) return 0;
  return 1 << encoded[2];
}

}  // namespace kvcodec

