// The codec's section kernels as plain functions of one work item, compiled twice: into the
// CUDA kernels (kernels.cu, one work item per thread or per warp) and into the host reference
// (reference_backend.cc, a loop over the work items). The arguments are plain structs of
// pointers into backend memory (device memory for CUDA, host memory for the reference).
//
// Section layout (kvcodec/quant.h): the rows are the kept tokens of each head, head after
// head. Without delta coding every row is a main row. With delta coding the reference rows
// (row 0 of a head for kSeq; every G-th row for the grouped modes) are coded at 8 bits with one
// (scale, offset) pair per row, and every other row t holds the residual against the
// reconstruction of row PredRow(t). Main codes, main params, ref codes and ref params are
// four streams, each in row order.
#pragma once

#include <cstdint>

#include "kernels/codec_math.h"
#include "kernels/layout.h"

namespace kvwire::gpu {

// Error bits a kernel raises (kvcodec's messages are chosen by the host from these).
inline constexpr uint32_t kErrValueRange = 1;     // an input value is NaN, infinite or > 65504
inline constexpr uint32_t kErrResidualRange = 2;  // a delta residual needs a non-finite half

KVW_HD void RaiseError(uint32_t* error, uint32_t bits) {
#if defined(__CUDA_ARCH__)
  atomicOr(error, bits);
#else
  *error |= bits;
#endif
}

// The shape of one section. Prefix sums over heads have num_heads + 1 entries.
struct SectionGeom {
  int32_t head_dim;
  int32_t num_heads;
  int32_t bits;          // width of the main codes
  int32_t axis;          // AxisCode
  int32_t token_group;   // per token: channels per quantizer (divides head_dim)
  int32_t row_group;     // per channel: main rows per quantizer; 0 = all main rows of a head
  int32_t delta_mode;    // DeltaCode
  int32_t delta_group;   // G of the grouped modes
  int32_t closed_loop;
  const int64_t* head_rows;     // rows
  const int64_t* head_main;     // main rows
  const int64_t* head_ref;      // reference rows
  const int64_t* head_qgroups;  // per-channel quantizer groups (rows of main_params / head_dim)
  const int64_t* head_chains;   // delta chains: one per head (kSeq) or per group of G rows
};

// Head h with prefix[h] <= i < prefix[h + 1] (empty heads are skipped).
KVW_HD int FindHead(const int64_t* prefix, int num_heads, int64_t i) {
  int lo = 0, hi = num_heads;  // prefix[lo] <= i < prefix[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (prefix[mid] <= i) lo = mid; else hi = mid;
  }
  return lo;
}

KVW_HD bool IsRefRow(const SectionGeom& g, int64_t t) {
  if (g.delta_mode == kDeltaNone) return false;
  if (g.delta_mode == kDeltaSeq) return t == 0;
  return t % g.delta_group == 0;
}
// Reference rows among head rows [0, t).
KVW_HD int64_t RefsBefore(const SectionGeom& g, int64_t t) {
  if (g.delta_mode == kDeltaNone) return 0;
  if (g.delta_mode == kDeltaSeq) return t > 0 ? 1 : 0;
  return (t + g.delta_group - 1) / g.delta_group;
}
// Head-local index among the main rows of main row t, and back.
KVW_HD int64_t MainIndexOf(const SectionGeom& g, int64_t t) { return t - RefsBefore(g, t); }
KVW_HD int64_t MainRowOf(const SectionGeom& g, int64_t m) {
  if (g.delta_mode == kDeltaNone) return m;
  if (g.delta_mode == kDeltaSeq) return m + 1;
  const int64_t per = g.delta_group - 1;
  return (m / per) * g.delta_group + m % per + 1;
}
// Head-local row of the i-th reference row.
KVW_HD int64_t RefRowOf(const SectionGeom& g, int64_t i) {
  return g.delta_mode == kDeltaSeq ? 0 : i * g.delta_group;
}
// Row whose reconstruction predicts main row t.
KVW_HD int64_t PredRowOf(const SectionGeom& g, int64_t t) {
  return g.delta_mode == kDeltaAnchor ? t - t % g.delta_group : t - 1;
}
// Per-channel quantizer groups of a head with `main_rows` main rows: the group size.
KVW_HD int64_t RowGroupSize(const SectionGeom& g, int64_t main_rows) {
  return g.row_group > 0 ? g.row_group : main_rows;
}
// Head-local rows [*t0, *t1) of chain `chain` (an index into head_chains).
KVW_HD int ChainRows(const SectionGeom& g, int64_t chain, int64_t* t0, int64_t* t1) {
  const int h = FindHead(g.head_chains, g.num_heads, chain);
  const int64_t rows = g.head_rows[h + 1] - g.head_rows[h];
  const int64_t local = chain - g.head_chains[h];
  if (g.delta_mode == kDeltaSeq) {
    *t0 = 0;
    *t1 = rows;
  } else {
    *t0 = local * g.delta_group;
    *t1 = *t0 + g.delta_group < rows ? *t0 + g.delta_group : rows;
  }
  return h;
}

