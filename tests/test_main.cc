// main() of every kvwire GoogleTest binary: gtest_main's, after giving torch-using tests the
// OpenBLAS kernels their CPU supports (server/engine/blas_kernels.h); a no-op elsewhere.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/blas_kernels.h"

int main(int argc, char** argv) {
  kvwire::engine::MaybeRestartWithBetterBlasKernels(argv);
  testing::InitGoogleMock(&argc, argv);
  return RUN_ALL_TESTS();
}
