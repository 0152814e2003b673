#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on a free loopback port and prints its URL on stdout.
# Installs Debian's postgresql first if this machine lacks it. Stop it with ops/pg-stop.sh DIR
# (the directory is printed on stderr and written to $DIR/url).
#
# Usage: url=$(ops/pg-start.sh)            # new cluster in a temporary directory
#        LINKAGE_PG_DIR=/some/dir ops/pg-start.sh
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "pg-start: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

dir=${LINKAGE_PG_DIR:-$(mktemp -d /tmp/linkage-pg.XXXXXX)}
mkdir -p "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# PostgreSQL refuses to run as root: run it as the postgres user when we are root.
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$dir"
  as_pg() { su postgres -s /bin/sh -c "$*"; }
else
  as_pg() { sh -c "$*"; }
fi

as_pg "'$bin/initdb' -D '$dir/data' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >'$dir/initdb.log' 2>&1" \
  || { cat "$dir/initdb.log" >&2; exit 1; }
# fsync off: a test cluster trades durability for speed. Benchmarks start their own with it on.
opts="-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=${LINKAGE_PG_FSYNC:-off}"
as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -o \"$opts\" -w -t 60 start >/dev/null" \
  || { cat "$dir/server.log" >&2; exit 1; }

url="postgres://postgres@127.0.0.1:$port/postgres"
echo "$url" > "$dir/url"
echo "$opts" > "$dir/opts"
echo "pg-start: PostgreSQL $(basename "$(dirname "$bin")") in $dir on port $port" >&2
echo "$url"
