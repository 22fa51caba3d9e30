#include "kernels/rans_plan.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/rans_ops.h"

namespace kvwire::gpu {
namespace {

// Canonical LEB128 of at most 5 bytes with a value < 2^32 (rans.cc's GetVarint).
bool GetVarint(const uint8_t*& p, const uint8_t* end, uint32_t& v) {
  uint64_t value = 0;
  for (int i = 0; i < 5; ++i) {
    if (p == end) return false;
    const uint8_t b = *p++;
    value |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      if (i > 0 && b == 0) return false;
      if (value > 0xffffffffull) return false;
      v = static_cast<uint32_t>(value);
      return true;
    }
  }
  return false;
}

// One context's frequencies (0 = absent), checked as rans.cc's ReadTable checks them.
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
        if (!((p[b] >> bit) & 1)) continue;
        const size_t s = b * 8 + bit;
        if (s >= static_cast<size_t>(alphabet)) {
          return absl::DataLossError(
              absl::StrCat("rANS table ", ctx, ": symbol ", s, " outside the alphabet"));
        }
        present[s] = true;
      }
    }
    p += bitmap_bytes;
  } else if ((h & 1) == 0) {
    uint32_t pos = h / 2;
    if (pos > static_cast<uint32_t>(alphabet)) {
      return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": run past the alphabet"));
    }
    bool is_present = true;
    while (pos < static_cast<uint32_t>(alphabet)) {
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
    if (v >= kRansProbScale || sum + v + 1 > kRansProbScale) {
      return absl::DataLossError(
          absl::StrCat("rANS table ", ctx, ": frequencies exceed ", kRansProbScale));
    }
    freq[s] = static_cast<uint16_t>(v + 1);
    sum += v + 1;
  }
  if (sum != 0 && sum != kRansProbScale) {
    return absl::DataLossError(absl::StrCat("rANS table ", ctx, ": frequencies sum to ", sum,
                                            ", expected ", kRansProbScale));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AddRansStream(std::span<const uint8_t> in, uint64_t n, int row_len,
                           int alphabet_bits, uint64_t out_offset, RansBatch* batch) {
  if (alphabet_bits < 1 || alphabet_bits > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("rANS: alphabet_bits ", alphabet_bits, " outside 1..8"));
  }
  if (row_len < 1) return absl::InvalidArgumentError(absl::StrCat("rANS: row_len ", row_len, " < 1"));
  const uint8_t* p = in.data();
  const uint8_t* const end = p + in.size();
  if (in.size() < 3) return absl::DataLossError("rANS stream truncated in its header");
  if (p[0] != kRansTag) {
    return absl::DataLossError(absl::StrCat("not a rANS stream of version 2 (tag ", p[0], ")"));
  }
  const int stream_bits = p[1] & 0x0f;
  const int lanes_lg = (p[1] >> 4) & 0x0f;
  const int ctx_lg = p[2];
  if (stream_bits != alphabet_bits) {
    return absl::InvalidArgumentError(absl::StrCat("rANS stream has alphabet_bits ", stream_bits,
                                                   ", caller expects ", alphabet_bits));
  }
  if (lanes_lg > 3) {
    return absl::DataLossError(absl::StrCat("rANS stream: bad lane count field ", lanes_lg));
  }
  if (ctx_lg > 6 || (1 << ctx_lg) > row_len) {
    return absl::DataLossError(
        absl::StrCat("rANS stream: bad context count 2^", ctx_lg, " for row_len ", row_len));
  }
  p += 3;
  uint32_t stream_row_len;
  if (!GetVarint(p, end, stream_row_len)) return absl::DataLossError("rANS stream truncated in its header");
  if (stream_row_len != static_cast<uint32_t>(row_len)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rANS stream has row_len ", stream_row_len, ", caller expects ", row_len));
  }
  const int nc = 1 << ctx_lg;
  const uint32_t lanes = 1u << lanes_lg;
  const int alphabet = 1 << alphabet_bits;
  const uint64_t rl = static_cast<uint64_t>(row_len);
  const uint64_t used_contexts = n >= rl ? static_cast<uint64_t>(nc)
                                 : n == 0 ? 0
                                          : (n - 1) * nc / rl + 1;
  RansStreamDesc desc{};
  desc.num_symbols = n;
  desc.row_len = static_cast<uint32_t>(row_len);
  desc.num_contexts = static_cast<uint32_t>(nc);
  desc.lanes = lanes;
  desc.out_offset = out_offset;
  desc.tables_offset = batch->tables.size();
  desc.blocked_rows = nc <= 1 || row_len <= 1 ? 0 : (n / rl) & ~uint64_t{7};
  std::vector<RansTable> tables(nc);
  for (int c = 0; c < nc; ++c) {
    uint16_t freq[256];
    if (absl::Status s = ReadTable(p, end, alphabet, c, freq); !s.ok()) return s;
    const bool empty = std::all_of(freq, freq + alphabet, [](uint16_t f) { return f == 0; });
    const bool used = static_cast<uint64_t>(c) < used_contexts;
    if (empty == used) {
      return absl::DataLossError(absl::StrCat(
          "rANS table ", c, used ? " is empty but holds symbols" : " is not empty but holds no symbols"));
    }
    RansTable& t = tables[c];
    std::memset(&t, 0, sizeof(t));
    uint32_t cum = 0;
    for (int s = 0; s < alphabet; ++s) {
      t.freq_cum[s] = freq[s] | cum << 16;
      if (freq[s] == 0) continue;
      std::memset(t.slot_symbol + cum, s, freq[s]);
      cum += freq[s];
    }
  }
  const uint64_t used_lanes = std::min<uint64_t>(lanes, n);
  if (static_cast<uint64_t>(end - p) < 4 * used_lanes) {
    return absl::DataLossError("rANS stream truncated in its final states");
  }
  for (int j = 0; j < kRansMaxLanes; ++j) desc.states[j] = kRansStateLow;
  for (uint64_t j = 0; j < used_lanes; ++j, p += 4) {
    desc.states[j] = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                     static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
    if (desc.states[j] < kRansStateLow) {
      return absl::DataLossError(absl::StrCat("rANS lane ", j, " has an invalid state"));
    }
  }
  const uint64_t word_bytes = static_cast<uint64_t>(end - p);
  desc.words_offset = batch->data.size();
  desc.words_count = word_bytes / 2;
  desc.odd_byte = static_cast<uint32_t>(word_bytes % 2);
  batch->data.insert(batch->data.end(), p, end);
  batch->tables.insert(batch->tables.end(), tables.begin(), tables.end());
  batch->streams.push_back(desc);
  batch->out_bytes = std::max(batch->out_bytes, out_offset + n);
  return absl::OkStatus();
}

