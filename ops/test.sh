#!/usr/bin/env bash
# Runs every test of the workspace against a real PostgreSQL, the embedded SQLite store and real
# nats-servers. Uses DATABASE_URL when it is set; otherwise installs (if needed) and starts a
# throwaway PostgreSQL cluster and stops it afterwards. The NATS tests start a nats-server of their
# own each (they stop and restart it mid-test); ops/nats-install.sh provides the binary (the one in
# LINKAGE_NATS_SERVER, on PATH, or a pinned download). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/linkage-pg.XXXXXX)
  trap 'ops/pg-stop.sh "$pg_dir"' EXIT
  DATABASE_URL=$(LINKAGE_PG_DIR="$pg_dir" ops/pg-start.sh)
fi
export LINKAGE_TEST_DATABASE_URL="$DATABASE_URL"
# Tests that only publish use NATS_URL when it is set (each on a stream of its own); the ones
# that stop and restart the broker always start a server of their own from this binary.
export LINKAGE_TEST_NATS_URL="${NATS_URL:-}"
LINKAGE_NATS_SERVER=$(ops/nats-install.sh)
export LINKAGE_NATS_SERVER
# The single-sign-on tests start a real OpenID provider (npm's oidc-provider, on node).
LINKAGE_OIDC_PROVIDER=$(ops/oidc-install.sh)
export LINKAGE_OIDC_PROVIDER
# The API fuzzing suite runs schemathesis (PyPI) against a real server on each store.
LINKAGE_SCHEMATHESIS=$(ops/schemathesis-install.sh)
export LINKAGE_SCHEMATHESIS
# The FHIR tests validate every served resource against the official R4 JSON Schema (npm).
LINKAGE_FHIR_VALIDATOR=$(ops/fhir-schema-install.sh)
export LINKAGE_FHIR_VALIDATOR
# ... and drive the referral loop through a real FHIR client (PyPI's fhirpy).
LINKAGE_FHIRPY=$(ops/fhirpy-install.sh)
export LINKAGE_FHIRPY
# A missing database, broker or tool is a failure here, never a silent skip.
export LINKAGE_REQUIRE_PG=1 LINKAGE_REQUIRE_NATS=1 LINKAGE_REQUIRE_OIDC=1
export LINKAGE_REQUIRE_SCHEMATHESIS=1 LINKAGE_REQUIRE_FHIR_VALIDATOR=1
export LINKAGE_REQUIRE_FHIRPY=1

# Time is an input: every test server's clock is pinned (LINKAGE_TEST_CLOCK). The whole workspace
# runs just after 00:00 UTC, then the end-to-end suites and the binary's tests run again just
# before 24:00 UTC, so a test that mixes the machine's clock into a date fails on every run
# instead of at some hours of the day.
# Extra arguments replace both selections (`ops/test.sh -p linkage-tests --test e2e billing::`
# runs that suite under both clocks).
first=("$@") second=("$@")
[ $# -gt 0 ] || { first=(--workspace); second=(-p linkage-tests --test e2e); }
LINKAGE_TEST_CLOCK=2026-11-16T00:00:30Z cargo test --locked "${first[@]}"
LINKAGE_TEST_CLOCK=2026-11-16T23:59:30Z cargo test --locked "${second[@]}"
