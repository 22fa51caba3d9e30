// OpenBLAS kernel selection for CPUs its runtime detection does not know.
//
// Debian 12's OpenBLAS (0.3.21, built for every x86 core type) does not recognise recent Xeons
// (e.g. Sapphire Rapids, CPUID family 6 model 143) and falls back to its Prescott (SSE3)
// kernels: measured on such a machine, sgemm ran 2.7x slower (prefill 361 vs 970 tokens/s)
// and training steps 1.75x slower than with the SkylakeX kernels the CPU supports. OpenBLAS
// picks its kernels when it is loaded, before main(), and reads OPENBLAS_CORETYPE only then,
// so the fix is to restart the process once with that variable set.
#pragma once

namespace kvwire::engine {

// The OPENBLAS_CORETYPE this process should run with, or nullptr when it is fine as it is: the
// variable is already set, the BLAS is not OpenBLAS, or OpenBLAS chose a core other than its
// generic fallback, or the CPU has neither AVX2 nor AVX-512.
const char* BetterOpenBlasCore();

// If BetterOpenBlasCore() names one, sets OPENBLAS_CORETYPE and re-executes the program with
// the same arguments (call first thing in main, before any thread starts). Returns only when
// nothing needs changing or the re-exec failed (the process then runs on as it is).
void MaybeRestartWithBetterBlasKernels(char** argv);

// What runs the matrix products, for reports: "OpenBLAS <core> kernels", or "unknown BLAS"
// when OpenBLAS is not loaded.
const char* BlasName();

// Sets OpenBLAS's own thread pool (libopenblas0-pthread starts one thread per core, apart from
// torch's) to `threads`, so that a node limited to N threads does not also run N BLAS threads
// spinning in sched_yield beside them. Once per value; a no-op without OpenBLAS.
void SetBlasThreads(int threads);

}  // namespace kvwire::engine
