#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (packages, pinned test data), builds in Release and runs the
# whole test suite under ctest. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 1500
