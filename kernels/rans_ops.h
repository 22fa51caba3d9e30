// rANS decoding of kvcodec's stream format (kvcodec/rans.cc, version 3) as work-item
// functions shared by the CUDA kernel and the host reference. The host parses and checks each
// stream's header and tables (kernels/rans_plan.h); the kernel runs the word stream.
//
// Parallelism the format allows: a stream's lanes share one word stream, so the word a lane
// reads depends on every earlier renormalisation; its lanes (8 or 32: one warp) can step
// together (each lane's word is the next word plus the number of lower lanes that renormalise
// in the same step, a ballot and a popcount), and streams are independent. Streams of fewer
// than 4096 symbols have one lane and are decoded by a single thread.
#pragma once

#include <cstdint>

#include "kernels/codec_math.h"
#include "kernels/layout.h"

namespace kvwire::gpu {

// Stream outcome (RansDecodeArgs::status): a code in the low 8 bits, and for kRansLeftover the
// bytes left, for kRansBadFinal the first bad lane, above them.
enum RansStatus : uint32_t {
  kRansOk = 0,
  kRansRanOut = 1,       // the word stream ended before the last symbol
  kRansLeftover = 2,     // bytes left after the last symbol
  kRansBadFinal = 3,     // a lane did not end in the encoder's initial state
};
KVW_HD uint64_t RansStatusWord(uint32_t code, uint64_t detail) { return detail << 8 | code; }

struct RansDecodeArgs {
  const RansStreamDesc* streams;
  int64_t num_streams;
  const uint8_t* data;     // stream bytes; stream i's words at streams[i].words_offset
  const RansTable* tables;
  uint8_t* out;
  uint64_t* status;        // one RansStatusWord per stream
};

// Output index and column of coded position k: the first blocked_rows rows are coded in blocks
// of 256 rows (the last block shorter, still a multiple of 32), column by column; the rest in
// plain order.
KVW_HD uint64_t RansOutIndex(const RansStreamDesc& s, uint64_t k, uint32_t* col) {
  const uint64_t rl = s.row_len;
  if (k < s.blocked_rows * rl) {
    const uint64_t block = k / (kRansBlockRows * rl);
    const uint64_t local = k - block * kRansBlockRows * rl;
    const uint64_t left = s.blocked_rows - block * kRansBlockRows;
    const uint64_t rows = left < kRansBlockRows ? left : kRansBlockRows;
    const uint64_t c = local / rows;
    *col = static_cast<uint32_t>(c);
    return (block * kRansBlockRows + local % rows) * rl + c;
  }
  *col = static_cast<uint32_t>(k % rl);
  return k;
}

KVW_HD const RansTable& RansTableOf(const RansDecodeArgs& a, const RansStreamDesc& s, uint32_t col) {
  const uint64_t ctx = static_cast<uint64_t>(col) * s.num_contexts / s.row_len;
  return a.tables[s.tables_offset + ctx];
}

// One decode step: the symbol in x's slot, and x without it.
KVW_HD uint8_t RansStep(const RansTable& t, uint32_t& x) {
  const uint32_t slot = x & (kRansProbScale - 1);
  const uint8_t sym = t.slot_symbol[slot];
  const uint32_t fc = t.freq_cum[sym];
  x = (fc & 0xffffu) * (x >> kRansProbBits) + slot - (fc >> 16);
  return sym;
}

KVW_HD uint32_t RansWord(const RansDecodeArgs& a, const RansStreamDesc& s, uint64_t i) {
  const uint8_t* p = a.data + s.words_offset + 2 * i;
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8;
}

// After the last symbol: every word consumed (kvcodec checks that first), every lane back at L.
KVW_HD uint64_t RansLeftoverBytes(const RansStreamDesc& s, uint64_t pos) {
  return 2 * (s.words_count - pos) + s.odd_byte;
}
KVW_HD uint64_t RansFinish(const RansStreamDesc& s, uint64_t pos, const uint32_t* x) {
  if (RansLeftoverBytes(s, pos) != 0) return RansStatusWord(kRansLeftover, RansLeftoverBytes(s, pos));
  for (uint32_t j = 0; j < s.lanes; ++j) {
    if (x[j] != kRansStateLow) return RansStatusWord(kRansBadFinal, j);
  }
  return kRansOk;
}

// Work item: stream i decoded by one thread, coded position by coded position (any lane count).
KVW_HD void RansDecodeSerialItem(const RansDecodeArgs& a, int64_t i) {
  const RansStreamDesc& s = a.streams[i];
  uint8_t* out = a.out + s.out_offset;
  uint32_t x[kRansMaxLanes];
  for (int j = 0; j < kRansMaxLanes; ++j) x[j] = s.states[j];
  uint64_t pos = 0;
  for (uint64_t k = 0; k < s.num_symbols; ++k) {
    uint32_t col;
    const uint64_t o = RansOutIndex(s, k, &col);
    uint32_t& xs = x[k % s.lanes];
    out[o] = RansStep(RansTableOf(a, s, col), xs);
    if (xs < kRansStateLow) {
      if (pos >= s.words_count) {
        a.status[i] = kRansRanOut;
        return;
      }
      xs = xs << 16 | RansWord(a, s, pos++);
    }
  }
  a.status[i] = RansFinish(s, pos, x);
}

// Where the lanes of a step write, walked incrementally (no division per step): in the blocked
// rows all `lanes` symbols of a step are rows r .. r + lanes - 1 of one column of one block
// (column runs are multiples of 32 long, and lanes divides 32); after them, plain order.
struct RansCursor {
  uint64_t k0;      // coded position of lane 0
  uint64_t block;   // blocked part: block index, rows in the block, column, lane 0's row
  uint64_t rows;
  uint64_t r;
  uint32_t col;     // plain part: column of lane 0
  bool blocked;
};

KVW_HD RansCursor RansCursorStart(const RansStreamDesc& s) {
  RansCursor c{};
  c.blocked = s.blocked_rows > 0;
  c.rows = s.blocked_rows < kRansBlockRows ? s.blocked_rows : kRansBlockRows;
  return c;
}
// Output index and column of lane j's symbol.
KVW_HD uint64_t RansCursorLane(const RansStreamDesc& s, const RansCursor& c, int j, uint32_t* col) {
  if (c.blocked) {
    *col = c.col;
    return (c.block * kRansBlockRows + c.r + j) * s.row_len + c.col;
  }
  *col = (c.col + static_cast<uint32_t>(j)) % s.row_len;
  return c.k0 + j;
}
KVW_HD void RansCursorNext(const RansStreamDesc& s, RansCursor& c) {
  c.k0 += s.lanes;
  if (!c.blocked) {
    c.col = (c.col + s.lanes) % s.row_len;
    return;
  }
  c.r += s.lanes;
  if (c.r < c.rows) return;
  c.r = 0;
  if (++c.col < s.row_len) return;
  c.col = 0;
  ++c.block;
  if (c.block * kRansBlockRows >= s.blocked_rows) {
    c.blocked = false;  // the plain part starts at a row boundary: column 0
  } else {
    const uint64_t left = s.blocked_rows - c.block * kRansBlockRows;
    c.rows = left < kRansBlockRows ? left : kRansBlockRows;
  }
}

// One step of a multi-lane stream for lane j, split in the two halves around the ballot:
// RansLaneDecode decodes lane j's symbol of the step and says whether the lane needs a word;
// RansLaneRefill reads it, given the mask of lanes that need one. Returns false if the stream
// ran out.
KVW_HD bool RansLaneDecode(const RansDecodeArgs& a, const RansStreamDesc& s, const RansCursor& c,
                           uint8_t* out, int j, uint32_t& x) {
  uint32_t col;
  const uint64_t o = RansCursorLane(s, c, j, &col);
  out[o] = RansStep(RansTableOf(a, s, col), x);
  return x < kRansStateLow;
}
KVW_HD bool RansLaneRefill(const RansDecodeArgs& a, const RansStreamDesc& s, uint64_t pos,
                           uint32_t mask, int j, uint32_t& x) {
  if (!((mask >> j) & 1u)) return true;
  const uint64_t w = pos + Popcount(mask & ((1u << j) - 1));
  if (w >= s.words_count) return false;
  x = x << 16 | RansWord(a, s, w);
  return true;
}

}  // namespace kvwire::gpu
