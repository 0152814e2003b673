#!/usr/bin/env bash
# Stops or starts again a cluster that ops/pg-start.sh started in DIR, keeping its data and its
# port: an outage, and the end of one (the outage test uses it).
#
# Usage: ops/pg-ctl.sh DIR stop|start
set -euo pipefail
dir=${1:?usage: ops/pg-ctl.sh DIR stop|start}
action=${2:?usage: ops/pg-ctl.sh DIR stop|start}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if [ "$(id -u)" = 0 ]; then
  as_pg() { su postgres -s /bin/sh -c "$*"; }
else
  as_pg() { sh -c "$*"; }
fi
case "$action" in
  stop) as_pg "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null" ;;
  start)
    opts=$(cat "$dir/opts")
    as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -o \"$opts\" -w -t 60 start >/dev/null" ;;
  *) echo "usage: ops/pg-ctl.sh DIR stop|start" >&2; exit 2 ;;
esac