// ---- copying rows (gather of kept positions, scatter into a cache layout) ----------------------

// Element conversion of CopyRows: raw copies the bytes (NaN payloads survive, as kvcodec's raw
// coding does); the others go through float exactly as kvcodec::ToFloat / FromFloat.
struct CopyRowsArgs {
  int64_t num_rows;
  int32_t head_dim;
  const void* src;
  int32_t src_dtype;
  const int64_t* src_row;  // element offset of row r; null: r * head_dim
  void* dst;
  int32_t dst_dtype;       // == src_dtype for a raw copy
  const int64_t* dst_row;  // null: r * head_dim
  int32_t raw;
};

// Work item: elements [c0, c0 + n) of row r.
KVW_HD void CopyRowsItem(const CopyRowsArgs& a, int64_t r, int c0, int n) {
  const uint64_t s = a.src_row ? a.src_row[r] : static_cast<uint64_t>(r) * a.head_dim;
  const uint64_t d = a.dst_row ? a.dst_row[r] : static_cast<uint64_t>(r) * a.head_dim;
  for (int c = c0; c < c0 + n; ++c) {
    if (a.raw) {
      if (a.src_dtype == kF32) {
        static_cast<uint32_t*>(a.dst)[d + c] = static_cast<const uint32_t*>(a.src)[s + c];
      } else {
        static_cast<uint16_t*>(a.dst)[d + c] = static_cast<const uint16_t*>(a.src)[s + c];
      }
    } else {
      StoreElement(a.dst, a.dst_dtype, d + c, LoadElement(a.src, a.src_dtype, s + c));
    }
  }
}

// ---- per-token quantization (with delta chains) -------------------------------------------------

// Groups of at least this many channels are reduced by all lanes together; narrower groups go
// one per lane. A constant (not the lane count) so the host reference runs both paths.
inline constexpr int kWideGroup = 32;

struct TokenRowsArgs {
  SectionGeom g;
  const void* src;
  int32_t src_dtype;
  const int64_t* src_row;  // element offset in src of every section row
  // Work items are chains of rows quantized in order by one warp: kChainRows = 1 makes every
  // row its own item (no delta, or open loop); 0 uses g.head_chains (closed loop: the rows a
  // prediction can reach).
  int32_t chain_rows;
  int64_t num_items;
  int32_t refs_only;       // quantize only reference rows (per-channel sections with delta)
  uint8_t* main_codes;     // packed; zeroed before the launch (rows may share a word)
  ParamPair* main_params;
  uint8_t* ref_codes;
  ParamPair* ref_params;
  float* ref_recon;        // nullable: reconstruction of the reference rows, [ref rows, d]
  uint32_t* error;
};

// Per-warp scratch of TokenRows (shared memory on the device).
struct RowScratch {
  float* x;         // head_dim: the row, then its residual
  float* aux;       // head_dim: the prediction / reconstruction carried along the chain
  uint8_t* codes;   // head_dim
  Quantizer* q;     // max(head_dim / token_group, 1)
};

