// The rANS coder's frequency tables: varints, entropy estimates, the optimal normaliser and
// the table format (see the top of rans.cc).
#include <algorithm>
#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kvcodec/rans_internal.h"

namespace kvcodec::rans_internal {

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

// Calls emit(v) with each varint of a table's presence part in run-length form: alternating
// runs of absent and present symbols, starting with absent; the first run is doubled so that
// its low bit (0) tells it from the bitmap form's marker 1.
template <typename Emit>
void ForEachPresenceRun(const uint16_t* freq, int alphabet, Emit emit) {
  int s = 0;
  bool first = true;
  bool want_present = false;
  while (s < alphabet) {
    uint32_t run = 0;
    while (s < alphabet && (freq[s] != 0) == want_present) ++s, ++run;
    emit(first ? run * 2 : run);
    first = false;
    want_present = !want_present;
  }
}

// Bytes the presence part of a table takes in run-length form (bitmap form is 1 + ceil(A/8)).
static size_t PresenceRunBytes(const uint16_t* freq, int alphabet) {
  size_t bytes = 0;
  ForEachPresenceRun(freq, alphabet, [&](uint32_t v) { bytes += VarintSize(v); });
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
static const std::array<double, kProbScale + 2>& Log2Table() {
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
    ForEachPresenceRun(freq, alphabet, [&](uint32_t v) { PutVarint(out, v); });
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

}  // namespace kvcodec::rans_internal
