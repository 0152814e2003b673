#!/usr/bin/env bash
# Prints benchmark figures beside their baselines (release build), against DATABASE_URL or a
# throwaway PostgreSQL with fsync on (a durable configuration), started and stopped here.
#
# The relay benchmark also needs NATS: NATS_URL, or a throwaway nats-server started here.
#
# Usage: ops/bench.sh [append|projections|relay|billing|http|costs] [options of `linkage-bench NAME`]
#   ops/bench.sh append --seconds 10
#   ops/bench.sh http --clients 1,16
#   ops/bench.sh http --contend 1          (a busy day: a thread spinning on one core throughout)
#   ops/bench.sh projections --events 1000000
#   ops/bench.sh relay --events 1000000
#   ops/bench.sh billing --lines 1000000
#   ops/bench.sh costs --sizes 10000,1000000,10000000
set -euo pipefail
cd "$(dirname "$0")/.."
bench=append
case "${1:-}" in append|projections|relay|billing|http|costs) bench=$1; shift ;; esac
cargo build --release --locked --bin linkage-bench
if [ -z "${DATABASE_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/linkage-pg.XXXXXX)
  trap 'ops/pg-stop.sh "$pg_dir"' EXIT
  DATABASE_URL=$(LINKAGE_PG_FSYNC=on LINKAGE_PG_DIR="$pg_dir" ops/pg-start.sh)
fi
if [ "$bench" = relay ] && [ -z "${NATS_URL:-}" ]; then
  nats_dir=$(mktemp -d /tmp/linkage-nats.XXXXXX)
  trap 'ops/nats-stop.sh "$nats_dir"; [ -n "${pg_dir:-}" ] && ops/pg-stop.sh "$pg_dir"' EXIT
  NATS_URL=$(LINKAGE_NATS_DIR="$nats_dir" ops/nats-start.sh)
  export NATS_URL
fi
target/release/linkage-bench "$bench" --database-url "$DATABASE_URL" "$@"
