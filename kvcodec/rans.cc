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
#include <array>
#include <cmath>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kvcodec/rans_wide.h"
#include "kvcodec/wire.h"

namespace kvcodec {

namespace {

constexpr int kProbBits = 12;
constexpr uint32_t kProbScale = 1u << kProbBits;  // M
constexpr uint32_t kStateLow = 1u << 16;          // L: states live in [L, 2^32)
constexpr int kMaxContextsLog2 = 6;               // at most 64 contexts
constexpr int kMaxLanesLog2 = 5;                  // at most 32 lanes
constexpr int kWideLanes = rans_wide::kLanes;     // 32
constexpr uint8_t kTag = 0xB3;
// Rows per block of the blocked column order (part of the format; see the top of the file).
constexpr size_t kBlockRows = 256;
// Streams shorter than this use one lane: 7 extra final states (28 bytes) would be a visible
// overhead, and such streams decode in microseconds anyway.
constexpr size_t kMultiLaneMinSymbols = 4096;
// Streams from this length on use 32 lanes (vectorised decoding, see rans_wide.h); their 128
// bytes of final states are then under 0.1% of the stream for quantized KV codes.
constexpr size_t kWideLaneMinSymbols = size_t{1} << 16;
// The encoder considers only context splits whose contexts average at least this many symbols
// (and at least half the alphabet size).
constexpr size_t kMinSymbolsPerContext = 32;
// The encoder's reciprocal shift: x / f == (x * ceil(2^44 / f)) >> 44 for x < f * 2^20 and
// 1 <= f <= 4096 (see EncSymbol).
constexpr int kRcpShift = 44;

// ---------------------------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------------------------
void PutVarint(std::vector<uint8_t>& out, uint32_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

int VarintSize(uint32_t v) {
  int n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Reads a canonical varint of at most 5 bytes whose value fits 32 bits.
bool GetVarint(const uint8_t*& p, const uint8_t* end, uint32_t& v) {
  uint64_t value = 0;
  for (int i = 0; i < 5; ++i) {
    if (p == end) return false;
    const uint8_t b = *p++;
    value |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      if (i > 0 && b == 0) return false;  // non-canonical: a redundant zero group
      if (value > 0xffffffffull) return false;
      v = static_cast<uint32_t>(value);
      return true;
    }
  }
  return false;
}

inline uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void Store16(uint8_t* p, uint32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  // One 16-bit store: GCC emits the byte-wise form below as two stores.
  const uint16_t w = static_cast<uint16_t>(v);
  std::memcpy(p, &w, 2);
#else
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
#endif
}
inline uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// Bitwise OR of all bytes, eight at a time.
uint8_t OrAllBytes(std::span<const uint8_t> bytes) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    acc |= w;
  }
  for (; i < bytes.size(); ++i) acc |= bytes[i];
  for (int shift = 32; shift >= 8; shift /= 2) acc |= acc >> shift;
  return static_cast<uint8_t>(acc);
}

// floor(log2(min(row_len, 64))): the finest context split the encoder considers.
int MaxContextsLog2(int row_len) {
  int lg = 0;
  while (lg < kMaxContextsLog2 && (2 << lg) <= row_len) ++lg;
  return lg;
}

inline uint32_t ContextOfColumn(uint64_t col, int row_len, int num_contexts) {
  return static_cast<uint32_t>((col * static_cast<uint64_t>(num_contexts)) /
                               static_cast<uint64_t>(row_len));
}

// c * log2(c), with a table for small counts (most counts in small contexts are small).
double CLog2C(uint64_t c) {
  static const std::array<double, 4096> kTable = [] {
    std::array<double, 4096> t{};
    for (size_t i = 1; i < t.size(); ++i) t[i] = static_cast<double>(i) * std::log2(i);
    return t;
  }();
  if (c < kTable.size()) return kTable[c];
  const double d = static_cast<double>(c);
  return d * std::log2(d);
}

// Order-0 entropy in bits of a histogram with `total` symbols.
double HistogramBits(const uint32_t* counts, int alphabet, uint64_t total) {
  if (total == 0) return 0.0;
  double sum = 0.0;
  for (int s = 0; s < alphabet; ++s) sum += CLog2C(counts[s]);
  return std::max(0.0, CLog2C(total) - sum);
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------
// Bytes the presence part of a table takes in run-length form (bitmap form is 1 + ceil(A/8)).
size_t PresenceRunBytes(const uint16_t* freq, int alphabet) {
  size_t bytes = 0;
  int s = 0;
  bool first = true;
  bool want_present = false;
  while (s < alphabet) {
    uint32_t run = 0;
    while (s < alphabet && (freq[s] != 0) == want_present) ++s, ++run;
    bytes += VarintSize(first ? run * 2 : run);
    first = false;
    want_present = !want_present;
  }
  return bytes;
}

// Estimated coded bytes of one context: order-0 entropy of its counts plus its table. The
// table part is approximate (run lengths taken as one byte each, frequencies as their rough
// scaled values); it only has to rank the context splits, and it runs on every context of
// every candidate split, so it is one pass over the counts.
double EstimateContextBytes(const uint32_t* counts, int alphabet, uint64_t total) {
  if (total == 0) return VarintSize(2 * static_cast<uint32_t>(alphabet));
  // varint(f - 1) takes one byte while f ~ counts * M / total <= 128.
  const uint64_t two_byte_from = 129 * total;
  double clogc = 0.0;
  int freq_bytes = 0;
  int transitions = 0;
  bool prev = false;
  for (int s = 0; s < alphabet; ++s) {
    const uint32_t c = counts[s];
    const bool present = c != 0;
    transitions += present != prev;
    prev = present;
    if (!present) continue;
    clogc += CLog2C(c);
    freq_bytes += 1 + (uint64_t{c} * kProbScale >= two_byte_from);
  }
  const double bitmap_bytes = 1 + (alphabet + 7) / 8;
  const double entropy_bytes = std::max(0.0, CLog2C(total) - clogc) / 8.0;
  return entropy_bytes + std::min<double>(1 + transitions, bitmap_bytes) + freq_bytes;
}

// log2(f) for f in 0..M (index 0 unused), used by the normaliser's marginal costs.
const std::array<double, kProbScale + 2>& Log2Table() {
  static const std::array<double, kProbScale + 2> kTable = [] {
    std::array<double, kProbScale + 2> t{};
    for (size_t i = 1; i < t.size(); ++i) t[i] = std::log2(static_cast<double>(i));
    return t;
  }();
  return kTable;
}

// Turns counts into frequencies >= 1 (for present symbols) summing to exactly M that minimise
// the coded size sum_s counts[s] * log2(M / freq[s]). The cost is separable and convex in each
// freq, so: round the scaled counts, walk to the right sum by the cheapest unit steps, then
// move units from the symbol that loses least by giving one up to the symbol that gains most
// by taking one, while that lowers the cost; when no such exchange helps, the allocation is
// optimal. Heaps (with stale entries skipped) keep each step O(log k).
//
// Measured on INT4 key symbols (64 contexts of ~220 symbols): the walk takes ~43 steps (rare
// symbols rounded up to 1 overshoot the sum) and the allocation is then already optimal, so the
// walk's heap holds only the symbols that can take part, and optimality is checked by a scan
// before any exchange heap is built.
void NormalizeCounts(const uint32_t* counts, int alphabet, uint64_t total, uint16_t* freq) {
  std::fill(freq, freq + alphabet, uint16_t{0});
  if (total == 0) return;
  const auto& lg = Log2Table();
  int present[256];
  int k = 0;
  int64_t sum = 0;
  for (int s = 0; s < alphabet; ++s) {
    if (counts[s] == 0) continue;
    present[k++] = s;
    // Round to nearest; keep every present symbol codable.
    uint64_t f = (counts[s] * uint64_t{kProbScale} * 2 + total) / (2 * total);
    f = std::clamp<uint64_t>(f, 1, kProbScale);
    freq[s] = static_cast<uint16_t>(f);
    sum += static_cast<int64_t>(f);
  }
  if (k == 1) {
    freq[present[0]] = kProbScale;
    return;
  }
  // Bits saved by freq[s] + 1, and bits lost by freq[s] - 1 (infinite at 1: must stay codable).
  auto gain = [&](int s) {
    return freq[s] >= kProbScale ? -1.0 : counts[s] * (lg[freq[s] + 1] - lg[freq[s]]);
  };
  auto loss = [&](int s) {
    return freq[s] <= 1 ? HUGE_VAL : counts[s] * (lg[freq[s]] - lg[freq[s] - 1]);
  };
  struct Item {
    double key;
    int sym;
    int freq;  // freq[sym] when pushed; the entry is stale once that changes
  };
  auto by_max = [](const Item& x, const Item& y) { return x.key < y.key; };
  auto by_min = [](const Item& x, const Item& y) { return x.key > y.key; };
  auto push = [&](std::vector<Item>& heap, double key, int sym, auto cmp) {
    heap.push_back({key, sym, freq[sym]});
    std::push_heap(heap.begin(), heap.end(), cmp);
  };
  // Pops stale entries; returns false when the heap is empty.
  auto clean = [&](std::vector<Item>& heap, auto cmp) {
    while (!heap.empty() && heap.front().freq != freq[heap.front().sym]) {
      std::pop_heap(heap.begin(), heap.end(), cmp);
      heap.pop_back();
    }
    return !heap.empty();
  };

  // The walk, as a min-heap of step costs (loss when shrinking, -gain when growing). Each
  // symbol's later steps cost more than its first (convexity), and while steps remain, enough
  // untouched symbols cost at most the steps-th cheapest first step, so only symbols whose
  // first step costs no more than that ever move.
  if (sum != static_cast<int64_t>(kProbScale)) {
    const bool shrink = sum > static_cast<int64_t>(kProbScale);
    auto cost = [&](int s) { return shrink ? loss(s) : -gain(s); };
    int64_t steps = shrink ? sum - kProbScale : kProbScale - sum;
    double first[256];
    for (int i = 0; i < k; ++i) first[i] = cost(present[i]);
    double limit = HUGE_VAL;
    if (steps < k) {
      double sorted[256];
      std::copy(first, first + k, sorted);
      std::nth_element(sorted, sorted + (steps - 1), sorted + k);
      limit = sorted[steps - 1];
    }
    std::vector<Item> heap;
    heap.reserve(2 * k + 8);
    for (int i = 0; i < k; ++i) {
      if (first[i] <= limit) heap.push_back({first[i], present[i], freq[present[i]]});
    }
    std::make_heap(heap.begin(), heap.end(), by_min);
    // k <= 256 < M, so while sum > M some symbol has freq > 1 (finite loss), and while sum < M
    // some symbol has freq < M.
    for (; steps > 0 && clean(heap, by_min); --steps) {
      const int s = heap.front().sym;
      freq[s] = static_cast<uint16_t>(shrink ? freq[s] - 1 : freq[s] + 1);
      push(heap, cost(s), s, by_min);
    }
  }

  // Optimal iff no exchange helps: the largest gain is at most the smallest loss.
  double max_gain = -HUGE_VAL, min_loss = HUGE_VAL;
  for (int i = 0; i < k; ++i) {
    max_gain = std::max(max_gain, gain(present[i]));
    min_loss = std::min(min_loss, loss(present[i]));
  }
  if (max_gain <= min_loss * (1 + 1e-12)) return;
  std::vector<Item> gains, losses;
  gains.reserve(2 * k + 64);
  losses.reserve(2 * k + 64);
  for (int i = 0; i < k; ++i) {
    gains.push_back({gain(present[i]), present[i], freq[present[i]]});
    losses.push_back({loss(present[i]), present[i], freq[present[i]]});
  }
  std::make_heap(gains.begin(), gains.end(), by_max);
  std::make_heap(losses.begin(), losses.end(), by_min);
  // Each exchange lowers the cost, so this ends; the cap only guards against rounding ties.
  for (int round = 0; round < 4 * static_cast<int>(kProbScale); ++round) {
    if (!clean(gains, by_max) || !clean(losses, by_min)) break;
    const int up = gains.front().sym;
    const int down = losses.front().sym;
    // up == down means max gain = gain(s) < loss(s) = min loss: already optimal.
    if (up == down || gains.front().key <= losses.front().key * (1 + 1e-12)) break;
    ++freq[up];
    --freq[down];
    for (int s : {up, down}) {
      push(gains, gain(s), s, by_max);
      push(losses, loss(s), s, by_min);
    }
  }
}

void WriteTable(std::vector<uint8_t>& out, const uint16_t* freq, int alphabet) {
  const size_t bitmap_bytes = static_cast<size_t>(alphabet + 7) / 8;
  if (PresenceRunBytes(freq, alphabet) <= 1 + bitmap_bytes) {
    int s = 0;
    bool first = true;
    bool want_present = false;
    while (s < alphabet) {
      uint32_t run = 0;
      while (s < alphabet && (freq[s] != 0) == want_present) ++s, ++run;
      PutVarint(out, first ? run * 2 : run);
      first = false;
      want_present = !want_present;
    }
  } else {
    out.push_back(1);
    const size_t start = out.size();
    out.resize(start + bitmap_bytes, 0);
    for (int s = 0; s < alphabet; ++s) {
      if (freq[s] != 0) out[start + s / 8] |= static_cast<uint8_t>(1u << (s % 8));
    }
  }
  for (int s = 0; s < alphabet; ++s) {
    if (freq[s] != 0) PutVarint(out, freq[s] - 1u);
  }
}

// Parses one table into freq[0..alphabet) (0 = absent). Bounds-checked; validates the sum.
absl::Status ReadTable(const uint8_t*& p, const uint8_t* end, int alphabet, int ctx,
                       uint16_t* freq) {
  std::fill(freq, freq + alphabet, uint16_t{0});
  bool present[256] = {};
  uint32_t h;
  if (!GetVarint(p, end, h)) {
    return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": truncated or bad varint"));
  }
  if (h == 1) {
    const size_t bitmap_bytes = static_cast<size_t>(alphabet + 7) / 8;
    if (static_cast<size_t>(end - p) < bitmap_bytes) {
      return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": truncated bitmap"));
    }
    for (size_t b = 0; b < bitmap_bytes; ++b) {
      for (int bit = 0; bit < 8; ++bit) {
        if ((p[b] >> bit) & 1) {
          const size_t s = b * 8 + bit;
          if (s >= static_cast<size_t>(alphabet)) {
            return absl::DataLossError(
                absl::StrCat("rANS table ", ctx, ": symbol ", s, " outside the alphabet"));
          }
          present[s] = true;
        }
      }
    }
    p += bitmap_bytes;
  } else if ((h & 1) == 0) {
    uint32_t pos = h / 2;
    if (pos > static_cast<uint32_t>(alphabet)) {
      return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": run past the alphabet"));
    }
    bool is_present = true;
    while (pos < static_cast<uint32_t>(alphabet)) {  // every run is >= 1: at most A rounds
      uint32_t run;
      if (!GetVarint(p, end, run)) {
        return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": truncated runs"));
      }
      if (run == 0 || run > static_cast<uint32_t>(alphabet) - pos) {
        return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": bad run length ", run));
      }
      if (is_present) std::fill(present + pos, present + pos + run, true);
      pos += run;
      is_present = !is_present;
    }
  } else {
    return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": bad presence mode ", h));
  }
  uint32_t sum = 0;
  for (int s = 0; s < alphabet; ++s) {
    if (!present[s]) continue;
    uint32_t v;
    if (!GetVarint(p, end, v)) {
      return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": truncated frequencies"));
    }
    if (v >= kProbScale || sum + v + 1 > kProbScale) {
      return absl::DataLossError(
          absl::StrCat("rANS table ", ctx, ": frequencies exceed ", kProbScale));
    }
    freq[s] = static_cast<uint16_t>(v + 1);
    sum += v + 1;
  }
  if (sum != 0 && sum != kProbScale) {
    return absl::DataLossError(
        absl::StrCat("rANS table ", ctx, ": frequencies sum to ", sum, ", expected ", kProbScale));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------
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

// Branch-free selects for the renormalisation. Whether a state renormalises is data-dependent
// and often near 50/50, so a branch mispredicts constantly; GCC turns the plain conditional
// expression into a jump, so on x86-64 the two conditional moves are spelled out. Elsewhere,
// masks.
template <typename Ptr>
inline void MaskSelect(bool cond, uint32_t new_x, Ptr new_p, uint32_t& x, Ptr& p) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  const uintptr_t pmask = uintptr_t{0} - static_cast<uintptr_t>(cond);
  x ^= (x ^ new_x) & mask;
  p = reinterpret_cast<Ptr>(
      reinterpret_cast<uintptr_t>(p) ^
      ((reinterpret_cast<uintptr_t>(p) ^ reinterpret_cast<uintptr_t>(new_p)) & pmask));
}

