#include "server/engine/blas_kernels.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>

namespace kvwire::engine {
namespace {

// The core OpenBLAS chose, or nullptr without OpenBLAS. Looked up at run time: the engine links
// libtorch, which reaches whichever BLAS the system provides (libblas.so.3 may be OpenBLAS, BLIS
// or the reference BLAS).
const char* OpenBlasCore() {
  using CoreName = char* (*)();
  auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return core_name != nullptr ? core_name() : nullptr;
}

}  // namespace

const char* BetterOpenBlasCore() {
  if (getenv("OPENBLAS_CORETYPE") != nullptr) return nullptr;
  const char* core = OpenBlasCore();
  if (core == nullptr || strcasecmp(core, "prescott") != 0) return nullptr;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

void MaybeRestartWithBetterBlasKernels(char** argv) {
  const char* core = BetterOpenBlasCore();
  if (core == nullptr) return;
  // Set even if exec fails, so that no child process tries again.
  if (setenv("OPENBLAS_CORETYPE", core, /*overwrite=*/0) != 0) return;
  execv("/proc/self/exe", argv);
}

const char* BlasName() {
  static const std::string name = [] {
    const char* core = OpenBlasCore();
    return core != nullptr ? std::string("OpenBLAS ") + core + " kernels"
                           : std::string("unknown BLAS");
  }();
  return name.c_str();
}

void SetBlasThreads(int threads) {
  static std::atomic<int> current{0};
  if (threads < 1 || current.exchange(threads) == threads) return;
  using SetThreads = void (*)(int);
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set != nullptr) set(threads);
}

}  // namespace kvwire::engine
