#!/usr/bin/env bash
# Starts a throwaway nats-server with JetStream on a free loopback port and prints its URL on
# stdout (installing the server first if needed: ops/nats-install.sh). Its store, log and pid
# live in the directory printed on stderr. Stop it with ops/nats-stop.sh DIR.
#
# Usage: url=$(ops/nats-start.sh)           # new server in a temporary directory
#        LINKAGE_NATS_DIR=/some/dir ops/nats-start.sh
set -euo pipefail
here=$(dirname "$0")
bin=$("$here/nats-install.sh")
dir=${LINKAGE_NATS_DIR:-$(mktemp -d /tmp/linkage-nats.XXXXXX)}
mkdir -p "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" -a 127.0.0.1 -p "$port" -js -sd "$dir/jetstream" >"$dir/server.log" 2>&1 &
echo $! > "$dir/pid"
for _ in $(seq 1 100); do
  if grep -q "Server is ready" "$dir/server.log"; then break; fi
  sleep 0.1
done
grep -q "Server is ready" "$dir/server.log" || { cat "$dir/server.log" >&2; exit 1; }
url="nats://127.0.0.1:$port"
echo "$url" > "$dir/url"
echo "nats-start: $("$bin" --version) in $dir on port $port" >&2
echo "$url"