// Bytes of RowScratch for one warp (16-byte aligned pieces).
KVW_HD constexpr uint64_t RowScratchBytes(int head_dim, int token_group) {
  const uint64_t f = (4ull * head_dim + 15) / 16 * 16;
  const uint64_t c = (1ull * head_dim + 15) / 16 * 16;
  const uint64_t groups = token_group > 0 && head_dim / token_group > 1 ? head_dim / token_group : 1;
  return 2 * f + c + groups * sizeof(Quantizer);
}
KVW_HD RowScratch CarveRowScratch(uint8_t* base, int head_dim) {
  RowScratch s;
  const uint64_t f = (4ull * head_dim + 15) / 16 * 16;
  const uint64_t c = (1ull * head_dim + 15) / 16 * 16;
  s.x = reinterpret_cast<float*>(base);
  s.aux = reinterpret_cast<float*>(base + f);
  s.codes = base + 2 * f;
  s.q = reinterpret_cast<Quantizer*>(base + 2 * f + c);
  return s;
}

// Group gi's quantizer into the row scratch and its parameters into `params`; a group without
// one raises fail_bit and gets the zero quantizer.
KVW_HD void SetGroupQuantizer(const MinMax& m, float levels, int gi, RowScratch s, ParamPair* params,
                              uint32_t fail_bit, uint32_t* error) {
  Quantizer q{};
  if (!ChooseGroupQuantizer(m, levels, &q)) RaiseError(error, fail_bit);
  s.q[gi] = q;
  params[gi] = q.bits;
}

// Quantizes v[0, d) in groups of tg channels into s.codes and s.q, writing the pairs to
// params. If recon is given, also writes the decoder's reconstruction: pred + value (or the
// value when pred is null); recon may alias pred. Raises `fail_bit` if a group is out of range.
template <typename Lanes>
KVW_HD void QuantizeRow(const Lanes& lanes, const float* v, int d, int tg, float levels,
                        RowScratch s, ParamPair* params, const float* pred, float* recon,
                        uint32_t fail_bit, uint32_t* error) {
  const int groups = d / tg;
  if (tg >= kWideGroup) {
    for (int gi = 0; gi < groups; ++gi) {
      MinMax m = EmptyMinMax();
      for (int e = lanes.lane(); e < tg; e += lanes.size()) {
        PushMinMax(m, v[gi * tg + e], TokenGroupKey(e, tg));
      }
      m = lanes.Reduce(m);
      if (lanes.lane() == 0) SetGroupQuantizer(m, levels, gi, s, params, fail_bit, error);
    }
  } else {
    for (int gi = lanes.lane(); gi < groups; gi += lanes.size()) {
      MinMax m = EmptyMinMax();
      for (int e = 0; e < tg; ++e) PushMinMax(m, v[gi * tg + e], TokenGroupKey(e, tg));
      SetGroupQuantizer(m, levels, gi, s, params, fail_bit, error);
    }
  }
  lanes.sync();
  for (int e = lanes.lane(); e < d; e += lanes.size()) {
    const Quantizer& q = s.q[e / tg];
    const uint32_t code = QuantizeValue(v[e], q, levels);
    s.codes[e] = static_cast<uint8_t>(code);
    if (recon != nullptr) {
      recon[e] = pred != nullptr ? DequantizeAdd(pred[e], code, q.offset, q.scale)
                                 : DequantizeValue(code, q.offset, q.scale);
    }
  }
  lanes.sync();
}

// Writes s.codes (d codes of `bits`) as row `row` of a packed stream. Words the row shares
// with a neighbour are OR-ed in (the stream was zeroed), the others stored.
template <typename Lanes>
KVW_HD void WritePackedRow(const Lanes& lanes, const uint8_t* codes, int d, int bits, int64_t row,
                           uint8_t* stream) {
  uint32_t* words = reinterpret_cast<uint32_t*>(stream);
  const uint64_t first_code = static_cast<uint64_t>(row) * d;
  const uint64_t bit0 = first_code * bits, bit1 = bit0 + static_cast<uint64_t>(d) * bits;
  const uint64_t w0 = bit0 / 32, w1 = (bit1 + 31) / 32;
  for (uint64_t w = w0 + lanes.lane(); w < w1; w += lanes.size()) {
    const uint32_t word = PackedWord(w, bits, first_code + d, [&](uint64_t i) -> uint64_t {
      return i < first_code ? 0 : codes[i - first_code];
    });
    if (32 * w >= bit0 && 32 * w + 32 <= bit1) {
      words[w] = word;
    } else {
      lanes.OrWord(&words[w], word);
    }
  }
}

