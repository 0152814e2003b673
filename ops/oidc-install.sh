#!/usr/bin/env bash
# Prints the path of the test OpenID provider (ops/oidc/provider.mjs beside an installed
# oidc-provider from npm), installing it into the project's cache if needed. Needs node (18+).
# Used by the single-sign-on tests only; production points Linkage at the agency's own provider.
set -euo pipefail
cd "$(dirname "$0")/.."
version=8.8.1
cache=${LINKAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/linkage}/oidc-provider-$version
if [ ! -d "$cache/node_modules/oidc-provider" ]; then
  command -v npm >/dev/null || { echo "oidc-install: npm (node 18+) is needed" >&2; exit 1; }
  echo "oidc-install: installing oidc-provider $version into $cache" >&2
  mkdir -p "$cache"
  npm install --prefix "$cache" --silent --no-audit --no-fund "oidc-provider@$version" >&2
fi
# The script sits beside node_modules, where node resolves its imports.
cp ops/oidc/provider.mjs "$cache/provider.mjs"
echo "$cache/provider.mjs"
