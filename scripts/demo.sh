#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds, and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/client/kvwire codec-demo "$@"
