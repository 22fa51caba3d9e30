#include "kernels/plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/fast_ops.h"
#include "kvcodec/quant.h"
#include "kvcodec/section.h"

namespace kvwire::gpu {
namespace {

std::vector<int64_t> PrefixSums(const std::vector<int64_t>& counts) {
  std::vector<int64_t> prefix(counts.size() + 1, 0);
  for (size_t h = 0; h < counts.size(); ++h) prefix[h + 1] = prefix[h] + counts[h];
  return prefix;
}

}  // namespace

absl::StatusOr<SectionPlan> PlanSection(const kvcodec::QuantSpec& spec,
                                        const kvcodec::DeltaConfig& config_delta, int head_dim,
                                        std::span<const int> rows_per_head) {
  if (!spec.is_integer()) {
    return absl::InvalidArgumentError("the section kernels code int8/int4/int3/int2 sections");
  }
  kvcodec::SectionShape shape;
  shape.head_dim = head_dim;
  shape.rows_per_head.assign(rows_per_head.begin(), rows_per_head.end());
  const kvcodec::DeltaConfig delta = kvcodec::SectionDelta(spec, config_delta);
  if (absl::Status s = kvcodec::CheckQuantSpec(spec, shape); !s.ok()) return s;
  if (absl::Status s = kvcodec::CheckDeltaConfig(delta); !s.ok()) return s;

  SectionPlan p;
  p.spec = spec;
  p.delta = delta;
  const int heads = static_cast<int>(rows_per_head.size());
  const int bits = spec.bits();
  const int tg = spec.axis == kvcodec::QuantAxis::kPerToken && spec.group_size > 0 ? spec.group_size
                                                                                   : head_dim;
  SectionGeom& g = p.geom;
  g = SectionGeom{};
  g.head_dim = head_dim;
  g.num_heads = heads;
  g.bits = bits;
  g.axis = static_cast<int32_t>(spec.axis);
  g.token_group = tg;
  g.row_group = spec.axis == kvcodec::QuantAxis::kPerChannel ? spec.group_size : 0;
  g.delta_mode = static_cast<int32_t>(delta.mode);
  g.delta_group = delta.mode == kvcodec::DeltaMode::kSequential ? 0 : delta.group_size;
  g.closed_loop = delta.closed_loop ? 1 : 0;

  std::vector<int64_t> rows(heads), main(heads), refs(heads), qgroups(heads), chains(heads);
  for (int h = 0; h < heads; ++h) {
    const int64_t r = rows_per_head[h];
    rows[h] = r;
    refs[h] = RefsBefore(g, r);  // reference rows among [0, r)
    main[h] = r - refs[h];
    if (spec.axis == kvcodec::QuantAxis::kPerChannel && main[h] > 0) {
      const int64_t size = RowGroupSize(g, main[h]);
      qgroups[h] = (main[h] + size - 1) / size;
    }
    if (delta.mode == kvcodec::DeltaMode::kSequential) {
      chains[h] = r > 0 ? 1 : 0;
    } else if (delta.mode != kvcodec::DeltaMode::kNone) {
      chains[h] = (r + g.delta_group - 1) / g.delta_group;
    }
  }
  p.head_rows = PrefixSums(rows);
  p.head_main = PrefixSums(main);
  p.head_ref = PrefixSums(refs);
  p.head_qgroups = PrefixSums(qgroups);
  p.head_chains = PrefixSums(chains);
  p.rows = p.head_rows.back();
  p.main_rows = p.head_main.back();
  p.ref_rows = p.head_ref.back();
  p.qgroups = p.head_qgroups.back();
  p.chains = p.head_chains.back();
  if (static_cast<size_t>(p.main_rows) != kvcodec::NumMainRows(delta, shape) ||
      static_cast<size_t>(p.ref_rows) != kvcodec::NumRefRows(delta, shape)) {
    return absl::InternalError("section plan disagrees with kvcodec's row counts");
  }

  const uint64_t main_codes = static_cast<uint64_t>(p.main_rows) * head_dim;
  p.main_code_bytes = PackedBytes(main_codes, bits);
  p.main_words = PackedWords(main_codes, bits);
  p.main_code_alloc = 4 * p.main_words;
  p.main_symbol_bytes = static_cast<uint64_t>(p.main_rows) * SymbolRowLen(head_dim, bits);
  p.main_param_pairs = kvcodec::NumMainParams(spec, delta, shape) / 2;
  p.ref_code_bytes = static_cast<uint64_t>(p.ref_rows) * head_dim;
  p.ref_param_pairs = static_cast<uint64_t>(p.ref_rows);

  const bool has_delta = delta.mode != kvcodec::DeltaMode::kNone;
  if (spec.axis == kvcodec::QuantAxis::kPerToken) {
    p.encode_path = EncodePath::kTokenRows;
    // Closed loop: a prediction comes from a row earlier in the same chain.
    p.token_chain_rows = has_delta && delta.closed_loop ? 0 : 1;
    p.token_items = p.token_chain_rows == 1 ? p.rows : p.chains;
  } else {
    const bool sequential = delta.mode == kvcodec::DeltaMode::kSequential ||
                            delta.mode == kvcodec::DeltaMode::kGroupedSequential;
    p.encode_path = sequential && delta.closed_loop ? EncodePath::kChannelChain
                                                     : EncodePath::kChannelParallel;
    // Reference rows (if any) are quantized first, one per delta chain.
    p.token_chain_rows = 0;
    p.token_items = p.chains;
    int64_t largest = 0;
    for (int h = 0; h < heads; ++h) largest = std::max(largest, main[h] > 0 ? RowGroupSize(g, main[h]) : 0);
    p.chunk_rows = kChannelChunkRows;
    p.max_chunks = (largest + p.chunk_rows - 1) / p.chunk_rows;
  }
  p.row_scratch_bytes = RowScratchBytes(head_dim, tg);
  if (p.row_scratch_bytes > kMaxBlockScratch) {
    return absl::UnimplementedError(absl::StrCat("head_dim ", head_dim, " with per-token groups of ", tg,
                                                 " needs more shared memory than a block has"));
  }
  p.warps_per_block = static_cast<int>(std::clamp<uint64_t>(kMaxBlockScratch / p.row_scratch_bytes, 1, 4));
  p.fast_quantize = !has_delta && spec.axis == kvcodec::QuantAxis::kPerToken &&
                    FastRowsEligible(head_dim, bits, tg);
  p.fast_dequantize = !has_delta && FastRowsEligible(head_dim, bits, tg);
  p.decode_chains = delta.mode == kvcodec::DeltaMode::kSequential ||
                    delta.mode == kvcodec::DeltaMode::kGroupedSequential;
  return p;
}

std::vector<int> RowsPerHead(const std::vector<std::vector<int32_t>>& kept) {
  std::vector<int> rows;
  rows.reserve(kept.size());
  for (const auto& l : kept) rows.push_back(static_cast<int>(l.size()));
  return rows;
}

absl::StatusOr<std::vector<int64_t>> CacheRowOffsets(
    const std::vector<std::vector<int32_t>>& kept, int num_tokens, int head_dim) {
  std::vector<int64_t> out;
  for (size_t h = 0; h < kept.size(); ++h) {
    for (int32_t t : kept[h]) {
      if (t < 0 || t >= num_tokens) {
        return absl::InvalidArgumentError(absl::StrCat("kept token ", t, " outside [0, ", num_tokens, ")"));
      }
      out.push_back((static_cast<int64_t>(h) * num_tokens + t) * head_dim);
    }
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> PaddedRowOffsets(
    const std::vector<std::vector<int32_t>>& kept, int capacity, int head_dim) {
  std::vector<int64_t> out;
  for (size_t h = 0; h < kept.size(); ++h) {
    if (kept[h].size() > static_cast<size_t>(capacity)) {
      return absl::InvalidArgumentError(absl::StrCat("head ", h, " keeps ", kept[h].size(),
                                                     " rows, more than the capacity ", capacity));
    }
    for (size_t i = 0; i < kept[h].size(); ++i) {
      out.push_back((static_cast<int64_t>(h) * capacity + static_cast<int64_t>(i)) * head_dim);
    }
  }
  return out;
}

}  // namespace kvwire::gpu
