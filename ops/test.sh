#!/usr/bin/env bash
# Runs every test of the workspace against a real PostgreSQL and the embedded SQLite store.
# Uses DATABASE_URL when it is set; otherwise installs (if needed) and starts a throwaway
# PostgreSQL cluster and stops it afterwards. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/linkage-pg.XXXXXX)
  trap 'ops/pg-stop.sh "$pg_dir"' EXIT
  DATABASE_URL=$(LINKAGE_PG_DIR="$pg_dir" ops/pg-start.sh)
fi
export LINKAGE_TEST_DATABASE_URL="$DATABASE_URL"
# A missing database is a failure here, never a silent skip.
export LINKAGE_REQUIRE_PG=1

cargo test --workspace --locked "$@"
