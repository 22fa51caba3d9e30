// Launchers of the CUDA kernels (kernels.cu). Plain declarations without CUDA or absl types so
// that host code compiled by the C++ compiler (cuda_backend.cc) can call them; each returns the
// cudaError_t of the launch (0 = cudaSuccess) and launches nothing when there is no work.
#pragma once

#include <cstdint>

#include "kernels/rans_ops.h"
#include "kernels/section_ops.h"

namespace kvwire::gpu::cuda {

using Stream = void*;  // cudaStream_t

int LaunchCopyRows(const CopyRowsArgs& a, Stream stream);
int LaunchTokenRows(const TokenRowsArgs& a, uint64_t scratch_bytes, int warps_per_block, Stream stream);
int LaunchTokenRowsFast(const TokenRowsArgs& a, Stream stream);
int LaunchChannelReduce(const ChannelArgs& a, Stream stream);
int LaunchChannelFinish(const ChannelArgs& a, Stream stream);
int LaunchChannelCodes(const ChannelArgs& a, Stream stream);
int LaunchChannelChains(const ChannelArgs& a, Stream stream);
int LaunchPack(const PackArgs& a, Stream stream);
int LaunchDequantRows(const DequantArgs& a, Stream stream);
int LaunchDequantRowsFast(const DequantArgs& a, Stream stream);
int LaunchDequantChains(const DequantArgs& a, Stream stream);
int LaunchRansDecode(const RansDecodeArgs& a, Stream stream);

}  // namespace kvwire::gpu::cuda
