// Where the section kernels run: the CUDA backend (cuda_backend.cc, device memory) or the
// host reference (reference_backend.cc, host memory, the same work-item functions run in a
// loop). The orchestration above (section_codec.h, gpu_frame.h) is written once against this
// interface, so the host reference tests all of it on a machine without a GPU.
//
// Pointers passed to a backend point into memory it allocated. Kernel launches may run
// asynchronously; CopyToHost and Synchronize wait for them.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/rans_ops.h"
#include "kernels/section_ops.h"

namespace kvwire::gpu {

#define KVW_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    if (absl::Status _kvw_st = (expr); !_kvw_st.ok()) \
      return _kvw_st;                             \
  } while (0)

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // The cudaStream_t the CUDA backend launches on (for timing with CUDA events); null otherwise.
  virtual void* cuda_stream() const { return nullptr; }

  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
  virtual absl::Status CopyToBackend(void* dst, const void* host, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyWithin(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status Zero(void* dst, size_t bytes) = 0;
  virtual absl::Status Synchronize() = 0;

  // One method per kernel (section_ops.h / rans_ops.h name the work items).
  virtual absl::Status CopyRows(const CopyRowsArgs& a) = 0;
  virtual absl::Status TokenRows(const TokenRowsArgs& a, uint64_t scratch_bytes,
                                 int warps_per_block) = 0;
  virtual absl::Status TokenRowsFast(const TokenRowsArgs& a) = 0;  // fast_ops.h; a.num_items rows
  virtual absl::Status ChannelReduce(const ChannelArgs& a) = 0;   // into a.partial
  virtual absl::Status ChannelFinish(const ChannelArgs& a) = 0;   // params and a.quant
  virtual absl::Status ChannelCodes(const ChannelArgs& a) = 0;    // packed main codes
  virtual absl::Status ChannelChains(const ChannelArgs& a) = 0;   // params and a.unpacked
  virtual absl::Status Pack(const PackArgs& a) = 0;
  virtual absl::Status DequantRows(const DequantArgs& a) = 0;
  virtual absl::Status DequantRowsFast(const DequantArgs& a) = 0;  // fast_ops.h; a.num_items rows
  virtual absl::Status DequantChains(const DequantArgs& a) = 0;   // a.num_items chains
  virtual absl::Status RansDecode(const RansDecodeArgs& a) = 0;
};

// The host reference.
std::unique_ptr<Backend> MakeReferenceBackend();

// The CUDA backend on `device`: FailedPrecondition when this build has no CUDA or the machine
// has no such device.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device = 0);
// Whether a CUDA device is usable (false in a build without CUDA).
bool CudaDeviceAvailable();

// Backend memory owned by one object (the backend must outlive it).
class Buffer {
 public:
  Buffer() = default;
  static absl::StatusOr<Buffer> Make(Backend& backend, size_t bytes);
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Reset(); }
  void Reset();
  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size() const { return size_; }

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Scratch memory for a sequence of launches: Reserve the total once (it only grows), then Take
// pieces (256-byte aligned) until Clear.
class Workspace {
 public:
  explicit Workspace(Backend& backend) : backend_(backend) {}
  absl::Status Reserve(size_t bytes);
  // A piece of `bytes` (fails if the reservation is too small: a planning bug).
  absl::StatusOr<void*> Take(size_t bytes);
  void Clear() { used_ = 0; }
  static size_t Aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

 private:
  Backend& backend_;
  Buffer buffer_;
  size_t used_ = 0;
};

}  // namespace kvwire::gpu