// Work item `item`: one row (chain_rows == 1) or one delta chain, in order.
template <typename Lanes>
KVW_HD void TokenRowsItem(const Lanes& lanes, const TokenRowsArgs& a, int64_t item,
                          RowScratch s) {
  const SectionGeom& g = a.g;
  const int d = g.head_dim;
  int h;
  int64_t t0, t1;
  if (a.chain_rows == 1) {
    h = FindHead(g.head_rows, g.num_heads, item);
    t0 = item - g.head_rows[h];
    t1 = t0 + 1;
  } else {
    h = ChainRows(g, item, &t0, &t1);
  }
  if (a.refs_only) t1 = t0 + 1;  // a chain starts with its reference row
  const float levels = Levels(g.bits);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t r = g.head_rows[h] + t;
    for (int e = lanes.lane(); e < d; e += lanes.size()) {
      const float v = LoadElement(a.src, a.src_dtype, a.src_row[r] + e);
      if (!InHalfRange(v)) RaiseError(a.error, kErrValueRange);
      s.x[e] = v;
    }
    lanes.sync();
    if (g.delta_mode == kDeltaNone) {
      const int64_t mi = g.head_main[h] + t;
      QuantizeRow(lanes, s.x, d, g.token_group, levels, s, a.main_params + mi * (d / g.token_group),
                  nullptr, nullptr, kErrValueRange, a.error);
      WritePackedRow(lanes, s.codes, d, g.bits, mi, a.main_codes);
    } else if (IsRefRow(g, t)) {
      const int64_t ri = g.head_ref[h] + RefsBefore(g, t);
      QuantizeRow(lanes, s.x, d, d, 255.0f, s, a.ref_params + ri, nullptr, s.aux, 0, a.error);
      for (int e = lanes.lane(); e < d; e += lanes.size()) {
        a.ref_codes[ri * d + e] = s.codes[e];
        if (a.ref_recon != nullptr) a.ref_recon[ri * d + e] = s.aux[e];
      }
    } else {
      if (!g.closed_loop) {  // open loop: the prediction is the original row
        const int64_t p = g.head_rows[h] + PredRowOf(g, t);
        for (int e = lanes.lane(); e < d; e += lanes.size()) {
          s.aux[e] = LoadElement(a.src, a.src_dtype, a.src_row[p] + e);
        }
        lanes.sync();
      }
      for (int e = lanes.lane(); e < d; e += lanes.size()) s.x[e] = Sub(s.x[e], s.aux[e]);
      lanes.sync();
      // Closed loop carries the reconstruction to the next row (sequential modes); anchor rows
      // all predict from the chain's reference row, which stays in aux.
      const bool carry = g.closed_loop && g.delta_mode != kDeltaAnchor;
      const int64_t mi = g.head_main[h] + MainIndexOf(g, t);
      QuantizeRow(lanes, s.x, d, g.token_group, levels, s,
                  a.main_params + mi * (d / g.token_group), s.aux, carry ? s.aux : nullptr,
                  kErrResidualRange, a.error);
      WritePackedRow(lanes, s.codes, d, g.bits, mi, a.main_codes);
    }
    lanes.sync();
  }
}

// ---- per-channel quantization --------------------------------------------------------------------

struct ChannelArgs {
  SectionGeom g;
  const void* src;
  int32_t src_dtype;
  const int64_t* src_row;
  const float* ref_recon;  // closed loop: reconstruction of the reference rows
  int64_t num_qgroups;
  int64_t chunk_rows;      // main rows per reduction chunk
  int64_t max_chunks;      // chunks of the largest quantizer group
  MinMax* partial;         // [num_qgroups, max_chunks, head_dim]
  ParamPair* main_params;  // [num_qgroups, head_dim]
  float* quant;            // [num_qgroups, head_dim, 2]: offset, inv_scale
  uint8_t* main_codes;     // packed
  uint8_t* unpacked;       // chain path: one byte per code, [main rows, head_dim]
  uint64_t num_words;      // 32-bit words of the packed main codes
  uint32_t* error;
};