// if (x > limit) { x = new_x; p = new_p; }
inline void SelectIfAbove(uint32_t limit, uint32_t new_x, uint8_t* new_p, uint32_t& x,
                          uint8_t*& p) {
#if defined(__x86_64__) && defined(__GNUC__)
  asm("cmpl %[lim], %[x]\n\t"
      "cmoval %[nx], %[x]\n\t"
      "cmovaq %[np], %[p]"
      : [x] "+r"(x), [p] "+r"(p)
      : [lim] "rm"(limit), [nx] "r"(new_x), [np] "r"(new_p)
      : "cc");
#else
  MaskSelect(x > limit, new_x, new_p, x, p);
#endif
}

// if (x < kStateLow) { x = new_x; p = new_p; }
inline void SelectIfLow(uint32_t new_x, const uint8_t* new_p, uint32_t& x, const uint8_t*& p) {
#if defined(__x86_64__) && defined(__GNUC__)
  asm("cmpl %[low], %[x]\n\t"
      "cmovbl %[nx], %[x]\n\t"
      "cmovbq %[np], %[p]"
      : [x] "+r"(x), [p] "+r"(p)
      : [low] "i"(kStateLow), [nx] "r"(new_x), [np] "r"(new_p)
      : "cc");
#else
  MaskSelect(x < kStateLow, new_x, new_p, x, p);
#endif
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
    uint32_t& xs = x[i % kLanes];
    dst[i] = DecodeStep(xs, col_ctx[col]);
    col = col + 1 == row_len ? 0 : col + 1;
    if (xs < kStateLow) {
      if (end - p < 2) return false;
      xs = (xs << 16) | Load16(p);
      p += 2;
    }
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
          uint32_t& xs = states[r % kLanes];
          *o = DecodeStep(xs, c);
          if (xs < kStateLow) {
            if (end - p < 2) return false;
            xs = (xs << 16) | Load16(p);
            p += 2;
          }
        }
      }
    }
  }
  *pos = p;
  return true;
}

