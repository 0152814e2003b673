#!/usr/bin/env bash
# Stops a nats-server started by ops/nats-start.sh and removes its directory.
# Usage: ops/nats-stop.sh DIR
set -euo pipefail
dir=${1:?usage: ops/nats-stop.sh DIR}
if [ -f "$dir/pid" ]; then
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -rf "$dir"