// The value main row m of head h is quantized from at channel c: the row itself without delta,
// else its residual against the original row (open loop) or the reference row's
// reconstruction (closed loop; the parallel path serves kAnchor only).
KVW_HD float ChannelInput(const ChannelArgs& a, int h, int64_t m, int c) {
  const SectionGeom& g = a.g;
  const int64_t t = MainRowOf(g, m);
  const float x = LoadElement(a.src, a.src_dtype, a.src_row[g.head_rows[h] + t] + c);
  if (!InHalfRange(x)) RaiseError(a.error, kErrValueRange);
  if (g.delta_mode == kDeltaNone) return x;
  const int64_t p = PredRowOf(g, t);
  const float pred =
      g.closed_loop
          ? a.ref_recon[(g.head_ref[h] + RefsBefore(g, p)) * g.head_dim + c]
          : LoadElement(a.src, a.src_dtype, a.src_row[g.head_rows[h] + p] + c);
  return Sub(x, pred);
}

// Main rows [*m0, *m1) of quantizer group qg; returns its head.
KVW_HD int QGroupRows(const SectionGeom& g, int64_t qg, int64_t* m0, int64_t* m1) {
  const int h = FindHead(g.head_qgroups, g.num_heads, qg);
  const int64_t main_rows = g.head_main[h + 1] - g.head_main[h];
  const int64_t size = RowGroupSize(g, main_rows);
  *m0 = (qg - g.head_qgroups[h]) * size;
  *m1 = *m0 + size < main_rows ? *m0 + size : main_rows;
  return h;
}

// Work item: channel c of chunk `chunk` of group qg, rows slice, slice + slices, ...; the
// caller merges the slices' results and stores them at partial[(qg * max_chunks + chunk) * d + c].
KVW_HD MinMax ChannelReduceItem(const ChannelArgs& a, int64_t qg, int64_t chunk, int c, int slice,
                                int slices) {
  int64_t m0, m1;
  const int h = QGroupRows(a.g, qg, &m0, &m1);
  const int64_t b = m0 + chunk * a.chunk_rows;
  const int64_t e = b + a.chunk_rows < m1 ? b + a.chunk_rows : m1;
  MinMax mm = EmptyMinMax();
  for (int64_t m = b + slice; m < e; m += slices) {
    PushMinMax(mm, ChannelInput(a, h, m, c), static_cast<int32_t>(m - m0));
  }
  return mm;
}

// Work item: channel c of group qg: merges the chunks and chooses the quantizer.
KVW_HD void ChannelFinishItem(const ChannelArgs& a, int64_t qg, int c) {
  const int d = a.g.head_dim;
  MinMax mm = EmptyMinMax();
  for (int64_t k = 0; k < a.max_chunks; ++k) mm = MergeMinMax(mm, a.partial[(qg * a.max_chunks + k) * d + c]);
  Quantizer q{};
  // An empty group cannot occur (groups are made from rows), and inputs were range-checked
  // when read; only a residual can need a non-finite half.
  if (mm.bad || !ChooseQuantizer(mm.lo, mm.hi, Levels(a.g.bits), &q)) RaiseError(a.error, kErrResidualRange);
  a.main_params[qg * d + c] = q.bits;
  a.quant[2 * (qg * d + c)] = q.offset;
  a.quant[2 * (qg * d + c) + 1] = q.inv_scale;
}

