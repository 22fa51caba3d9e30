#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS with the golden
# bad-frame corpus as seeds. Any crash, leak or sanitizer report fails the run.
# Usage: scripts/fuzz_smoke.sh BUILD_DIR [SECONDS]
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?build dir}
seconds=${2:-20}
cxx=$(command -v clang++-14 || command -v clang++)
cc=$(command -v clang-14 || command -v clang)
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DKVWIRE_FUZZ=ON >/dev/null
fi
cmake --build "$build" --target frame_decode_never_crashes_fuzzer frame_roundtrip_exact_fuzzer \
  rans_vectorised_matches_scalar_fuzzer >/dev/null
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp "$src"/tests/corpus/bad_frames/*.bin "$corpus"/
for target in frame_decode_never_crashes_fuzzer frame_roundtrip_exact_fuzzer \
  rans_vectorised_matches_scalar_fuzzer; do
  work=$(mktemp -d -p "$corpus")
  [[ $target == frame_decode_never_crashes_fuzzer ]] && cp "$corpus"/*.bin "$work"/
  # The rANS target's input is a seed and a list of edits: short inputs at full length at once.
  lengths=(-max_len=65536)
  [[ $target == rans_vectorised_matches_scalar_fuzzer ]] && lengths=(-max_len=128 -len_control=0)
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -rss_limit_mb=2048 "${lengths[@]}" \
    -print_final_stats=1 "$work" 2>"$corpus/$target.log" || { tail -50 "$corpus/$target.log"; exit 1; }
  runs=$(grep -E "stat::number_of_executed_units" "$corpus/$target.log" | awk '{print $2}')
  echo "$target: ${runs:-?} executions in ${seconds}s, no crash"
done
