#include "kernels/rans_plan.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/rans_ops.h"
#include "kvcodec/rans.h"
#include "kvcodec/wire.h"

namespace kvwire::gpu {

absl::Status AddRansStream(std::span<const uint8_t> in, uint64_t n, int row_len,
                           int alphabet_bits, uint64_t out_offset, RansBatch* batch) {
  // kvcodec reads and checks everything before the word stream; the kernel decodes the words.
  const uint8_t* p = in.data();
  const uint8_t* const end = p + in.size();
  kvcodec::RansStreamHead head;
  KVC_RETURN_IF_ERROR(kvcodec::ReadRansHead(p, end, n, row_len, alphabet_bits, &head));
  const int nc = head.num_contexts;
  RansStreamDesc desc{};
  desc.num_symbols = n;
  desc.row_len = static_cast<uint32_t>(row_len);
  desc.num_contexts = static_cast<uint32_t>(nc);
  desc.lanes = static_cast<uint32_t>(head.lanes);
  desc.out_offset = out_offset;
  desc.tables_offset = batch->tables.size();
  desc.blocked_rows = head.blocked_rows;
  std::vector<RansTable> tables(nc);
  for (int c = 0; c < nc; ++c) {
    uint16_t freq[256];
    KVC_RETURN_IF_ERROR(kvcodec::ReadRansTable(p, end, head, c, freq));
    RansTable& t = tables[c];
    std::memset(&t, 0, sizeof(t));
    uint32_t cum = 0;
    for (int s = 0; s < head.alphabet; ++s) {
      t.freq_cum[s] = freq[s] | cum << 16;
      if (freq[s] == 0) continue;
      std::memset(t.slot_symbol + cum, s, freq[s]);
      cum += freq[s];
    }
  }
  static_assert(kRansMaxLanes == 32, "kvcodec::ReadRansStates fills 32 lanes");
  KVC_RETURN_IF_ERROR(kvcodec::ReadRansStates(p, end, head, n, desc.states));
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
    if (s.lanes == 1) {
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
      const int active = static_cast<int>(std::min<uint64_t>(s.lanes, s.num_symbols - cursor.k0));
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