// Work item: word w of the packed main codes.
KVW_HD void ChannelCodesItem(const ChannelArgs& a, uint64_t w) {
  const SectionGeom& g = a.g;
  const int d = g.head_dim;
  const uint64_t n = static_cast<uint64_t>(g.head_main[g.num_heads]) * d;
  int h = -1;
  int64_t row = -1, qbase = 0;
  const float levels = Levels(g.bits);
  const uint32_t word = PackedWord(w, g.bits, n, [&](uint64_t i) -> uint64_t {
    const int64_t mr = static_cast<int64_t>(i / d);
    const int c = static_cast<int>(i % d);
    if (mr != row) {
      row = mr;
      if (h < 0 || mr >= g.head_main[h + 1]) h = FindHead(g.head_main, g.num_heads, mr);
      const int64_t m = mr - g.head_main[h];
      const int64_t size = RowGroupSize(g, g.head_main[h + 1] - g.head_main[h]);
      qbase = (g.head_qgroups[h] + m / size) * d;
    }
    Quantizer q{};
    q.offset = a.quant[2 * (qbase + c)];
    q.inv_scale = a.quant[2 * (qbase + c) + 1];
    return QuantizeValue(ChannelInput(a, h, mr - g.head_main[h], c), q, levels);
  });
  reinterpret_cast<uint32_t*>(a.main_codes)[w] = word;
}

// Work item: channel c of head h, closed-loop kSeq / kGroupedSeq: every quantizer group in
// order, its range from the base residuals (kvcodec/quant.cc, file comment), then the codes
// along the chain. Codes go to `unpacked` (neighbouring channels share packed bytes).
KVW_HD void ChannelChainItem(const ChannelArgs& a, int h, int c) {
  const SectionGeom& g = a.g;
  const int d = g.head_dim;
  const int64_t main_rows = g.head_main[h + 1] - g.head_main[h];
  if (main_rows == 0) return;
  const int64_t size = RowGroupSize(g, main_rows);
  const float levels = Levels(g.bits);
  auto x_at = [&](int64_t t) {
    const float v = LoadElement(a.src, a.src_dtype, a.src_row[g.head_rows[h] + t] + c);
    if (!InHalfRange(v)) RaiseError(a.error, kErrValueRange);
    return v;
  };
  auto ref_recon_at = [&](int64_t t) {
    return a.ref_recon[(g.head_ref[h] + RefsBefore(g, t)) * d + c];
  };
  float prev = 0;  // reconstruction of the previous main row
  for (int64_t m0 = 0, qg = g.head_qgroups[h]; m0 < main_rows; m0 += size, ++qg) {
    const int64_t m1 = m0 + size < main_rows ? m0 + size : main_rows;
    MinMax mm = EmptyMinMax();
    for (int64_t m = m0; m < m1; ++m) {
      const int64_t t = MainRowOf(g, m), p = t - 1;
      float base;
      if (IsRefRow(g, p)) {
        base = ref_recon_at(p);
      } else if (MainIndexOf(g, p) >= m0) {
        base = x_at(p);
      } else {
        base = prev;
      }
      PushMinMax(mm, Sub(x_at(t), base), static_cast<int32_t>(m - m0));
    }
    Quantizer q{};
    if (mm.bad || !ChooseQuantizer(mm.lo, mm.hi, levels, &q)) RaiseError(a.error, kErrResidualRange);
    a.main_params[qg * d + c] = q.bits;
    for (int64_t m = m0; m < m1; ++m) {
      const int64_t t = MainRowOf(g, m), p = t - 1;
      const float pred = IsRefRow(g, p) ? ref_recon_at(p) : prev;
      const uint32_t code = QuantizeValue(Sub(x_at(t), pred), q, levels);
      a.unpacked[(g.head_main[h] + m) * d + c] = static_cast<uint8_t>(code);
      prev = DequantizeAdd(pred, code, q.offset, q.scale);
    }
  }
}

// Packing one byte per code into a packed stream.
struct PackArgs {
  const uint8_t* codes;
  uint64_t num_codes;
  int32_t bits;
  uint8_t* packed;
  uint64_t num_words;
};
KVW_HD void PackItem(const PackArgs& a, uint64_t w) {
  reinterpret_cast<uint32_t*>(a.packed)[w] =
      PackedWord(w, a.bits, a.num_codes, [&](uint64_t i) -> uint64_t { return a.codes[i]; });
}

// ---- dequantization and scatter -------------------------------------------------------------------

enum DequantRowsKind : int32_t {
  kMainRows = 0,        // no delta: every row
  kRefRows = 1,         // delta: reference rows (also fills ref_recon)
  kAnchorMainRows = 2,  // kAnchor: main rows, from their anchor's reconstruction
};

