#!/usr/bin/env bash
# Prints the path of a schemathesis executable (PyPI, pinned below), installing it into a virtual
# environment in the project's cache if needed. Needs python3 with its venv module. Used by the
# end-to-end API fuzzing suite (tests/tests/e2e/fuzz.rs), which runs it against a real server.
set -euo pipefail
version=4.32.5
cache=${LINKAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/linkage}/schemathesis-$version
if [ ! -x "$cache/bin/schemathesis" ]; then
  echo "schemathesis-install: installing schemathesis $version into $cache" >&2
  rm -rf "$cache"
  python3 -m venv "$cache" >&2 || {
    echo "schemathesis-install: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$cache/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
fi
echo "$cache/bin/schemathesis"
