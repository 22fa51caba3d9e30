#!/usr/bin/env bash
# Runs on the GPU machine, in the repository root, with gpu_bundle/ from scripts/gpu_bundle.sh:
# the CUDA kernel tests against kvcodec (bit for bit), their host-reference twin, and the
# kernel benchmark. Results go to $OUT (or ./gpu_out): test logs and JSON, bench text and JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/gpu_bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVWIRE_SOURCE_DIR="$PWD"  # the golden bad-frame corpus
status=0
(nvidia-smi -L || echo "no nvidia-smi") 2>&1 | tee "$out/device.txt"
for t in cuda_kernels_test kernels_test; do
  timeout 300 gpu_bundle/bin/$t --gtest_output="json:$out/$t.json" >"$out/$t.log" 2>&1 || status=1
  echo "$t: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?[,.]' "$out/$t.log" | tr '\n' ' ')"
done
# The default shape is the issue's: a 32k-token cache of Llama-3-8B's shape.
timeout 240 gpu_bundle/bin/kvwire_gpu_bench --reps 5 >"$out/gpu_bench.txt" 2>&1 || status=1
timeout 240 gpu_bundle/bin/kvwire_gpu_bench --reps 5 --json >"$out/gpu_bench.json" 2>"$out/gpu_bench_json.err" || status=1
cat "$out/gpu_bench.txt"
exit $status
