// The host reference backend: every kernel as a loop over its work items, one lane per item.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/fast_ops.h"
#include "kernels/rans_plan.h"

namespace kvwire::gpu {
namespace {

// One lane running a work item alone: the warp collectives become identities.
struct SerialLanes {
  int lane() const { return 0; }
  int size() const { return 1; }
  void sync() const {}
  MinMax Reduce(MinMax m) const { return m; }
  void OrWord(uint32_t* p, uint32_t v) const { *p |= v; }
};

class ReferenceBackend final : public Backend {
 public:
  std::string_view name() const override { return "reference"; }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    return p;
  }
  void Free(void* p) override { std::free(p); }
  absl::Status CopyToBackend(void* dst, const void* host, size_t bytes) override {
    if (bytes) std::memcpy(dst, host, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* host, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(host, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyWithin(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status Zero(void* dst, size_t bytes) override {
    if (bytes) std::memset(dst, 0, bytes);
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status CopyRows(const CopyRowsArgs& a) override {
    for (int64_t r = 0; r < a.num_rows; ++r) CopyRowsItem(a, r, 0, a.head_dim);
    return absl::OkStatus();
  }
  absl::Status TokenRows(const TokenRowsArgs& a, uint64_t scratch_bytes, int) override {
    std::vector<uint8_t> scratch(scratch_bytes + 16);
    const RowScratch s = CarveRowScratch(scratch.data(), a.g.head_dim);
    for (int64_t i = 0; i < a.num_items; ++i) TokenRowsItem(SerialLanes{}, a, i, s);
    return absl::OkStatus();
  }
  absl::Status TokenRowsFast(const TokenRowsArgs& a) override {
    // Per row: phase A on every lane, the warp's xor butterfly (each lane merges its partner's
    // value into its own, as __shfl_xor_sync does), phase B on every lane with its own result.
    const int lanes = a.g.head_dim / kFastElems, group = FastGroupLanes(a.g.token_group);
    std::vector<float> x(static_cast<size_t>(lanes) * kFastElems);
    std::vector<MinMax> m(lanes), next(lanes);
    for (int64_t row = 0; row < a.num_items; ++row) {
      for (int j = 0; j < lanes; ++j) m[j] = FastQuantizeLoad(a, row, j * kFastElems, x.data() + j * kFastElems);
      for (int offset = 1; offset < group; offset <<= 1) {
        for (int j = 0; j < lanes; ++j) next[j] = MergeMinMax(m[j], m[j ^ offset]);
        m.swap(next);
      }
      for (int j = 0; j < lanes; ++j) {
        WithFastBits(a.g.bits, [&](auto bits) {
          FastQuantizeStore<bits()>(a, row, j * kFastElems, x.data() + j * kFastElems, m[j]);
        });
      }
    }
    return absl::OkStatus();
  }
  absl::Status ChannelReduce(const ChannelArgs& a) override {
    const int d = a.g.head_dim;
    for (int64_t qg = 0; qg < a.num_qgroups; ++qg) {
      for (int64_t k = 0; k < a.max_chunks; ++k) {
        for (int c = 0; c < d; ++c) {
          a.partial[(qg * a.max_chunks + k) * d + c] = ChannelReduceItem(a, qg, k, c, 0, 1);
        }
      }
    }
    return absl::OkStatus();
  }
  absl::Status ChannelFinish(const ChannelArgs& a) override {
    for (int64_t qg = 0; qg < a.num_qgroups; ++qg) {
      for (int c = 0; c < a.g.head_dim; ++c) ChannelFinishItem(a, qg, c);
    }
    return absl::OkStatus();
  }
  absl::Status ChannelCodes(const ChannelArgs& a) override {
    for (uint64_t w = 0; w < a.num_words; ++w) ChannelCodesItem(a, w);
    return absl::OkStatus();
  }
  absl::Status ChannelChains(const ChannelArgs& a) override {
    for (int h = 0; h < a.g.num_heads; ++h) {
      for (int c = 0; c < a.g.head_dim; ++c) ChannelChainItem(a, h, c);
    }
    return absl::OkStatus();
  }
  absl::Status Pack(const PackArgs& a) override {
    for (uint64_t w = 0; w < a.num_words; ++w) PackItem(a, w);
    return absl::OkStatus();
  }
  absl::Status DequantRows(const DequantArgs& a) override {
    for (int64_t i = 0; i < a.num_items; ++i) DequantRowsItem(a, i, 0, a.g.head_dim);
    return absl::OkStatus();
  }
  absl::Status DequantRowsFast(const DequantArgs& a) override {
    const uint64_t lanes = static_cast<uint64_t>(a.num_items) * (a.g.head_dim / kFastElems);
    WithFastBits(a.g.bits, [&](auto bits) {
      for (uint64_t i = 0; i < lanes; ++i) FastDequantItem<bits()>(a, i);
    });
    return absl::OkStatus();
  }
  absl::Status DequantChains(const DequantArgs& a) override {
    for (int64_t i = 0; i < a.num_items; ++i) {
      for (int c = 0; c < a.g.head_dim; ++c) DequantChainItem(a, i, c);
    }
    return absl::OkStatus();
  }
  absl::Status RansDecode(const RansDecodeArgs& a) override {
    RansDecodeItemsOnHost(a);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Backend> MakeReferenceBackend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace kvwire::gpu
