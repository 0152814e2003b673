#!/usr/bin/env bash
# Prints benchmark figures beside their baselines (release build), against DATABASE_URL or a
# throwaway PostgreSQL with fsync on (a durable configuration), started and stopped here.
#
# Usage: ops/bench.sh [append|projections] [options of `linkage bench NAME`]
#   ops/bench.sh append --seconds 10
#   ops/bench.sh projections --events 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
bench=append
case "${1:-}" in append|projections) bench=$1; shift ;; esac
cargo build --release --locked --bin linkage
if [ -z "${DATABASE_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/linkage-pg.XXXXXX)
  trap 'ops/pg-stop.sh "$pg_dir"' EXIT
  DATABASE_URL=$(LINKAGE_PG_FSYNC=on LINKAGE_PG_DIR="$pg_dir" ops/pg-start.sh)
fi
target/release/linkage bench "$bench" --database-url "$DATABASE_URL" "$@"
