#!/usr/bin/env bash
# Prints the benchmark figures of `linkage bench append` (release build) against DATABASE_URL, or
# against a throwaway PostgreSQL with fsync on (a durable configuration), started and stopped here.
# Extra arguments go to `linkage bench append` (e.g. --seconds 10 --clients 1,4,16).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin linkage
if [ -z "${DATABASE_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/linkage-pg.XXXXXX)
  trap 'ops/pg-stop.sh "$pg_dir"' EXIT
  DATABASE_URL=$(LINKAGE_PG_FSYNC=on LINKAGE_PG_DIR="$pg_dir" ops/pg-start.sh)
fi
target/release/linkage bench append --database-url "$DATABASE_URL" "$@"
