#!/usr/bin/env bash
# Prints the path of a python3 with fhirpy (PyPI, pinned below) installed, in a virtual
# environment in the project's cache, installing it if needed. Needs python3 with its venv
# module. Used by the FHIR end-to-end test (tests/tests/e2e/fhir.rs), whose client script
# (ops/fhir/client_loop.py) drives the referral loop through a real FHIR client.
set -euo pipefail
version=2.3.1
cache=${LINKAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/linkage}/fhirpy-$version
if [ ! -x "$cache/bin/python3" ] || ! "$cache/bin/python3" -c 'import fhirpy' 2>/dev/null; then
  echo "fhirpy-install: installing fhirpy $version into $cache" >&2
  rm -rf "$cache"
  python3 -m venv "$cache" >&2 || {
    echo "fhirpy-install: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$cache/bin/pip" install --quiet --disable-pip-version-check "fhirpy==$version" >&2
fi
echo "$cache/bin/python3"
