#!/usr/bin/env bash
# Runs the server on the embedded SQLite store under ./linkage-data (no database server needed).
# Extra arguments go to `linkage serve`, e.g. --listen 0.0.0.0:8080 or --database-url URL.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked --bin linkage -- serve "$@"
