#!/usr/bin/env bash
# Packs the CUDA test and benchmark binaries built here, with the shared libraries they load
# that a bare CUDA machine lacks (abseil, zstd, xxhash, this toolchain's libstdc++), into
# gpu_bundle/ (git-ignored), so that a GPU machine runs them without building anything:
#
#   scripts/gpu_bundle.sh [build-dir]          # here (needs nvcc: the build compiles kernels/)
#   carry gpu_bundle/, run scripts/gpu_check.sh there (docs/GPU.md, "Running ...").
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
targets=(cuda_kernels_test kernels_test kvwire_gpu_bench)
ninja -C "$build" "${targets[@]}" >/dev/null
if [ ! -f "$build/kernels/libkvwire_cuda_kernels.a" ]; then
  echo "gpu_bundle: $build was configured without CUDA kernels (is nvcc installed?)" >&2
  exit 1
fi
rm -rf gpu_bundle
mkdir -p gpu_bundle/bin gpu_bundle/lib
for t in "${targets[@]}"; do cp "$build/kernels/$t" gpu_bundle/bin/; done
# Every library the binaries resolve here except the C runtime and the CUDA driver, which the
# GPU machine has (and must use its own of).
ldd gpu_bundle/bin/* | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda)\.so' |
  while read -r lib; do cp -L "$lib" gpu_bundle/lib/; done
du -sh gpu_bundle | sed 's/^/gpu_bundle: /'
