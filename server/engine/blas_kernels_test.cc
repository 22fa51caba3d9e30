#include "server/engine/blas_kernels.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <strings.h>

#include <string>

#include "gtest/gtest.h"
#include "server/engine/engine.h"

namespace kvwire::engine {
namespace {

// The core OpenBLAS runs with in this process, or "" without OpenBLAS.
std::string LoadedOpenBlasCore() {
  using CoreName = char* (*)();
  auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return core_name != nullptr && core_name() != nullptr ? core_name() : "";
}

// This binary links the engine (libtorch, so the system BLAS) and its main() is
// tests/test_main.cc, which restarts it with better kernels where OpenBLAS fell back to its
// generic ones.
TEST(BlasKernelsTest, MainLeavesOpenBlasOnKernelsTheCpuSupports) {
  // Keeps the engine, and with it libtorch and the BLAS, linked in.
  EXPECT_FALSE(Engine::Load({.model_dir = "/nonexistent"}).ok());
  const std::string core = LoadedOpenBlasCore();
  if (core.empty()) GTEST_SKIP() << "the BLAS is not OpenBLAS";
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_NE(strcasecmp(core.c_str(), "prescott"), 0)
        << "OpenBLAS runs its generic SSE3 kernels on a CPU with AVX2";
  }
  EXPECT_EQ(BetterOpenBlasCore(), nullptr) << "core " << core;
}

TEST(BlasKernelsTest, AnExplicitChoiceStands) {
  const char* before = getenv("OPENBLAS_CORETYPE");
  const std::string saved = before ? before : "";
  setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  EXPECT_EQ(BetterOpenBlasCore(), nullptr);
  if (before) {
    setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  } else {
    unsetenv("OPENBLAS_CORETYPE");
  }
}

}  // namespace
}  // namespace kvwire::engine
