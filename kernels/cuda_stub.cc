// Built instead of cuda_backend.cc when CMake found no CUDA compiler.
#include "kernels/backend.h"

namespace kvwire::gpu {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int) {
  return absl::FailedPreconditionError("this build has no CUDA (configure with nvcc present, KVWIRE_CUDA=AUTO or ON)");
}

bool CudaDeviceAvailable() { return false; }

}  // namespace kvwire::gpu
