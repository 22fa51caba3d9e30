// The CUDA backend: device memory, one non-blocking stream, the kernels of kernels.cu.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/cuda_launch.h"

namespace kvwire::gpu {
namespace {

absl::Status CudaError(int error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA ", what, ": ",
                                          cudaGetErrorString(static_cast<cudaError_t>(error))));
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  std::string_view name() const override { return "cuda"; }
  void* cuda_stream() const override { return stream_; }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    void* p = nullptr;
    // Never zero bytes: every buffer gets a distinct, aligned address.
    if (absl::Status s = CudaError(cudaMalloc(&p, bytes < 256 ? 256 : bytes), "cudaMalloc"); !s.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat(s.message(), " (", bytes, " bytes)"));
    }
    return p;
  }
  void Free(void* p) override { cudaFree(p); }
  absl::Status CopyToBackend(void* dst, const void* host, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    // The host memory may be freed right after the call returns: wait for the copy.
    KVW_RETURN_IF_ERROR(CudaError(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_), "copy to device"));
    return CudaError(cudaStreamSynchronize(stream_), "copy to device");
  }
  absl::Status CopyToHost(void* host, const void* src, size_t bytes) override {
    if (bytes == 0) return Synchronize();
    KVW_RETURN_IF_ERROR(CudaError(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to host"));
    return CudaError(cudaStreamSynchronize(stream_), "copy to host (or an earlier kernel)");
  }
  absl::Status CopyWithin(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    return CudaError(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "device copy");
  }
  absl::Status Zero(void* dst, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    return CudaError(cudaMemsetAsync(dst, 0, bytes, stream_), "memset");
  }
  absl::Status Synchronize() override {
    return CudaError(cudaStreamSynchronize(stream_), "synchronize (a kernel failed)");
  }

  absl::Status CopyRows(const CopyRowsArgs& a) override {
    return CudaError(cuda::LaunchCopyRows(a, stream_), "CopyRows launch");
  }
  absl::Status TokenRows(const TokenRowsArgs& a, uint64_t scratch_bytes, int warps) override {
    return CudaError(cuda::LaunchTokenRows(a, scratch_bytes, warps, stream_), "TokenRows launch");
  }
  absl::Status TokenRowsFast(const TokenRowsArgs& a) override {
    return CudaError(cuda::LaunchTokenRowsFast(a, stream_), "TokenRowsFast launch");
  }
  absl::Status ChannelReduce(const ChannelArgs& a) override {
    return CudaError(cuda::LaunchChannelReduce(a, stream_), "ChannelReduce launch");
  }
  absl::Status ChannelFinish(const ChannelArgs& a) override {
    return CudaError(cuda::LaunchChannelFinish(a, stream_), "ChannelFinish launch");
  }
  absl::Status ChannelCodes(const ChannelArgs& a) override {
    return CudaError(cuda::LaunchChannelCodes(a, stream_), "ChannelCodes launch");
  }
  absl::Status ChannelChains(const ChannelArgs& a) override {
    return CudaError(cuda::LaunchChannelChains(a, stream_), "ChannelChains launch");
  }
  absl::Status Pack(const PackArgs& a) override { return CudaError(cuda::LaunchPack(a, stream_), "Pack launch"); }
  absl::Status DequantRows(const DequantArgs& a) override {
    return CudaError(cuda::LaunchDequantRows(a, stream_), "DequantRows launch");
  }
  absl::Status DequantRowsFast(const DequantArgs& a) override {
    return CudaError(cuda::LaunchDequantRowsFast(a, stream_), "DequantRowsFast launch");
  }
  absl::Status DequantChains(const DequantArgs& a) override {
    return CudaError(cuda::LaunchDequantChains(a, stream_), "DequantChains launch");
  }
  absl::Status RansDecode(const RansDecodeArgs& a) override {
    return CudaError(cuda::LaunchRansDecode(a, stream_), "RansDecode launch");
  }

 private:
  int device_;
  cudaStream_t stream_;
};

}  // namespace

bool CudaDeviceAvailable() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device (", e != cudaSuccess ? cudaGetErrorString(e) : "none found", ")"));
  }
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(absl::StrCat("no CUDA device ", device, " (", count, " present)"));
  }
  KVW_RETURN_IF_ERROR(CudaError(cudaSetDevice(device), "cudaSetDevice"));
  cudaStream_t stream = nullptr;
  KVW_RETURN_IF_ERROR(CudaError(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream"));
  return std::unique_ptr<Backend>(new CudaBackend(device, stream));
}

}  // namespace kvwire::gpu
