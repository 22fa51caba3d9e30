#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds, and runs the main job: a decode node (the bundled
# target model), a prefill node that streams it compressed caches, and a scout node (the bundled
# scout model) on loopback; then `kvwire demo` asks held-out needle questions at several presets
# and prints answer, correct or not, bytes on the wire and time to first token per preset.
# Usage: scripts/demo.sh [extra `kvwire demo` options, e.g. --length 1024 --task multikey]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

KVWIRE=build/client/kvwire
TARGET=models/target
SCOUT=models/scout
[[ -f $SCOUT/config.json ]] || SCOUT=$TARGET  # before the scout is trained, the target scouts
export OMP_WAIT_POLICY=PASSIVE               # spinning OpenMP workers starve OpenBLAS (README)

# Free loopback ports, chosen by the kernel.
read -r DECODE_PORT PREFILL_PORT SCOUT_PORT < <(python3 - 2>/dev/null <<'PY' || echo "50551 50552 50553"
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)
LOG_DIR=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$LOG_DIR"
}
trap cleanup EXIT

"$KVWIRE" serve decode --model "$TARGET" --listen "127.0.0.1:$DECODE_PORT" --threads 1 \
  >"$LOG_DIR/decode.log" 2>&1 &
pids+=($!)
"$KVWIRE" serve prefill --model "$TARGET" --listen "127.0.0.1:$PREFILL_PORT" --threads 1 \
  --decode "127.0.0.1:$DECODE_PORT" >"$LOG_DIR/prefill.log" 2>&1 &
pids+=($!)
"$KVWIRE" serve scout --model "$SCOUT" --listen "127.0.0.1:$SCOUT_PORT" --threads 1 \
  --target "127.0.0.1:$DECODE_PORT" >"$LOG_DIR/scout.log" 2>&1 &
pids+=($!)

for port in "$DECODE_PORT" "$PREFILL_PORT" "$SCOUT_PORT"; do
  for _ in $(seq 100); do
    "$KVWIRE" health --target "127.0.0.1:$port" --timeout 1 >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! "$KVWIRE" health --target "127.0.0.1:$port" --timeout 2; then
    echo "demo: the node on port $port did not come up; its log:" >&2
    cat "$LOG_DIR"/*.log >&2
    exit 1
  fi
done

echo
echo "target: $TARGET   scout: $SCOUT   (model cards: $TARGET/README.md, $SCOUT/README.md)"
"$KVWIRE" demo --prefill "127.0.0.1:$PREFILL_PORT" --scout "127.0.0.1:$SCOUT_PORT" "$@"