struct DequantArgs {
  SectionGeom g;
  const uint8_t* main_codes;
  CodeLayout main_layout;
  const ParamPair* main_params;
  const uint8_t* ref_codes;  // one byte per code
  const ParamPair* ref_params;
  float* ref_recon;          // [ref rows, d]
  void* dst;
  int32_t dst_dtype;
  const int64_t* dst_row;    // element offset in dst of every section row
  int32_t kind;              // DequantRowsKind (DequantRowsItem only)
  int64_t num_items;
};

// Quantizer of main row m (head-local) of head h at channel c.
KVW_HD ParamPair MainParam(const DequantArgs& a, int h, int64_t m, int c) {
  const SectionGeom& g = a.g;
  if (g.axis == kPerToken) {
    return a.main_params[(g.head_main[h] + m) * (g.head_dim / g.token_group) + c / g.token_group];
  }
  const int64_t size = RowGroupSize(g, g.head_main[h + 1] - g.head_main[h]);
  return a.main_params[(g.head_qgroups[h] + m / size) * g.head_dim + c];
}

KVW_HD float DequantMain(const DequantArgs& a, int h, int64_t m, int c, const float* pred) {
  const ParamPair p = MainParam(a, h, m, c);
  const uint32_t code =
      CodeAt(a.main_codes, a.main_layout, a.g.head_main[h] + m, c, a.g.head_dim, a.g.bits);
  const float offset = FiniteHalfToFloat(p.offset), scale = FiniteHalfToFloat(p.scale);
  return pred ? DequantizeAdd(*pred, code, offset, scale) : DequantizeValue(code, offset, scale);
}

// Work item: channels [c0, c0 + n) of row `item` of the kind's rows.
KVW_HD void DequantRowsItem(const DequantArgs& a, int64_t item, int c0, int n) {
  const SectionGeom& g = a.g;
  const int d = g.head_dim;
  if (a.kind == kRefRows) {
    const int h = FindHead(g.head_ref, g.num_heads, item);
    const int64_t r = g.head_rows[h] + RefRowOf(g, item - g.head_ref[h]);
    const ParamPair p = a.ref_params[item];
    const float offset = FiniteHalfToFloat(p.offset), scale = FiniteHalfToFloat(p.scale);
    for (int c = c0; c < c0 + n; ++c) {
      const float v = DequantizeValue(a.ref_codes[item * d + c], offset, scale);
      a.ref_recon[item * d + c] = v;
      StoreElement(a.dst, a.dst_dtype, a.dst_row[r] + c, v);
    }
    return;
  }
  const int h = FindHead(g.head_main, g.num_heads, item);
  const int64_t m = item - g.head_main[h];
  const int64_t t = MainRowOf(g, m);
  const int64_t r = g.head_rows[h] + t;
  for (int c = c0; c < c0 + n; ++c) {
    float v;
    if (a.kind == kAnchorMainRows) {
      const float pred = a.ref_recon[(g.head_ref[h] + RefsBefore(g, PredRowOf(g, t))) * d + c];
      v = DequantMain(a, h, m, c, &pred);
    } else {
      v = DequantMain(a, h, m, c, nullptr);
    }
    StoreElement(a.dst, a.dst_dtype, a.dst_row[r] + c, v);
  }
}

// Work item: channel c of delta chain `chain` (kSeq, kGroupedSeq): the reference row's
// reconstruction plus each residual in order.
KVW_HD void DequantChainItem(const DequantArgs& a, int64_t chain, int c) {
  const SectionGeom& g = a.g;
  int64_t t0, t1;
  const int h = ChainRows(g, chain, &t0, &t1);
  if (t1 <= t0) return;
  float y = a.ref_recon[(g.head_ref[h] + RefsBefore(g, t0)) * g.head_dim + c];
  for (int64_t t = t0 + 1; t < t1; ++t) {
    y = DequantMain(a, h, MainIndexOf(g, t), c, &y);
    StoreElement(a.dst, a.dst_dtype, a.dst_row[g.head_rows[h] + t] + c, y);
  }
}

}  // namespace kvwire::gpu