// Rows coded in blocked column order: with one context plain order already keeps one table
// hot, so it stays plain; otherwise all full rows rounded down to a multiple of 32.
size_t BlockedRows(size_t n, size_t row_len, int num_contexts) {
  if (num_contexts <= 1 || row_len <= 1) return 0;
  return (n / row_len) & ~size_t{31};
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
    uint32_t& xs = states[r % kWideLanes];
    out[r * stride] = DecodeStep(xs, c);
    if (xs < kStateLow) {
      if (end - p < 2) return false;
      xs = (xs << 16) | Load16(p);
      p += 2;
    }
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
    uint32_t& xs = states[i % kWideLanes];
    dst[i] = DecodeStep(xs, col_ctx[col]);
    col = col + 1 == row_len ? 0 : col + 1;
    if (xs < kStateLow) {
      if (end - p < 2) return false;
      xs = (xs << 16) | Load16(p);
      p += 2;
    }
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

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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
  std::unique_ptr<DecodeContext[]> contexts(
      new DecodeContext[std::max<uint32_t>(head.used_contexts, 1)]);
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

  std::vector<const DecodeContext*> col_ctx(std::max<size_t>(cols, 1), contexts.get());
  for (size_t c = 0; c < cols; ++c) col_ctx[c] = &contexts[ContextOfColumn(c, row_len, nc)];
  const DecodeContext* const* cc = col_ctx.data();
  bool ok = false;
  if (lanes == kWideLanes) {
    // The vectorised decoder's tables: 16 KiB per context, built only where it runs.
    std::unique_ptr<uint32_t[]> slot_tables;
    std::vector<WideColumn> col_wide;
    if (rans_wide::Available() && n >= kWideLaneMinSymbols / 2) {
      slot_tables.reset(new uint32_t[static_cast<size_t>(head.used_contexts) * kProbScale]);
      std::vector<WideColumn> ctx_wide(head.used_contexts);
      for (uint32_t c = 0; c < head.used_contexts; ++c) {
        const DecodeContext& dc = contexts[c];
        if (dc.fc[dc.sym[0]].freq == kProbScale) {
          ctx_wide[c] = {nullptr, dc.sym[0]};
          continue;
        }
        uint16_t freq[256];
        for (int s = 0; s < head.alphabet; ++s) freq[s] = dc.fc[s].freq;
        uint32_t* t = slot_tables.get() + static_cast<size_t>(c) * kProbScale;
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
