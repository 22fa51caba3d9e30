// The CUDA kernels: each maps threads (or warps) onto the work items of section_ops.h,
// fast_ops.h and rans_ops.h, which hold all of the arithmetic and indexing. The host reference
// backend runs the same work items in loops, and kernels_test checks those against kvcodec.
#include <cuda_runtime.h>

#include "kernels/cuda_launch.h"
#include "kernels/fast_ops.h"
#include "kernels/rans_ops.h"
#include "kernels/section_ops.h"

namespace kvwire::gpu {
namespace {

constexpr int kThreads = 256;

__device__ MinMax ShflXor(const MinMax& m, int offset, unsigned mask) {
  MinMax o;
  o.lo = __shfl_xor_sync(mask, m.lo, offset);
  o.lo_key = __shfl_xor_sync(mask, m.lo_key, offset);
  o.hi = __shfl_xor_sync(mask, m.hi, offset);
  o.hi_key = __shfl_xor_sync(mask, m.hi_key, offset);
  o.bad = __shfl_xor_sync(mask, static_cast<int>(m.bad), offset) != 0;
  return o;
}

// A warp running one work item of section_ops.h. The methods are host-device only so that the
// host pass of nvcc can instantiate the host-device work items with it; they run on the device.
struct WarpLanes {
  __host__ __device__ int lane() const {
#if defined(__CUDA_ARCH__)
    return static_cast<int>(threadIdx.x & 31);
#else
    return 0;
#endif
  }
  __host__ __device__ int size() const { return 32; }
  __host__ __device__ void sync() const {
#if defined(__CUDA_ARCH__)
    __syncwarp();
#endif
  }
  __host__ __device__ MinMax Reduce(MinMax m) const {
#if defined(__CUDA_ARCH__)
    for (int offset = 16; offset > 0; offset >>= 1) m = MergeMinMax(m, ShflXor(m, offset, 0xffffffffu));
#endif
    return m;
  }
  __host__ __device__ void OrWord(uint32_t* p, uint32_t v) const {
#if defined(__CUDA_ARCH__)
    atomicOr(p, v);
#else
    *p |= v;
#endif
  }
};

__device__ uint64_t GlobalThread() {
  return static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

// ---- kernels ------------------------------------------------------------------------------------

__global__ void CopyRowsKernel(CopyRowsArgs a, uint64_t items, int chunks) {
  const uint64_t i = GlobalThread();
  if (i >= items) return;
  const int c0 = static_cast<int>(i % chunks) * 8;
  CopyRowsItem(a, static_cast<int64_t>(i / chunks), c0, min(8, a.head_dim - c0));
}

__global__ void TokenRowsKernel(TokenRowsArgs a, uint64_t scratch_bytes) {
  extern __shared__ __align__(16) uint8_t scratch[];
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + warp;
  if (item >= a.num_items) return;  // the whole warp: warps never wait for each other
  TokenRowsItem(WarpLanes{}, a, item, CarveRowScratch(scratch + warp * scratch_bytes, a.g.head_dim));
}

// One lane per 16 channels; a row's lanes are consecutive lanes of one warp (d / 16 divides 32),
// so a group's butterfly stays inside its row. Every lane takes part in the shuffles.
template <int kBits>
__global__ void TokenRowsFastKernel(TokenRowsArgs a) {
  int64_t row;
  int c0;
  FastLanePosition(a.g.head_dim, GlobalThread(), &row, &c0);
  const bool active = row < a.num_items;
  float x[kFastElems] = {};
  MinMax m = EmptyMinMax();
  if (active) m = FastQuantizeLoad(a, row, c0, x);
  for (int offset = 1; offset < FastGroupLanes(a.g.token_group); offset <<= 1) {
    m = MergeMinMax(m, ShflXor(m, offset, 0xffffffffu));
  }
  if (active) FastQuantizeStore<kBits>(a, row, c0, x, m);
}

// Block: 32 channels x 8 row slices of one (group, chunk, channel tile).
constexpr int kSlices = 8;
__global__ void ChannelReduceKernel(ChannelArgs a, int tiles) {
  __shared__ MinMax part[kSlices][32];
  const uint64_t b = blockIdx.x;
  const int tile = static_cast<int>(b % tiles);
  const uint64_t qc = b / tiles;
  const int64_t chunk = static_cast<int64_t>(qc % a.max_chunks);
  const int64_t qg = static_cast<int64_t>(qc / a.max_chunks);
  const int c = tile * 32 + static_cast<int>(threadIdx.x);
  const int d = a.g.head_dim;
  MinMax m = EmptyMinMax();
  if (c < d) m = ChannelReduceItem(a, qg, chunk, c, static_cast<int>(threadIdx.y), kSlices);
  part[threadIdx.y][threadIdx.x] = m;
  __syncthreads();
  if (threadIdx.y == 0 && c < d) {
    for (int s = 1; s < kSlices; ++s) m = MergeMinMax(m, part[s][threadIdx.x]);
    a.partial[(qg * a.max_chunks + chunk) * d + c] = m;
  }
}

__global__ void ChannelFinishKernel(ChannelArgs a, uint64_t items) {
  const uint64_t i = GlobalThread();
  if (i < items) ChannelFinishItem(a, static_cast<int64_t>(i / a.g.head_dim), static_cast<int>(i % a.g.head_dim));
}

__global__ void ChannelCodesKernel(ChannelArgs a) {
  const uint64_t w = GlobalThread();
  if (w < a.num_words) ChannelCodesItem(a, w);
}

__global__ void ChannelChainsKernel(ChannelArgs a, uint64_t items) {
  const uint64_t i = GlobalThread();
  if (i < items) ChannelChainItem(a, static_cast<int>(i / a.g.head_dim), static_cast<int>(i % a.g.head_dim));
}

__global__ void PackKernel(PackArgs a) {
  const uint64_t w = GlobalThread();
  if (w < a.num_words) PackItem(a, w);
}

__global__ void DequantRowsKernel(DequantArgs a, uint64_t items, int chunks) {
  const uint64_t i = GlobalThread();
  if (i >= items) return;
  const int c0 = static_cast<int>(i % chunks) * 8;
  DequantRowsItem(a, static_cast<int64_t>(i / chunks), c0, min(8, a.g.head_dim - c0));
}

template <int kBits>
__global__ void DequantRowsFastKernel(DequantArgs a, uint64_t items) {
  const uint64_t i = GlobalThread();
  if (i < items) FastDequantItem<kBits>(a, i);
}

__global__ void DequantChainsKernel(DequantArgs a, uint64_t items) {
  const uint64_t i = GlobalThread();
  if (i < items) DequantChainItem(a, static_cast<int64_t>(i / a.g.head_dim), static_cast<int>(i % a.g.head_dim));
}

// One warp per stream, thread j running lane j (a stream's lanes step together; see
// rans_ops.h); threads past the stream's lane count only join the warp votes.
static_assert(kRansMaxLanes == 32, "a stream's lanes are one warp");
constexpr int kRansStreamsPerBlock = 4;
__global__ void RansDecodeKernel(RansDecodeArgs a) {
  const int sub = static_cast<int>(threadIdx.x / kRansMaxLanes);
  const int j = static_cast<int>(threadIdx.x % kRansMaxLanes);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kRansStreamsPerBlock + sub;
  if (i >= a.num_streams) return;  // the whole warp of the stream
  const RansStreamDesc s = a.streams[i];
  if (s.lanes == 1) {
    if (j == 0) RansDecodeSerialItem(a, i);
    return;
  }
  constexpr unsigned kWarp = 0xffffffffu;
  const bool lane = static_cast<uint32_t>(j) < s.lanes;
  uint32_t x = lane ? s.states[j] : kRansStateLow;
  uint64_t pos = 0;
  uint8_t* out = a.out + s.out_offset;
  for (RansCursor cur = RansCursorStart(s); cur.k0 < s.num_symbols; RansCursorNext(s, cur)) {
    const bool active = lane && static_cast<uint64_t>(j) < s.num_symbols - cur.k0;
    const bool need = active && RansLaneDecode(a, s, cur, out, j, x);
    const uint32_t m = __ballot_sync(kWarp, need);
    const bool ok = !active || RansLaneRefill(a, s, pos, m, j, x);
    if (!__all_sync(kWarp, ok)) {
      if (j == 0) a.status[i] = kRansRanOut;
      return;
    }
    pos += __popc(m);
  }
  const uint32_t bad = __ballot_sync(kWarp, x != kRansStateLow);
  if (j == 0) {
    a.status[i] = RansLeftoverBytes(s, pos) != 0 ? RansStatusWord(kRansLeftover, RansLeftoverBytes(s, pos))
                  : bad != 0                    ? RansStatusWord(kRansBadFinal, __ffs(bad) - 1)
                                                : kRansOk;
  }
}

uint64_t Blocks(uint64_t threads, int per_block = kThreads) { return (threads + per_block - 1) / per_block; }
cudaStream_t Native(cuda::Stream s) { return static_cast<cudaStream_t>(s); }

// Launches `kernel` on `threads` threads in blocks of `per_block` (nothing when there are no
// threads); the launch's error.
template <typename... Params, typename... Args>
int LaunchThreads(uint64_t threads, int per_block, cuda::Stream s, void (*kernel)(Params...),
                  const Args&... args) {
  if (threads == 0) return cudaSuccess;
  kernel<<<Blocks(threads, per_block), per_block, 0, Native(s)>>>(args...);
  return cudaGetLastError();
}

}  // namespace

namespace cuda {

int LaunchCopyRows(const CopyRowsArgs& a, Stream s) {
  const int chunks = (a.head_dim + 7) / 8;
  const uint64_t items = static_cast<uint64_t>(a.num_rows) * chunks;
  return LaunchThreads(items, kThreads, s, CopyRowsKernel, a, items, chunks);
}

int LaunchTokenRows(const TokenRowsArgs& a, uint64_t scratch_bytes, int warps, Stream s) {
  if (a.num_items == 0) return cudaSuccess;
  TokenRowsKernel<<<Blocks(a.num_items, warps), 32 * warps, warps * scratch_bytes, Native(s)>>>(a, scratch_bytes);
  return cudaGetLastError();
}

int LaunchTokenRowsFast(const TokenRowsArgs& a, Stream s) {
  const uint64_t lanes = static_cast<uint64_t>(a.num_items) * (a.g.head_dim / kFastElems);
  if (lanes == 0) return cudaSuccess;
  WithFastBits(a.g.bits, [&](auto bits) {
    TokenRowsFastKernel<bits()><<<Blocks(lanes), kThreads, 0, Native(s)>>>(a);
  });
  return cudaGetLastError();
}

int LaunchChannelReduce(const ChannelArgs& a, Stream s) {
  const int tiles = (a.g.head_dim + 31) / 32;
  const uint64_t blocks = static_cast<uint64_t>(a.num_qgroups) * a.max_chunks * tiles;
  if (blocks == 0) return cudaSuccess;
  ChannelReduceKernel<<<blocks, dim3(32, kSlices), 0, Native(s)>>>(a, tiles);
  return cudaGetLastError();
}

int LaunchChannelFinish(const ChannelArgs& a, Stream s) {
  const uint64_t items = static_cast<uint64_t>(a.num_qgroups) * a.g.head_dim;
  return LaunchThreads(items, kThreads, s, ChannelFinishKernel, a, items);
}

int LaunchChannelCodes(const ChannelArgs& a, Stream s) {
  return LaunchThreads(a.num_words, kThreads, s, ChannelCodesKernel, a);
}

int LaunchChannelChains(const ChannelArgs& a, Stream s) {
  const uint64_t items = static_cast<uint64_t>(a.g.num_heads) * a.g.head_dim;
  // Few threads, long serial loops: small blocks spread them over more SMs.
  return LaunchThreads(items, 64, s, ChannelChainsKernel, a, items);
}

int LaunchPack(const PackArgs& a, Stream s) {
  return LaunchThreads(a.num_words, kThreads, s, PackKernel, a);
}

int LaunchDequantRows(const DequantArgs& a, Stream s) {
  const int chunks = (a.g.head_dim + 7) / 8;
  const uint64_t items = static_cast<uint64_t>(a.num_items) * chunks;
  return LaunchThreads(items, kThreads, s, DequantRowsKernel, a, items, chunks);
}

int LaunchDequantRowsFast(const DequantArgs& a, Stream s) {
  const uint64_t items = static_cast<uint64_t>(a.num_items) * (a.g.head_dim / kFastElems);
  if (items == 0) return cudaSuccess;
  WithFastBits(a.g.bits, [&](auto bits) {
    DequantRowsFastKernel<bits()><<<Blocks(items), kThreads, 0, Native(s)>>>(a, items);
  });
  return cudaGetLastError();
}

int LaunchDequantChains(const DequantArgs& a, Stream s) {
  const uint64_t items = static_cast<uint64_t>(a.num_items) * a.g.head_dim;
  return LaunchThreads(items, 64, s, DequantChainsKernel, a, items);
}

int LaunchRansDecode(const RansDecodeArgs& a, Stream s) {
  if (a.num_streams == 0) return cudaSuccess;
  RansDecodeKernel<<<Blocks(a.num_streams, kRansStreamsPerBlock), kRansStreamsPerBlock * kRansMaxLanes, 0,
                     Native(s)>>>(a);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kvwire::gpu