absl::Status RansStatusToError(uint64_t status, size_t stream_index) {
  const uint64_t detail = status >> 8;
  switch (status & 0xff) {
    case kRansOk:
      return absl::OkStatus();
    case kRansRanOut:
      return absl::DataLossError("rANS stream truncated: word stream ran out");
    case kRansLeftover:
      return absl::DataLossError(absl::StrCat("rANS stream corrupt: ", detail, " bytes left after the last symbol"));
    case kRansBadFinal:
      return absl::DataLossError(
          absl::StrCat("rANS stream corrupt: lane ", detail, " did not end in the initial state"));
    default:
      return absl::InternalError(absl::StrCat("rANS stream ", stream_index, ": status ", status));
  }
}

void RansDecodeItemsOnHost(const RansDecodeArgs& a) {
  for (int64_t i = 0; i < a.num_streams; ++i) {
    const RansStreamDesc& s = a.streams[i];
    if (s.lanes != kRansMaxLanes) {
      RansDecodeSerialItem(a, i);
      continue;
    }
    // Lanes in lockstep, as the warp runs them: decode all, ballot, refill all.
    uint32_t x[kRansMaxLanes];
    for (int j = 0; j < kRansMaxLanes; ++j) x[j] = s.states[j];
    uint64_t pos = 0;
    uint8_t* o = a.out + s.out_offset;
    uint64_t status = kRansOk;
    RansCursor cursor = RansCursorStart(s);
    for (; cursor.k0 < s.num_symbols && status == kRansOk; RansCursorNext(s, cursor)) {
      const int active = static_cast<int>(std::min<uint64_t>(kRansMaxLanes, s.num_symbols - cursor.k0));
      uint32_t mask = 0;
      for (int j = 0; j < active; ++j) {
        mask |= static_cast<uint32_t>(RansLaneDecode(a, s, cursor, o, j, x[j])) << j;
      }
      for (int j = 0; j < active; ++j) {
        if (!RansLaneRefill(a, s, pos, mask, j, x[j])) status = kRansRanOut;
      }
      pos += __builtin_popcount(mask);
    }
    a.status[i] = status == kRansOk ? RansFinish(s, pos, x) : status;
  }
}

absl::Status RansDecodeOnHost(const RansBatch& batch, std::span<uint8_t> out) {
  if (out.size() < batch.out_bytes) return absl::InvalidArgumentError("rANS output buffer too small");
  std::vector<uint64_t> status(batch.streams.size(), kRansOk);
  const RansDecodeArgs a{batch.streams.data(), static_cast<int64_t>(batch.streams.size()),
                         batch.data.data(),    batch.tables.data(),
                         out.data(),           status.data()};
  RansDecodeItemsOnHost(a);
  for (size_t i = 0; i < status.size(); ++i) {
    if (absl::Status s = RansStatusToError(status[i], i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kvwire::gpu
