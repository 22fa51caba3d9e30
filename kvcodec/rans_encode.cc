// The rANS encoder (stream format at the top of rans.cc).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "kvcodec/rans.h"
#include "kvcodec/rans_internal.h"
#include "kvcodec/rans_wide.h"

namespace kvcodec {

namespace {

using namespace rans_internal;  // NOLINT: the format's constants and shared helpers

// The encoder's reciprocal shift: x / f == (x * ceil(2^44 / f)) >> 44 for x < f * 2^20 and
// 1 <= f <= 4096 (see EncSymbol).
constexpr int kRcpShift = 44;

// Per (context, symbol) encoding constants. Division by freq is a multiply: with
// rcp = ceil(2^44 / f) and e = rcp * f - 2^44 in [0, f), x * rcp / 2^44 = x / f + x * e /
// (f * 2^44), and for x < f * 2^20 the excess is < (f - 1) / 2^24 < 1 / f (as f <= 4096), less
// than the gap between x / f and the next integer, so the floor is exact. The 64-bit product
// stays below 2^64 because (f - 1) * 2^20 < 2^44 / f for f <= 4096.
struct EncSymbol {
  uint64_t rcp;       // ceil(2^44 / freq)
  uint32_t x_max_m1;  // (freq << 20) - 1: renormalise while x exceeds it
  uint16_t cum;       // cumulative frequency of the smaller symbols
  uint16_t cmpl;      // M - freq: x' = x + cum + q * (M - freq) with q = x / freq
};

EncSymbol MakeEncSymbol(uint32_t freq, uint32_t cum) {
  EncSymbol e{};
  if (freq == 0) return e;  // absent symbol: never used
  e.rcp = ((uint64_t{1} << kRcpShift) + freq - 1) / freq;
  e.x_max_m1 = static_cast<uint32_t>((static_cast<uint64_t>(freq) << (32 - kProbBits)) - 1);
  e.cum = static_cast<uint16_t>(cum);
  e.cmpl = static_cast<uint16_t>(kProbScale - freq);
  return e;
}

// One encode step. `out` points just past the next free word (the stream grows downwards). A
// word is always stored and the pointer moves only when it is needed: whether a word is emitted
// is data-dependent, so a branch would mispredict on a large fraction of symbols; both
// outcomes are computed and selected (conditional moves).
inline uint32_t EncodeStep(uint32_t x, const EncSymbol& e, uint8_t*& out) {
  Store16(out - 2, x);
  SelectIfAbove(e.x_max_m1, x >> 16, out - 2, x, out);
  const uint32_t q = static_cast<uint32_t>((static_cast<uint64_t>(x) * e.rcp) >> kRcpShift);
  return x + e.cum + q * e.cmpl;
}

// Encodes one group of lanes, lane J first and lane 0 last (the decoder's order reversed),
// unrolled by recursion: GCC does not reliably unroll the equivalent downward loop, and the
// states must stay in registers.
template <int J, typename CtxOf>
inline void EncodeGroup(uint32_t* x, CtxOf ctx_of, const uint8_t* sym, uint8_t*& out) {
  if constexpr (J >= 0) {
    x[J] = EncodeStep(x[J], ctx_of(J)[sym[J]], out);
    EncodeGroup<J - 1>(x, ctx_of, sym, out);
  }
}

// Encodes one column run of `groups` groups of 8 rows backwards, `s` pointing just past the
// run's last group (in rows: s - 8 * row_len is the last group's first symbol). The states
// are scalars and the table is loop-invariant (see DecodeColumnRun).
template <int kLanes, int kRowLen>
#if defined(__GNUC__)
__attribute__((noinline))
#endif
uint8_t* EncodeColumnRun(const uint8_t* s, size_t groups, size_t row_len_rt,
                         const EncSymbol* t, uint8_t* out, uint32_t* states) {
  const size_t row_len = kRowLen != 0 ? static_cast<size_t>(kRowLen) : row_len_rt;
  uint32_t x0 = states[0], x1 = states[1 % kLanes], x2 = states[2 % kLanes],
           x3 = states[3 % kLanes], x4 = states[4 % kLanes], x5 = states[5 % kLanes],
           x6 = states[6 % kLanes], x7 = states[7 % kLanes];
  for (; groups > 0; --groups) {
    s -= 8 * row_len;
    if constexpr (kLanes == 8) {
      x7 = EncodeStep(x7, t[s[7 * row_len]], out);
      x6 = EncodeStep(x6, t[s[6 * row_len]], out);
      x5 = EncodeStep(x5, t[s[5 * row_len]], out);
      x4 = EncodeStep(x4, t[s[4 * row_len]], out);
      x3 = EncodeStep(x3, t[s[3 * row_len]], out);
      x2 = EncodeStep(x2, t[s[2 * row_len]], out);
      x1 = EncodeStep(x1, t[s[1 * row_len]], out);
      x0 = EncodeStep(x0, t[s[0 * row_len]], out);
    } else {
      uint32_t* const xs[8] = {&x0, &x1, &x2, &x3, &x4, &x5, &x6, &x7};
#pragma GCC unroll 8
      for (int k = 7; k >= 0; --k) {
        uint32_t& x = *xs[k % kLanes];
        x = EncodeStep(x, t[s[k * row_len]], out);
      }
    }
  }
  const uint32_t x[8] = {x0, x1, x2, x3, x4, x5, x6, x7};
  for (int j = 0; j < kLanes; ++j) states[j] = x[j];
  return out;
}

// EncodeColumnRun for 32 lanes: `units` units of 32 rows, `s` just past the run's last unit.
// The run starts at a coded position that is a multiple of 32, so row k of a unit is in lane
// k; the 8 states of each group of 8 rows are loaded into registers for that group.
template <int kRowLen>
#if defined(__GNUC__)
__attribute__((noinline))
#endif
uint8_t* EncodeColumnRunWide(const uint8_t* s, size_t units, size_t row_len_rt,
                             const EncSymbol* t, uint8_t* out, uint32_t* states) {
  const size_t row_len = kRowLen != 0 ? static_cast<size_t>(kRowLen) : row_len_rt;
  for (size_t g = 4 * units; g-- > 0;) {
    s -= 8 * row_len;
    uint32_t* const xs = states + 8 * (g % 4);
    uint32_t x0 = xs[0], x1 = xs[1], x2 = xs[2], x3 = xs[3], x4 = xs[4], x5 = xs[5],
             x6 = xs[6], x7 = xs[7];
    x7 = EncodeStep(x7, t[s[7 * row_len]], out);
    x6 = EncodeStep(x6, t[s[6 * row_len]], out);
    x5 = EncodeStep(x5, t[s[5 * row_len]], out);
    x4 = EncodeStep(x4, t[s[4 * row_len]], out);
    x3 = EncodeStep(x3, t[s[3 * row_len]], out);
    x2 = EncodeStep(x2, t[s[2 * row_len]], out);
    x1 = EncodeStep(x1, t[s[1 * row_len]], out);
    x0 = EncodeStep(x0, t[s[0 * row_len]], out);
    xs[0] = x0, xs[1] = x1, xs[2] = x2, xs[3] = x3, xs[4] = x4, xs[5] = x5, xs[6] = x6,
    xs[7] = x7;
  }
  return out;
}

// EncodeAll for 32 lanes. With one context plain order is a column run of row length 1 (all of
// the stream's symbols); otherwise it is the short tail after the blocked rows. `col_wide`
// (per column, null when the vectorised encoder does not run) are rans_wide's tables.
uint8_t* EncodeAllWide(std::span<const uint8_t> symbols, size_t row_len, int num_contexts,
                       const EncSymbol* const* col_ctx,
                       const rans_wide::EncodeTable* const* col_wide, uint8_t* out,
                       uint32_t* states) {
  const size_t n = symbols.size();
  const uint8_t* sym = symbols.data();
  size_t i = n;
  size_t col = n == 0 ? 0 : (n - 1) % row_len;
  const size_t full = num_contexts == 1 ? n - n % kWideLanes : 0;
  while (i > full) {
    --i;
    uint32_t& x = states[i % kWideLanes];
    x = EncodeStep(x, col_ctx[col][sym[i]], out);
    col = (col == 0 ? row_len : col) - 1;
  }
  if (col_wide != nullptr) return rans_wide::EncodeRun(*col_wide[0], sym, i / kWideLanes, out, states);
  return EncodeColumnRunWide<1>(sym + i, i / kWideLanes, 1, col_ctx[0], out, states);
}

// EncodeBlocked for 32 lanes with the vectorised encoder: each block is first transposed to
// column-major order, so that a column run's symbols are contiguous.
uint8_t* EncodeBlockedVectorised(const uint8_t* sym, size_t rows, size_t row_len,
                                 const rans_wide::EncodeTable* const* col_wide, uint8_t* out,
                                 uint32_t* states) {
  std::vector<uint8_t> columns(kBlockRows * row_len);
  const size_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  for (size_t b = blocks; b-- > 0;) {
    const size_t r0 = b * kBlockRows;
    const size_t block_rows = std::min(kBlockRows, rows - r0);
    rans_wide::Transpose(sym + r0 * row_len, row_len, block_rows, columns.data());
    for (size_t col = row_len; col-- > 0;) {
      out = rans_wide::EncodeRun(*col_wide[col], columns.data() + col * block_rows,
                                 block_rows / kWideLanes, out, states);
    }
  }
  return out;
}

// Encodes symbols in plain order with kLanes lanes, starting from and updating `states`
// (symbols[0] is at column 0 and in lane 0). `col_ctx[c]`
// is the 256-entry EncSymbol table of column c's context. `out` is one past the end of a
// region of at least 2 * n bytes; returns the first byte of the written words.
template <int kLanes>
uint8_t* EncodeAll(std::span<const uint8_t> symbols, size_t row_len, int num_contexts,
                   const EncSymbol* const* col_ctx, uint8_t* out, uint32_t* states) {
  const size_t n = symbols.size();
  uint32_t x[kLanes];
  std::copy(states, states + kLanes, x);
  const uint8_t* sym = symbols.data();
  size_t i = n;
  size_t col = n == 0 ? 0 : (n - 1) % row_len;  // column of symbol i - 1
  // The tail past the last full group of lanes, from the end, one symbol at a time.
  const size_t full = n - n % kLanes;
  while (i > full) {
    --i;
    const size_t lane = i % kLanes;
    x[lane] = EncodeStep(x[lane], col_ctx[col][sym[i]], out);
    col = (col == 0 ? row_len : col) - 1;
  }
  if (num_contexts == 1) {
    // One table: no column bookkeeping.
    // Plain order is a column run with row length 1; i % 8 != 0 only with one lane.
    const EncSymbol* t = col_ctx[0];
    const size_t lead = i % 8;
    out = EncodeColumnRun<kLanes, 1>(sym + i, (i - lead) / 8, 1, t, out, x);
    for (i = lead; i > 0;) {
      --i;
      x[i % kLanes] = EncodeStep(x[i % kLanes], t[sym[i]], out);
    }
  } else if (row_len % kLanes == 0) {
    // Groups never straddle a row end: i is a multiple of kLanes, so is the group's first
    // column, and the column only wraps between groups.
    size_t c0 = col + 1 - kLanes;  // first column of the group ending at column `col`
    while (i > 0) {
      i -= kLanes;
      const EncSymbol* const* ctx = col_ctx + c0;
      c0 = (c0 == 0 ? row_len : c0) - kLanes;
      EncodeGroup<kLanes - 1>(
          x, [ctx](int j) { return ctx[j]; }, sym + i, out);
    }
  } else {
    while (i > 0) {
      i -= kLanes;
#pragma GCC unroll 8
      for (int k = 0; k < kLanes; ++k) {
        const int j = kLanes - 1 - k;
        x[j] = EncodeStep(x[j], col_ctx[col][sym[i + j]], out);
        col = (col == 0 ? row_len : col) - 1;
      }
    }
  }
  std::copy(x, x + kLanes, states);
  return out;
}

// Encodes `rows` full rows (a multiple of 8) in blocked column order (see the format comment),
// backwards, starting from and updating `states`. Within a column run every group of 8 rows
// starts at a coded position that is a multiple of 8, so row k of a group is in lane
// k % kLanes.
template <int kLanes, int kRowLen>
uint8_t* EncodeBlocked(const uint8_t* sym, size_t rows, size_t row_len_rt,
                       const EncSymbol* const* col_ctx, uint8_t* out, uint32_t* states) {
  const size_t row_len = kRowLen != 0 ? static_cast<size_t>(kRowLen) : row_len_rt;
  const size_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  for (size_t b = blocks; b-- > 0;) {
    const size_t r0 = b * kBlockRows;
    const size_t block_rows = std::min(kBlockRows, rows - r0);
    for (size_t col = row_len; col-- > 0;) {
      const uint8_t* const run_end = sym + (r0 + block_rows) * row_len + col;
      if constexpr (kLanes == kWideLanes) {
        out = EncodeColumnRunWide<kRowLen>(run_end, block_rows / kWideLanes, row_len,
                                           col_ctx[col], out, states);
      } else {
        out = EncodeColumnRun<kLanes, kRowLen>(run_end, block_rows / 8, row_len, col_ctx[col],
                                               out, states);
      }
    }
  }
  return out;
}

template <int kLanes>
uint8_t* EncodeBlockedRows(const uint8_t* sym, size_t rows, size_t row_len,
                           const EncSymbol* const* col_ctx, uint8_t* out, uint32_t* states) {
  if (rows == 0) return out;
  return row_len == 64 ? EncodeBlocked<kLanes, 64>(sym, rows, row_len, col_ctx, out, states)
                       : EncodeBlocked<kLanes, 0>(sym, rows, row_len, col_ctx, out, states);
}

}  // namespace

std::vector<uint8_t> RansEncode(std::span<const uint8_t> symbols, int row_len, int alphabet_bits) {
  const RansPieces pieces = RansEncodePieces(symbols, row_len, alphabet_bits);
  std::vector<uint8_t> result;
  result.reserve(pieces.size());
  result.insert(result.end(), pieces.head.begin(), pieces.head.end());
  result.insert(result.end(), pieces.words.begin(), pieces.words.end());
  return result;
}

RansPieces RansEncodePieces(std::span<const uint8_t> symbols, int row_len, int alphabet_bits) {
  // Preconditions (row_len >= 1, alphabet_bits in 1..8) are clamped rather than trusted so a
  // caller bug cannot corrupt memory; symbols.size() must be < 2^32 (counts are 32-bit).
  row_len = std::max(row_len, 1);
  alphabet_bits = std::clamp(alphabet_bits, 1, 8);
  const size_t n = symbols.size();
  const size_t rl = static_cast<size_t>(row_len);
  const size_t cols = std::min(rl, n);

  // A symbol outside the alphabet breaks the caller's contract; code it with 8-bit tables so
  // the stream stays self-consistent and the decoder (given the caller's alphabet_bits)
  // reports the mismatch instead of returning wrong data. The OR also keeps the histogram
  // indexing below in bounds.
  if ((OrAllBytes(symbols) >> alphabet_bits) != 0) alphabet_bits = 8;
  const int alphabet = 1 << alphabet_bits;

  // Histogram per finest context, levels[max_lg][context * alphabet + symbol]. The finest
  // split is capped so that contexts average at least max(32, alphabet / 2) symbols: a context
  // of fewer symbols than half the alphabet has a table about as large as its coded data, so
  // only near-constant columns could gain from it, and the cap keeps the fixed cost of short
  // streams low (every candidate split is scanned alphabet-wide).
  const size_t min_per_context = std::max<size_t>(kMinSymbolsPerContext, alphabet / 2);
  int max_lg = MaxContextsLog2(row_len);
  while (max_lg > 0 && (n >> max_lg) < min_per_context) --max_lg;
  const int max_nc = 1 << max_lg;
  const size_t per_level = static_cast<size_t>(max_nc) * alphabet;
  std::vector<std::vector<uint32_t>> levels(max_lg + 1);
  {
    // Increments of one counter back to back wait for each other through memory (on skewed
    // data nearly every symbol is the same), so large inputs count into four copies, chosen by
    // column, and sum them afterwards. Each context's counters start 64 bytes further into a
    // 4 KiB page than the previous one's: with 1 KiB tables, columns 4 apart would otherwise
    // sit at the same offset in different pages, where x86 cores match a load to an earlier
    // store by the low 12 address bits first and can stall it behind the other column's
    // increment (5-9% faster counting of 64-column INT4 symbols, A/B in one process).
    const int copies = n >= (size_t{1} << 16) ? 4 : 1;
    const size_t ctx_stride = static_cast<size_t>(alphabet) + 16;
    const size_t copy_stride = static_cast<size_t>(max_nc) * ctx_stride + 8;
    std::vector<uint32_t> sub(copies * copy_stride, 0);
    const uint8_t* sym = symbols.data();
    if (max_nc == 1) {
      size_t i = 0;
      if (copies == 4) {
        for (; i + 4 <= n; i += 4) {
          ++sub[sym[i]];
          ++sub[copy_stride + sym[i + 1]];
          ++sub[2 * copy_stride + sym[i + 2]];
          ++sub[3 * copy_stride + sym[i + 3]];
        }
      }
      for (; i < n; ++i) ++sub[sym[i]];
    } else {
      std::vector<uint32_t> ctx_off(cols);
      for (size_t c = 0; c < cols; ++c) {
        ctx_off[c] = static_cast<uint32_t>(ContextOfColumn(c, row_len, max_nc) * ctx_stride);
      }
      size_t r0 = 0;
      if (copies == 4) {
        // Column by column within blocks of rows (copies by row % 4), so that a column's
        // counters stay in L1 while its part of the block is counted; in row order every row
        // walks all contexts' tables (25% faster on 64-column INT4 symbols, A/B in one process).
        constexpr size_t kHistBlockRows = 256;
        const size_t full_rows = n / rl;
        while (full_rows - r0 >= 4) {
          const size_t nr = std::min(kHistBlockRows, (full_rows - r0) & ~size_t{3});
          const uint8_t* block = sym + r0 * rl;
          for (size_t c = 0; c < cols; ++c) {
            uint32_t* h = sub.data() + ctx_off[c];
            const uint8_t* p = block + c;
            for (size_t r = 0; r < nr; r += 4, p += 4 * rl) {
              ++h[p[0]];
              ++h[copy_stride + p[rl]];
              ++h[2 * copy_stride + p[2 * rl]];
              ++h[3 * copy_stride + p[3 * rl]];
            }
          }
          r0 += nr;
        }
      }
      // The rest (fewer than 4 full rows, and a partial last row) in row order.
      for (size_t base = r0 * rl; base < n; base += rl) {
        const size_t m = std::min(rl, n - base);
        const uint8_t* row = sym + base;
        for (size_t c = 0; c < m; ++c) ++sub[ctx_off[c] + row[c]];
      }
    }
    std::vector<uint32_t> finest(per_level, 0);
    for (int k = 0; k < copies; ++k) {
      for (int c = 0; c < max_nc; ++c) {
        const uint32_t* from = sub.data() + k * copy_stride + c * ctx_stride;
        uint32_t* to = finest.data() + static_cast<size_t>(c) * alphabet;
        for (int sy = 0; sy < alphabet; ++sy) to[sy] += from[sy];
      }
    }
    levels[max_lg] = std::move(finest);
  }

  // Symbols per finest context, from the column counts.
  std::vector<std::vector<uint64_t>> totals(max_lg + 1);
  totals[max_lg].assign(max_nc, 0);
  for (size_t c = 0; c < cols; ++c) {
    totals[max_lg][ContextOfColumn(c, row_len, max_nc)] += n / rl + (c < n % rl ? 1 : 0);
  }

  // Pick the split, coarsening pairwise (the splits nest); ties prefer fewer contexts.
  int best_lg = 0;
  double best_cost = HUGE_VAL;
  for (int lg = max_lg; lg >= 0; --lg) {
    const int nc = 1 << lg;
    if (lg < max_lg) {
      const uint32_t* finer = levels[lg + 1].data();
      levels[lg].resize(static_cast<size_t>(nc) * alphabet);
      uint32_t* coarse = levels[lg].data();
      totals[lg].resize(nc);
      for (int c = 0; c < nc; ++c) {
        const uint32_t* a = finer + 2 * c * alphabet;
        for (int s = 0; s < alphabet; ++s) coarse[c * alphabet + s] = a[s] + a[alphabet + s];
        totals[lg][c] = totals[lg + 1][2 * c] + totals[lg + 1][2 * c + 1];
      }
    }
    double cost = 0.0;
    for (int c = 0; c < nc; ++c) {
      cost += EstimateContextBytes(levels[lg].data() + c * alphabet, alphabet, totals[lg][c]);
    }
    if (cost <= best_cost) {
      best_cost = cost;
      best_lg = lg;
    }
  }
  const int nc = 1 << best_lg;
  const std::vector<uint32_t>& counts = levels[best_lg];

  // A stream whose every context holds one symbol decodes without touching its states (see
  // rans_wide.h), so it gets one lane whatever its length.
  bool all_single = true;
  for (size_t i = 0; i < counts.size() && all_single; i += alphabet) {
    all_single = std::count_if(counts.begin() + i, counts.begin() + i + alphabet,
                               [](uint32_t c) { return c != 0; }) <= 1;
  }
  const int lanes_lg = all_single                  ? 0
                       : n >= kWideLaneMinSymbols   ? 5
                       : n >= kMultiLaneMinSymbols ? 3
                                                   : 0;
  const int lanes = 1 << lanes_lg;
  const size_t used_lanes = std::min<size_t>(lanes, n);

  // Header and tables; encoder constants per (context, symbol).
  std::vector<uint8_t> out;  // header and tables
  out.reserve(64 + static_cast<size_t>(nc) * 600);
  out.push_back(kTag);
  out.push_back(static_cast<uint8_t>(alphabet_bits | (lanes_lg << 4)));
  out.push_back(static_cast<uint8_t>(best_lg));
  PutVarint(out, static_cast<uint32_t>(row_len));
  std::vector<EncSymbol> table(static_cast<size_t>(nc) * alphabet);
  std::vector<uint16_t> freqs(static_cast<size_t>(nc) * alphabet);
  for (int c = 0; c < nc; ++c) {
    const uint32_t* h = counts.data() + c * alphabet;
    uint64_t total = 0;
    for (int s = 0; s < alphabet; ++s) total += h[s];
    uint16_t* const freq = freqs.data() + c * alphabet;
    NormalizeCounts(h, alphabet, total, freq);
    WriteTable(out, freq, alphabet);
    uint32_t cum = 0;
    for (int s = 0; s < alphabet; ++s) {
      table[c * alphabet + s] = MakeEncSymbol(freq[s], cum);
      cum += freq[s];
    }
  }
  std::vector<const EncSymbol*> col_ctx(std::max<size_t>(cols, 1), table.data());
  for (size_t c = 0; c < cols; ++c) {
    col_ctx[c] = table.data() + ContextOfColumn(c, row_len, nc) * alphabet;
  }

  // Words are written back to front into an uninitialised scratch buffer of the worst-case
  // size (one word per symbol, and 16 bytes more in front: the vectorised encoder stores 16
  // bytes below each new word), which the caller copies once, behind the head. The scratch is
  // kept per thread: streams are coded one after another, and a fresh buffer would cost page
  // faults on every page the words touch (more than the vectorised coding of those words).
  thread_local std::unique_ptr<uint8_t[]> scratch;
  thread_local size_t scratch_bytes = 0;
  if (scratch_bytes < 2 * n + 16) {
    scratch.reset();
    scratch.reset(new uint8_t[2 * n + 16]);
    scratch_bytes = 2 * n + 16;
  }
  uint8_t* const words_end = scratch.get() + 2 * n + 16;
  // The coded order is the blocked rows, then the rest in plain order; the encoder runs it
  // backwards.
  uint32_t states[kWideLanes];
  std::fill(states, states + kWideLanes, kStateLow);
  const size_t blocked_rows = BlockedRows(n, rl, nc);
  const std::span<const uint8_t> plain = symbols.subspan(blocked_rows * rl);
  uint8_t* first = nullptr;
  if (lanes == kWideLanes) {
    std::vector<rans_wide::EncodeTable> wide_tables;
    std::vector<const rans_wide::EncodeTable*> col_wide;
    if (rans_wide::Available()) {
      wide_tables.resize(nc);
      for (int c = 0; c < nc; ++c) {
        rans_wide::BuildEncodeTable(freqs.data() + c * alphabet, alphabet, &wide_tables[c]);
      }
      col_wide.resize(std::max<size_t>(cols, 1), wide_tables.data());
      for (size_t c = 0; c < cols; ++c) {
        col_wide[c] = &wide_tables[ContextOfColumn(c, row_len, nc)];
      }
    }
    const rans_wide::EncodeTable* const* cw = col_wide.empty() ? nullptr : col_wide.data();
    first = EncodeAllWide(plain, rl, nc, col_ctx.data(), cw, words_end, states);
    first = cw != nullptr
                ? EncodeBlockedVectorised(symbols.data(), blocked_rows, rl, cw, first, states)
                : EncodeBlockedRows<kWideLanes>(symbols.data(), blocked_rows, rl, col_ctx.data(),
                                                first, states);
  } else if (lanes == 8) {
    first = EncodeAll<8>(plain, rl, nc, col_ctx.data(), words_end, states);
    first = EncodeBlockedRows<8>(symbols.data(), blocked_rows, rl, col_ctx.data(), first, states);
  } else {
    first = EncodeAll<1>(plain, rl, nc, col_ctx.data(), words_end, states);
    first = EncodeBlockedRows<1>(symbols.data(), blocked_rows, rl, col_ctx.data(), first, states);
  }
  for (size_t j = 0; j < used_lanes; ++j) {
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<uint8_t>(states[j] >> (8 * b)));
  }
  return {std::move(out), std::span<const uint8_t>(first, words_end)};
}

}  // namespace kvcodec
